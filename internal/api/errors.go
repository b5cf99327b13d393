package api

// Errors cross the socket as gRPC statuses carrying a google.rpc.ErrorInfo detail with
// Domain = ErrorDomain and Reason = one of the names below, so that the client maps them back
// to its sentinels exactly (the status code alone is coarser: a timeout and a caller's
// deadline are both DEADLINE_EXCEEDED).
const ErrorDomain = "palisade"

// Reasons.
const (
	ReasonNotFound       = "NOT_FOUND"
	ReasonPermission     = "PERMISSION"
	ReasonTimeout        = "TIMEOUT"
	ReasonTrap           = "TRAP"
	ReasonOutOfMemory    = "OUT_OF_MEMORY"
	ReasonInputTooLarge  = "INPUT_TOO_LARGE"
	ReasonOutputTooLarge = "OUTPUT_TOO_LARGE"
	ReasonBadImage       = "BAD_IMAGE"
	ReasonBadOptions     = "BAD_OPTIONS"
	ReasonUnknownEngine  = "UNKNOWN_ENGINE"
	ReasonNotSupported   = "NOT_SUPPORTED"
	ReasonUnavailable    = "UNAVAILABLE"
	ReasonCanceled       = "CANCELED"
	ReasonInvalid        = "INVALID_ARGUMENT"
	ReasonInternal       = "INTERNAL"

	// Reasons of the key RPCs (docs/keys.md §7).
	ReasonKeyExists      = "KEY_EXISTS"
	ReasonPINRequired    = "PIN_REQUIRED"
	ReasonPINIncorrect   = "PIN_INCORRECT"
	ReasonLocked         = "LOCKED"
	ReasonRefused        = "REFUSED"
	ReasonKeyUnavailable = "KEY_UNAVAILABLE"
)

// MaxImage is the largest PAL image the daemon accepts; MaxMessage is the gRPC message size
// limit both sides set, with room for the rest of a RegisterRequest.
const (
	MaxImage   = 64 << 20
	MaxMessage = MaxImage + 1<<20
	// FlowWindow is the HTTP/2 flow-control window both sides set (static, see api/server).
	FlowWindow = 4 << 20
)
