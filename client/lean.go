package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/palisade-project/palisade/internal/api"
	"github.com/palisade-project/palisade/internal/lean/wire"
)

// The hot operations (Call, signing) go over palisaded's lean protocol (docs/protocol.md) when
// the daemon serves it, and over gRPC otherwise. The lean protocol serves one request at a
// time per connection, so a Client keeps a pool of connections: concurrent callers each take
// one, and it goes back to the pool after the response.

// LeanSocketPath returns $PALISADE_LEAN_SOCKET, or lean.sock in the directory of grpcSocket
// (where palisaded creates it unless configured otherwise).
func LeanSocketPath(grpcSocket string) string {
	if p := os.Getenv("PALISADE_LEAN_SOCKET"); p != "" {
		return p
	}
	if grpcSocket == "" {
		grpcSocket = SocketPath()
	}
	return filepath.Join(filepath.Dir(grpcSocket), "lean.sock")
}

// maxIdleLean bounds the idle connections a Client keeps.
const maxIdleLean = 64

type leanPool struct {
	path string
	off  atomic.Bool  // UseLean(false)
	down atomic.Int64 // until this time (unix ns), the lean socket is not tried: it was missing
	id   atomic.Uint32

	mu     sync.Mutex
	idle   []*leanConn
	closed bool
}

type leanConn struct {
	c        *net.UnixConn
	buf      []byte // request, then response, frames
	deadline bool   // c has a deadline set
}

func newLeanPool(grpcSocket string) *leanPool { return &leanPool{path: LeanSocketPath(grpcSocket)} }

// UseLean turns the lean protocol on (the default) or off for this Client's calls and
// signatures; off, they go over gRPC. For comparisons and diagnosis.
func (c *Client) UseLean(on bool) {
	if c.lean != nil {
		c.lean.off.Store(!on)
	}
}

func (p *leanPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.idle {
		c.c.Close()
	}
	p.idle = nil
}

// errNoLean means the lean socket is not there: the caller falls back to gRPC.
var errNoLean = errors.New("palisade: no lean socket")

// leanRetry is how long a Client uses gRPC only, after finding no lean socket: the daemon may
// not serve one, or be restarting (gRPC calls that wait for it then do).
const leanRetry = time.Second

// usable reports whether to try the lean protocol now.
func (p *leanPool) usable() bool {
	return p != nil && !p.off.Load() && time.Now().UnixNano() >= p.down.Load()
}

func (p *leanPool) get(ctx context.Context) (*leanConn, bool, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, true, nil
	}
	p.mu.Unlock()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", p.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, false, errNoLean
		}
		return nil, false, &Error{Code: codes.Unavailable, Reason: api.ReasonUnavailable, Message: unreachable(p.path, err), sentinel: ErrUnavailable}
	}
	return &leanConn{c: nc.(*net.UnixConn)}, false, nil
}

