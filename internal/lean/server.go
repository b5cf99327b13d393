// Package lean serves palisaded's lean protocol (docs/protocol.md): framed binary requests on a
// Unix socket beside the gRPC one, for the hot operations of applications — call a PAL, sign
// with a named key, read a key's public part, find keys. It exists for latency: one request is
// one write and one read on each side, handled on the connection's own goroutine.
//
// It adds no access rules of its own. A call goes through the gRPC service's CallAs (ownership,
// refusal audit, metrics); key operations go through keys.Signer, which checks and audits.
// The caller is the connection's peer credentials (server.PeerOf), read once at accept.
package lean

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/palisade-project/palisade/internal/api"
	"github.com/palisade-project/palisade/internal/api/server"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/keys"
	"github.com/palisade-project/palisade/internal/lean/wire"
	"github.com/palisade-project/palisade/internal/visor"
)

// Config configures a Server.
type Config struct {
	API  *server.Server // calls go through its CallAs
	Keys keys.Signer    // nil: the daemon serves no keys, key ops answer CodeNoKeys
	// MaxConns bounds open connections; one more is answered CodeBusy and closed. Default 4096.
	MaxConns int
	// FrameTimeout bounds the time from a frame's first byte to its last, and the time to
	// write a response larger than smallWrite: a client that trickles bytes is cut off.
	// Default 10 s.
	FrameTimeout time.Duration
	// IdleTimeout closes a connection idle between frames for this long; 0 keeps it open.
	IdleTimeout time.Duration
	Logger      *slog.Logger
	Version     string // the daemon's, sent in hello
}

// Server serves the lean protocol. Create it with New, then Serve.
type Server struct {
	cfg  Config
	log  *slog.Logger
	base context.Context // canceled when Shutdown gives up waiting
	stop context.CancelFunc

	mu      sync.Mutex
	ls      map[net.Listener]bool
	conns   map[*conn]bool
	closing bool
	closed  atomic.Bool // closing, for the connections' loops without the lock
	wg      sync.WaitGroup

	watchOnce sync.Once

	m metrics
}

