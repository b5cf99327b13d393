package client

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/palisade-project/palisade/internal/api"
)

// Errors of the daemon, as sentinels to test with errors.Is. Every error a Client method
// returns for a failed RPC is an *Error wrapping one of them.
var (
	ErrNotFound       = errors.New("palisade: no such PAL")
	ErrPermission     = errors.New("palisade: permission denied")
	ErrTimeout        = errors.New("palisade: timed out")
	ErrTrap           = errors.New("palisade: PAL trapped")
	ErrOutOfMemory    = errors.New("palisade: PAL exhausted its memory limit")
	ErrInputTooLarge  = errors.New("palisade: input exceeds the PAL's limit")
	ErrOutputTooLarge = errors.New("palisade: output exceeds the PAL's limit")
	ErrBadImage       = errors.New("palisade: invalid PAL image")
	ErrBadOptions     = errors.New("palisade: invalid registration options")
	ErrUnknownEngine  = errors.New("palisade: unknown engine")
	ErrNotSupported   = errors.New("palisade: not supported by the daemon")
	ErrUnavailable    = errors.New("palisade: daemon unavailable")
	ErrCanceled       = errors.New("palisade: canceled")
	ErrInvalid        = errors.New("palisade: invalid argument")
	ErrInternal       = errors.New("palisade: internal error in the daemon")
)

var byReason = map[string]error{
	api.ReasonNotFound:       ErrNotFound,
	api.ReasonPermission:     ErrPermission,
	api.ReasonTimeout:        ErrTimeout,
	api.ReasonTrap:           ErrTrap,
	api.ReasonOutOfMemory:    ErrOutOfMemory,
	api.ReasonInputTooLarge:  ErrInputTooLarge,
	api.ReasonOutputTooLarge: ErrOutputTooLarge,
	api.ReasonBadImage:       ErrBadImage,
	api.ReasonBadOptions:     ErrBadOptions,
	api.ReasonUnknownEngine:  ErrUnknownEngine,
	api.ReasonNotSupported:   ErrNotSupported,
	api.ReasonUnavailable:    ErrUnavailable,
	api.ReasonCanceled:       ErrCanceled,
	api.ReasonInvalid:        ErrInvalid,
	api.ReasonInternal:       ErrInternal,
	api.ReasonKeyExists:      ErrKeyExists,
	api.ReasonPINRequired:    ErrPINRequired,
	api.ReasonPINIncorrect:   ErrPINIncorrect,
	api.ReasonLocked:         ErrLocked,
	api.ReasonRefused:        ErrRefused,
	api.ReasonKeyUnavailable: ErrKeyUnavailable,
}

// Statuses without a palisade ErrorInfo come from gRPC itself (a broken connection, the
// caller's own deadline).
var byCode = map[codes.Code]error{
	codes.NotFound:          ErrNotFound,
	codes.PermissionDenied:  ErrPermission,
	codes.DeadlineExceeded:  ErrTimeout,
	codes.Canceled:          ErrCanceled,
	codes.Unavailable:       ErrUnavailable,
	codes.InvalidArgument:   ErrInvalid,
	codes.ResourceExhausted: ErrInvalid,
	codes.Unimplemented:     ErrNotSupported,
}

// Error is a failed RPC. Test it with errors.Is against the sentinels above rather than by its
// fields: the sentinel is the contract, Code and Reason are detail for logs.
type Error struct {
	Code     codes.Code // the gRPC status code
	Reason   string     // the daemon's reason ("NOT_FOUND", "TIMEOUT"…), "" if it did not say
	Message  string     // the daemon's explanation, for people
	sentinel error
}

// Error returns the daemon's message, or the sentinel's text when there is none.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.sentinel.Error()
	}
	return e.Message
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.sentinel }

// fromStatus turns a gRPC error into an *Error.
func (c *Client) fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == api.ErrorDomain {
			e.Reason = info.Reason
			e.sentinel = byReason[info.Reason]
		}
	}
	if e.sentinel == nil {
		e.sentinel = byCode[st.Code()]
		if e.sentinel == nil {
			e.sentinel = ErrInternal
		}
		if st.Code() == codes.Unavailable && c != nil {
			e.Message = unreachable(c.path, errors.New(st.Message()))
		}
	}
	return e
}