func (p *leanPool) put(c *leanConn) {
	if cap(c.buf) > 64<<10 {
		c.buf = nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= maxIdleLean {
		c.c.Close()
		return
	}
	p.idle = append(p.idle, c)
}

// roundTrip sends one request and returns the response's code and body (which aliases a
// buffer valid until the connection is reused: callers copy what they keep).
//
// A request that fails to be written on a pooled connection is sent again once on a new
// connection: the daemon closed the idle one (a restart), and never saw the request. Once a
// request is written, a failure is reported, never retried: the daemon may have done it.
func (p *leanPool) roundTrip(ctx context.Context, op wire.Op, body func([]byte) []byte) (wire.Code, []byte, *leanConn, error) {
	for attempt := 0; ; attempt++ {
		c, pooled, err := p.get(ctx)
		if err != nil {
			return 0, nil, nil, err
		}
		id := p.id.Add(1)
		b := append(c.buf[:0], make([]byte, wire.HeaderSize)...)
		b = body(b)
		wire.PutHeader(b, wire.Header{Version: wire.Version, Op: op, ID: id, Len: uint32(len(b) - wire.HeaderSize)})
		c.buf = b
		stop := c.watch(ctx)
		if _, err := c.c.Write(b); err != nil {
			stop()
			c.c.Close()
			if pooled && attempt == 0 && ctx.Err() == nil {
				continue
			}
			return 0, nil, nil, p.ioError(ctx, err)
		}
		code, resp, err := c.read(op, id)
		stop()
		if err != nil {
			c.c.Close()
			return 0, nil, nil, p.ioError(ctx, err)
		}
		return code, resp, c, nil
	}
}

// watch makes the connection's I/O fail when ctx ends; the returned function stops that.
func (c *leanConn) watch(ctx context.Context) func() {
	if d, ok := ctx.Deadline(); ok {
		c.c.SetDeadline(d)
		c.deadline = true
	} else if c.deadline {
		c.c.SetDeadline(time.Time{})
		c.deadline = false
	}
	if ctx.Done() == nil {
		return func() {}
	}
	stop := context.AfterFunc(ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	c.deadline = true // the AfterFunc may have run
	return func() { stop() }
}

// read reads the response to request (op, id). A small response comes in one read(2): the
// header and the body are read together into c.buf.
func (c *leanConn) read(op wire.Op, id uint32) (wire.Code, []byte, error) {
	if cap(c.buf) < 4096 {
		c.buf = make([]byte, 4096)
	}
	b := c.buf[:cap(c.buf)]
	n, err := io.ReadAtLeast(c.c, b, wire.HeaderSize)
	if err != nil {
		return 0, nil, err
	}
	h, err := wire.ParseHeader(b[:wire.HeaderSize])
	if err != nil {
		return 0, nil, err
	}
	if h.Op != op|wire.RespBit && !(h.ID == 0 && h.Code == wire.CodeBusy) {
		return 0, nil, fmt.Errorf("%w: response op %#02x to request op %#02x", wire.ErrMalformed, uint8(h.Op), uint8(op))
	}
	if h.ID != id && h.ID != 0 {
		return 0, nil, fmt.Errorf("%w: response id %d to request id %d", wire.ErrMalformed, h.ID, id)
	}
	if n > wire.HeaderSize+int(h.Len) {
		// One request at a time: nothing may follow the response.
		return 0, nil, fmt.Errorf("%w: %d bytes after the response", wire.ErrMalformed, n-wire.HeaderSize-int(h.Len))
	}
	if total := wire.HeaderSize + int(h.Len); total > len(b) {
		nb := make([]byte, total)
		copy(nb, b[:n])
		b, c.buf = nb, nb
	}
	if _, err := io.ReadFull(c.c, b[n:wire.HeaderSize+int(h.Len)]); err != nil {
		return 0, nil, err
	}
	return h.Code, b[wire.HeaderSize : wire.HeaderSize+int(h.Len)], nil
}

func (p *leanPool) ioError(ctx context.Context, err error) error {
	_, hasDeadline := ctx.Deadline()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded),
		// The socket's deadline is ctx's: it may expire a moment before ctx's own timer.
		hasDeadline && ctx.Err() == nil && errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Code: codes.DeadlineExceeded, Message: context.DeadlineExceeded.Error(), sentinel: ErrTimeout}
	case ctx.Err() != nil:
		return &Error{Code: codes.Canceled, Message: ctx.Err().Error(), sentinel: ErrCanceled}
	case errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrTooLarge):
		return &Error{Code: codes.Internal, Reason: api.ReasonInternal, Message: "palisade: lean protocol: " + err.Error(), sentinel: ErrInternal}
	}
	return &Error{Code: codes.Unavailable, Reason: api.ReasonUnavailable,
		Message: fmt.Sprintf("palisade: lost the connection to palisaded at %s during the request (it may have been done): %v", p.path, err), sentinel: ErrUnavailable}
}