// New returns a server.
func New(cfg Config) (*Server, error) {
	if cfg.API == nil {
		return nil, errors.New("lean: no API server")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, log: cfg.Logger, base: ctx, stop: cancel, ls: map[net.Listener]bool{}, conns: map[*conn]bool{}}, nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("lean: server closed")

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l *net.UnixListener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.ls[l] = true
	s.watchOnce.Do(func() { go s.watchCalls() })
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) ||
				isTemporary(err) {
				// EMFILE and the like: back off instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("lean: accept", "err", err, "retry_in", delay.String())
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.accept(c)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// accept starts serving c, or refuses it when the server is full or closing.
func (s *Server) accept(uc *net.UnixConn) {
	c := &conn{s: s, c: uc}
	s.mu.Lock()
	if s.closing || len(s.conns) >= s.cfg.MaxConns {
		closing := s.closing
		s.mu.Unlock()
		s.m.refused.Add(1)
		if closing {
			uc.Close()
			return
		}
		// Answer so the client knows why, without waiting for it: the socket buffer takes
		// the frame, and a client that never reads cannot hold a goroutine.
		uc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		uc.Write(errorFrame(nil, 0, 0, wire.CodeBusy, fmt.Sprintf("too many connections (max %d)", s.cfg.MaxConns)))
		uc.Close()
		return
	}
	s.conns[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
	s.m.accepted.Add(1)
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		uc.Close()
	}()
}

// Shutdown stops accepting, lets each connection finish the request it is serving, and closes
// the connections. If ctx ends first it cancels the requests in flight (their PAL calls fail
// with CodeCanceled), closes everything and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.closed.Store(true)
	for l := range s.ls {
		l.Close()
	}
	for c := range s.conns {
		c.interrupt()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.stop()
		return nil
	case <-ctx.Done():
		s.stop()
		s.mu.Lock()
		for c := range s.conns {
			c.c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// conn is one client connection. Requests on it are served one at a time, in order.
type conn struct {
	s      *Server
	c      *net.UnixConn
	peer   server.Peer
	caller keys.Caller
	busy   atomic.Bool // serving a request: Shutdown lets it finish

	wmu        sync.Mutex // guards the call in flight, for watchCalls
	callStart  time.Time  // zero: no call in flight
	cancelCall context.CancelFunc
	watcher    *watch
}

// interrupt makes an idle connection's read return now; a busy one notices the shutdown
// after writing its response.
func (c *conn) interrupt() {
	if !c.busy.Load() {
		c.c.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *conn) serve() {
	p, err := server.PeerOf(c.c)
	if err != nil {
		c.s.log.Error("lean: peer credentials", "err", err)
		return
	}
	c.peer = p
	c.caller = keys.Caller{UID: p.UID, GID: p.GID, Groups: p.Groups, PID: p.PID}

	// A small buffer: an idle connection costs little (1000 idle clients hold 4 MiB), and a
	// request that fits is read in one system call.
	br := bufio.NewReaderSize(c.c, 4096)
	var (
		hdr      [wire.HeaderSize]byte
		body     []byte
		out      []byte
		deadline bool // a read deadline is set
	)
	for {
		// Idle: wait for the first byte of the next frame as long as IdleTimeout allows.
		// Deadlines are set only when they change: each one is a timer of the runtime.
		if c.s.cfg.IdleTimeout > 0 {
			c.c.SetReadDeadline(time.Now().Add(c.s.cfg.IdleTimeout))
			deadline = true
		} else if deadline {
			c.c.SetReadDeadline(time.Time{})
			deadline = false
		}
		// After the deadline is reset: Shutdown's interrupt is not undone.
		if c.s.closed.Load() {
			return
		}
		if _, err := br.Peek(1); err != nil {
			c.readFailed(err, "idle")
			return
		}
		c.busy.Store(true)
		// From the first byte on, the whole frame must arrive within FrameTimeout, unless it
		// already has (the usual case: a small request comes in one read).
		if !frameBuffered(br) {
			c.c.SetReadDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
			deadline = true
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			c.readFailed(err, "header")
			return
		}
		h, herr := wire.ParseHeader(hdr[:])
		if herr != nil {
			c.protocolError(h, herr)
			return
		}
		if h.Op&wire.RespBit != 0 || h.Code != 0 {
			c.protocolError(h, fmt.Errorf("%w: a request has op < 0x80 and code 0 (op %#02x, code %d)", wire.ErrMalformed, uint8(h.Op), h.Code))
			return
		}
		if cap(body) < int(h.Len) {
			body = make([]byte, h.Len)
		}
		body = body[:h.Len]
		if _, err := io.ReadFull(br, body); err != nil {
			c.readFailed(err, "body")
			return
		}
		out, err = c.handle(h, body, out[:0])
		if cap(body) > 64<<10 {
			body = nil // do not keep a large buffer for an idle connection
		}
		if err != nil { // a malformed body: answered, then the connection is closed
			c.write(out)
			return
		}
		if !c.write(out) {
			return
		}
		if cap(out) > 64<<10 {
			out = nil
		}
		c.busy.Store(false)
	}
}

// frameBuffered reports whether br holds a whole frame (whose header announces a length the
// decoder accepts).
func frameBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < wire.HeaderSize {
		return false
	}
	b, _ := br.Peek(wire.HeaderSize) // buffered: no I/O
	h, err := wire.ParseHeader(b)
	return err == nil && n >= wire.HeaderSize+int(h.Len)
}

// smallWrite is the size below which a response is written without a deadline: it fits in the
// socket's buffer, so the write does not wait for the client unless the client sent requests
// without reading their answers — and such a client holds its connection's goroutine no longer
// than an idle one does (Shutdown's deadline closes it). A deadline is a runtime timer per
// request, which costs a wakeup of the network poller on these machines.
const smallWrite = 64 << 10

func (c *conn) write(frame []byte) bool {
	if len(frame) > smallWrite {
		c.c.SetWriteDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
		defer c.c.SetWriteDeadline(time.Time{})
	}
	if _, err := c.c.Write(frame); err != nil {
		c.s.log.Debug("lean: write", "uid", c.peer.UID, "pid", c.peer.PID, "err", err)
		return false
	}
	return true
}

func (c *conn) readFailed(err error, where string) {
	switch {
	case errors.Is(err, io.EOF) && where == "idle":
		return // the client closed between frames: normal
	case errors.Is(err, os.ErrDeadlineExceeded) && where == "idle":
		if !c.s.closed.Load() {
			c.s.m.idleClosed.Add(1)
		}
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.s.m.slowClosed.Add(1)
		c.s.log.Warn("lean: frame not received in time; connection closed", "uid", c.peer.UID, "pid", c.peer.PID,
			"part", where, "frame_timeout", c.s.cfg.FrameTimeout.String())
	default:
		c.s.m.truncated.Add(1)
		c.s.log.Debug("lean: read", "uid", c.peer.UID, "pid", c.peer.PID, "part", where, "err", err)
	}
}

// protocolError answers a frame that cannot be served and closes the connection: after a
// bad header the stream cannot be resynchronised.
func (c *conn) protocolError(h wire.Header, err error) {
	code := wire.CodeMalformed
	switch {
	case errors.Is(err, wire.ErrVersion):
		code = wire.CodeVersion
	case errors.Is(err, wire.ErrTooLarge):
		code = wire.CodeTooLarge
	}
	c.s.m.protocolErrors.Add(1)
	c.s.log.Warn("lean: protocol error; connection closed", "uid", c.peer.UID, "pid", c.peer.PID, "err", err)
	c.write(errorFrame(nil, h.Op, h.ID, code, err.Error()))
}

// errorFrame appends a response frame with code and msg to b.
func errorFrame(b []byte, op wire.Op, id uint32, code wire.Code, msg string) []byte {
	b = append(b, make([]byte, wire.HeaderSize)...)
	b = wire.ErrorResponse{Message: msg}.Append(b)
	wire.PutHeader(b, wire.Header{Version: wire.Version, Op: op | wire.RespBit, Code: code, ID: id, Len: uint32(len(b) - wire.HeaderSize)})
	return b
}

// handle serves one request and appends its response frame to out. It returns an error only
// for a body that does not decode, after which the connection is closed.
func (c *conn) handle(h wire.Header, body []byte, out []byte) ([]byte, error) {
	start := time.Now()
	out = append(out, make([]byte, wire.HeaderSize)...)
	var (
		code    wire.Code
		msg     string
		derr    error // decode error
		payload []byte
	)
	ctx := c.s.base
	switch h.Op {
	case wire.OpHello:
		if len(body) != 0 {
			derr = fmt.Errorf("%w: hello has an empty body", wire.ErrMalformed)
			break
		}
		payload = wire.HelloResponse{
			MinVersion: wire.Version, MaxVersion: wire.Version, MaxBody: wire.MaxBody,
			UID: c.peer.UID, GID: c.peer.GID, Daemon: c.s.cfg.Version,
		}.Append(out)
	case wire.OpCall:
		req, err := wire.DecodeCallRequest(body)
		if err != nil {
			derr = err
			break
		}
		res, err := c.call(ctx, visor.Handle(req.Handle), req.Input)
		if err != nil {
			code, msg = callCode(err), err.Error()
			break
		}
		payload = wire.CallResponse{Status: res.Status, Output: res.Output}.Append(out)
	case wire.OpSign, wire.OpKeyInfo, wire.OpFind:
		if c.s.cfg.Keys == nil {
			code, msg = wire.CodeNoKeys, "this palisaded serves no keys"
			break
		}
		payload, code, msg, derr = c.keyOp(ctx, h.Op, body, out)
	case wire.OpKeyCreate:
		payload, code, msg, derr = c.keyCreate(ctx, body, out)
	default:
		code, msg = wire.CodeUnknownOp, fmt.Sprintf("unknown op %#02x (this daemon speaks protocol version %d: ops 0x01-0x06)", uint8(h.Op), wire.Version)
	}
	if derr != nil {
		code, msg = wire.CodeMalformed, derr.Error()
		c.s.m.protocolErrors.Add(1)
		c.s.log.Warn("lean: malformed request; connection closed", "uid", c.peer.UID, "pid", c.peer.PID, "op", h.Op.String(), "err", derr)
	}
	if code != wire.CodeOK {
		payload = wire.ErrorResponse{Message: msg}.Append(out)
	}
	wire.PutHeader(payload, wire.Header{Version: wire.Version, Op: h.Op | wire.RespBit, Code: code, ID: h.ID, Len: uint32(len(payload) - wire.HeaderSize)})
	c.s.m.observe(h.Op, code, time.Since(start))
	return payload, derr
}

func (c *conn) keyOp(ctx context.Context, op wire.Op, body, out []byte) (payload []byte, code wire.Code, msg string, derr error) {
	k := c.s.cfg.Keys
	switch op {
	case wire.OpSign:
		req, err := wire.DecodeSignRequest(body)
		if err != nil {
			return nil, 0, "", err
		}
		sig, err := k.Sign(ctx, c.caller, req.Name, keys.SignRequest{Scheme: req.Scheme, Hash: req.Hash, Digest: req.Digest, PIN: req.PIN})
		if err != nil {
			return nil, keyCode(err), err.Error(), nil
		}
		return wire.SignResponse{Signature: sig}.Append(out), 0, "", nil
	case wire.OpKeyInfo:
		req, err := wire.DecodeNameRequest(body)
		if err != nil {
			return nil, 0, "", err
		}
		info, err := k.Find(ctx, c.caller, req.Name)
		if err != nil {
			return nil, keyCode(err), err.Error(), nil
		}
		var flags uint32
		if info.HasPIN {
			flags |= wire.KeyHasPIN
		}
		if info.Imported {
			flags |= wire.KeyImported
		}
		chain := info.CertChain
		if len(chain) > wire.MaxCerts {
			chain = chain[:wire.MaxCerts]
		}
		return wire.KeyInfoResponse{Alg: string(info.Alg), Flags: flags, PublicDER: info.PublicDER, CertChain: chain}.Append(out), 0, "", nil
	default: // wire.OpFind
		req, err := wire.DecodeNameRequest(body)
		if err != nil {
			return nil, 0, "", err
		}
		infos, err := k.List(ctx, c.caller)
		if err != nil {
			return nil, keyCode(err), err.Error(), nil
		}
		var resp wire.FindResponse
		for _, i := range infos {
			if len(i.Name) >= len(req.Name) && i.Name[:len(req.Name)] == req.Name && len(resp.Keys) < wire.MaxFound {
				resp.Keys = append(resp.Keys, wire.FoundKey{Name: i.Name, Alg: string(i.Alg)})
			}
		}
		return resp.Append(out), 0, "", nil
	}
}

// watchAfter is how long a call runs before its connection is watched for the client going
// away; watchEvery is how often one goroutine of the server looks for such calls. A timer per
// call would cost a wakeup of the network poller on these machines (a third of a null call);
// one ticker for the server costs nothing per call. A call longer than watchAfter is canceled
// as soon as its client disconnects, as over gRPC.
const (
	watchAfter = 200 * time.Millisecond
	watchEvery = 100 * time.Millisecond
)

// watch is the watcher of one call's connection.
type watch struct{ stop, done chan struct{} }

// call runs a PAL call for the connection's peer, canceled if the client disconnects.
func (c *conn) call(ctx context.Context, h visor.Handle, input []byte) (engine.Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.wmu.Lock()
	c.callStart, c.cancelCall = time.Now(), cancel
	c.wmu.Unlock()
	res, err := c.s.cfg.API.CallAs(ctx, c.peer, h, input)
	c.wmu.Lock()
	w := c.watcher
	c.callStart, c.cancelCall, c.watcher = time.Time{}, nil, nil
	c.wmu.Unlock()
	if w != nil {
		// End the watcher's wait on the socket, and let it finish before the connection
		// reads again.
		close(w.stop)
		c.c.SetReadDeadline(time.Unix(1, 0))
		<-w.done
		c.c.SetReadDeadline(time.Time{})
	}
	return res, err
}

// watchCalls starts a watcher for each call that has run longer than watchAfter, until the
// server stops.
func (s *Server) watchCalls() {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-s.base.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			for c := range s.conns {
				c.startWatch(now)
			}
			s.mu.Unlock()
		}
	}
}

func (c *conn) startWatch(now time.Time) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.callStart.IsZero() || c.watcher != nil || now.Sub(c.callStart) < watchAfter {
		return
	}
	w := &watch{stop: make(chan struct{}), done: make(chan struct{})}
	c.watcher = w
	cancel := c.cancelCall
	go func() {
		defer close(w.done)
		if c.peerGone(w.stop) {
			c.s.m.disconnected.Add(1)
			cancel()
		}
	}()
}