// leanErrors maps a lean code to the gRPC API's code and reason, so that a Client's errors
// are the same whichever protocol carried the call.
var leanErrors = map[wire.Code]struct {
	code   codes.Code
	reason string
}{
	wire.CodeMalformed:      {codes.Internal, api.ReasonInternal},
	wire.CodeVersion:        {codes.Internal, api.ReasonInternal},
	wire.CodeUnknownOp:      {codes.Unimplemented, api.ReasonNotSupported},
	wire.CodeTooLarge:       {codes.InvalidArgument, api.ReasonInputTooLarge},
	wire.CodeBusy:           {codes.Unavailable, api.ReasonUnavailable},
	wire.CodePermission:     {codes.PermissionDenied, api.ReasonPermission},
	wire.CodeNotFound:       {codes.NotFound, api.ReasonNotFound},
	wire.CodeTimeout:        {codes.DeadlineExceeded, api.ReasonTimeout},
	wire.CodeTrap:           {codes.Aborted, api.ReasonTrap},
	wire.CodeOutOfMemory:    {codes.ResourceExhausted, api.ReasonOutOfMemory},
	wire.CodeInputTooLarge:  {codes.InvalidArgument, api.ReasonInputTooLarge},
	wire.CodeOutputTooLarge: {codes.ResourceExhausted, api.ReasonOutputTooLarge},
	wire.CodeUnavailable:    {codes.Unavailable, api.ReasonUnavailable},
	wire.CodeCanceled:       {codes.Canceled, api.ReasonCanceled},
	wire.CodeInvalid:        {codes.InvalidArgument, api.ReasonInvalid},
	wire.CodeInternal:       {codes.Internal, api.ReasonInternal},
	wire.CodeNotSupported:   {codes.FailedPrecondition, api.ReasonNotSupported},
	wire.CodeKeyNotFound:    {codes.NotFound, api.ReasonNotFound},
	wire.CodePINRequired:    {codes.Unauthenticated, api.ReasonPINRequired},
	wire.CodePINIncorrect:   {codes.Unauthenticated, api.ReasonPINIncorrect},
	wire.CodeLocked:         {codes.PermissionDenied, api.ReasonLocked},
	wire.CodeRefused:        {codes.PermissionDenied, api.ReasonRefused},
	wire.CodeKeyUnavailable: {codes.FailedPrecondition, api.ReasonKeyUnavailable},
	wire.CodeNoKeys:         {codes.FailedPrecondition, api.ReasonNotSupported},
}

// leanError turns an error response into an *Error.
func leanError(code wire.Code, body []byte) error {
	msg := "palisade: " + code.String()
	if m, err := wire.DecodeErrorResponse(body); err == nil && m.Message != "" {
		msg = m.Message
	}
	m, ok := leanErrors[code]
	if !ok {
		m.code, m.reason = codes.Internal, api.ReasonInternal
	}
	return &Error{Code: m.code, Reason: m.reason, Message: msg, sentinel: byReason[m.reason]}
}

// parseHandle reads a "pal-…" handle; ok is false for anything else, which the caller sends
// over gRPC to get the daemon's own answer.
func parseHandle(h string) (uint64, bool) {
	rest, ok := strings.CutPrefix(h, "pal-")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 16, 64)
	return v, err == nil
}

// leanCall is Call over the lean protocol; ok is false when the call must go over gRPC
// instead (no lean socket, a handle or an input the lean protocol does not carry).
func (c *Client) leanCall(ctx context.Context, handle string, input []byte) (res Result, ok bool, err error) {
	p := c.lean
	if !p.usable() || len(input) > wire.MaxBody-64 {
		return Result{}, false, nil
	}
	h, ok := parseHandle(handle)
	if !ok {
		return Result{}, false, nil
	}
	code, body, lc, err := p.roundTrip(ctx, wire.OpCall, wire.CallRequest{Handle: h, Input: input}.Append)
	if errors.Is(err, errNoLean) {
		p.down.Store(time.Now().Add(leanRetry).UnixNano())
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, true, err
	}
	if code != wire.CodeOK {
		err := leanError(code, body)
		p.put(lc)
		return Result{}, true, err
	}
	r, err := wire.DecodeCallResponse(body)
	if err != nil {
		lc.c.Close() // the stream is not in a known state
		return Result{}, true, p.ioError(ctx, err)
	}
	out := append([]byte(nil), r.Output...)
	p.put(lc)
	return Result{Status: r.Status, Output: out}, true, nil
}