// peerGone waits until the client closes its end of the connection (true), sends something,
// or stop is closed (false). It peeks: a byte that arrives stays for the next frame.
func (c *conn) peerGone(stop chan struct{}) bool {
	raw, err := c.c.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	var b [1]byte
	raw.Read(func(fd uintptr) bool {
		select {
		case <-stop:
			return true
		default:
		}
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			return false // wait for readability
		}
		gone = n == 0 || err != nil
		return true
	})
	return gone
}

// callCode maps an error of CallAs to its code through the gRPC API's reasons, so both
// protocols classify alike.
func callCode(err error) wire.Code {
	switch server.Reason(err) {
	case api.ReasonNotFound:
		return wire.CodeNotFound
	case api.ReasonPermission:
		return wire.CodePermission
	case api.ReasonTimeout:
		return wire.CodeTimeout
	case api.ReasonTrap:
		return wire.CodeTrap
	case api.ReasonOutOfMemory:
		return wire.CodeOutOfMemory
	case api.ReasonInputTooLarge:
		return wire.CodeInputTooLarge
	case api.ReasonOutputTooLarge:
		return wire.CodeOutputTooLarge
	case api.ReasonUnavailable:
		return wire.CodeUnavailable
	case api.ReasonCanceled:
		return wire.CodeCanceled
	case api.ReasonInvalid, api.ReasonBadOptions, api.ReasonBadImage, api.ReasonUnknownEngine:
		return wire.CodeInvalid
	case api.ReasonNotSupported:
		return wire.CodeNotSupported
	}
	return wire.CodeInternal
}

// keyCode maps an error of keys.Signer to its code.
func keyCode(err error) wire.Code {
	for _, m := range []struct {
		err  error
		code wire.Code
	}{
		{keys.ErrNotFound, wire.CodeKeyNotFound},
		{keys.ErrDenied, wire.CodePermission},
		{keys.ErrPINRequired, wire.CodePINRequired},
		{keys.ErrPINIncorrect, wire.CodePINIncorrect},
		{keys.ErrLocked, wire.CodeLocked},
		{keys.ErrBadRequest, wire.CodeInvalid},
		{keys.ErrRefused, wire.CodeRefused},
		{keys.ErrUnavailable, wire.CodeKeyUnavailable},
		{context.Canceled, wire.CodeCanceled},
		{context.DeadlineExceeded, wire.CodeTimeout},
	} {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return callCode(err) // a PAL-level failure of the signing PAL
}
