package lean_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/palisade-project/palisade/internal/api"
	"github.com/palisade-project/palisade/internal/api/server"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/lean"
	"github.com/palisade-project/palisade/internal/lean/wire"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
)

// fixture is an in-process daemon: a real visor with the wasm engine, the gRPC API server (for
// its CallAs) and a lean server on a Unix socket. Calls of registered PALs, and keys, are
// tested against a real palisaded in cmd/palisaded (lean_test.go).
type fixture struct {
	sock   string
	api    *server.Server
	lean   *lean.Server
	served chan error
}

func start(t *testing.T, cfg lean.Config) *fixture {
	t.Helper()
	dir := t.TempDir()
	root, err := none.Open(filepath.Join(dir, "rot"), utpm.Digest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	eng, err := wasm.New()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	v, err := visor.New(visor.Config{Root: root, Engines: []engine.Engine{eng}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close(context.Background()) })
	apiSrv, err := server.New(server.Config{Visor: v, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cfg.API, cfg.Logger = apiSrv, log
	ls, err := lean.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{sock: filepath.Join(dir, "lean.sock"), api: apiSrv, lean: ls, served: make(chan error, 1)}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	go func() { f.served <- ls.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ls.Shutdown(ctx)
	})
	return f
}

func (f *fixture) dial(t *testing.T) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: f.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func frame(version uint8, op wire.Op, code uint16, id uint32, body []byte) []byte {
	b := make([]byte, wire.HeaderSize, wire.HeaderSize+len(body))
	b[0], b[1] = version, byte(op)
	binary.LittleEndian.PutUint16(b[2:], code)
	binary.LittleEndian.PutUint32(b[4:], id)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(body)))
	return append(b, body...)
}

// readResponse reads one response, or returns io.EOF-like errors.
func readResponse(c net.Conn) (wire.Header, []byte, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hb [wire.HeaderSize]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return wire.Header{}, nil, err
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil {
		return h, nil, err
	}
	body := make([]byte, h.Len)
	_, err = io.ReadFull(c, body)
	return h, body, err
}

func errMessage(t *testing.T, body []byte) string {
	m, err := wire.DecodeErrorResponse(body)
	if err != nil {
		t.Fatalf("error body: %v", err)
	}
	return m.Message
}

// closed reports whether the daemon closed c (EOF within a second).
func closed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	_, err := c.Read(b[:])
	return errors.Is(err, io.EOF)
}

func TestHostileFrames(t *testing.T) {
	f := start(t, lean.Config{FrameTimeout: time.Second})
	huge := make([]byte, wire.HeaderSize)
	copy(huge, frame(1, wire.OpCall, 0, 9, nil))
	binary.LittleEndian.PutUint32(huge[8:], 0xffffffff)
	for _, tc := range []struct {
		name      string
		send      []byte
		code      wire.Code // expected response code; 0xffff: no response
		rule      string
		keepsOpen bool
	}{
		{"wrong version", frame(7, wire.OpHello, 0, 1, nil), wire.CodeVersion, "version 7 (this side speaks 1)", false},
		{"huge length", huge, wire.CodeTooLarge, "body of 4294967295 bytes (max 4194304)", false},
		{"response op", frame(1, wire.OpHello|wire.RespBit, 0, 1, nil), wire.CodeMalformed, "a request has op < 0x80 and code 0", false},
		{"reserved code set", frame(1, wire.OpHello, 3, 1, nil), wire.CodeMalformed, "a request has op < 0x80 and code 0", false},
		{"unknown op", frame(1, 0x42, 0, 1, nil), wire.CodeUnknownOp, "unknown op 0x42", true},
		{"hello with a body", frame(1, wire.OpHello, 0, 1, []byte{0}), wire.CodeMalformed, "hello has an empty body", false},
		{"call body truncated", frame(1, wire.OpCall, 0, 1, []byte{1, 2, 3}), wire.CodeMalformed, "handle needs 8 bytes", false},
		{"call input length beyond the body", frame(1, wire.OpCall, 0, 1, append(make([]byte, 8), 0xff, 0, 0, 0)), wire.CodeMalformed, "input needs 255 bytes, 0 left", false},
		{"call of a PAL not registered through the API", frame(1, wire.OpCall, 0, 1, wire.CallRequest{Handle: 1}.Append(nil)), wire.CodeNotFound, "pal-0000000000000001", true},
		{"sign without a key service", frame(1, wire.OpSign, 0, 1, wire.SignRequest{Name: "k", Digest: []byte{1}}.Append(nil)), wire.CodeNoKeys, "serves no keys", true},
		{"truncated header, then close", frame(1, wire.OpHello, 0, 1, nil)[:5], 0xffff, "", false},
		{"truncated body, then close", frame(1, wire.OpCall, 0, 1, wire.CallRequest{Handle: 1}.Append(nil))[:15], 0xffff, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.code == 0xffff {
				c.CloseWrite()
				if h, _, err := readResponse(c); !errors.Is(err, io.EOF) {
					t.Fatalf("got response %+v, err %v; want the connection closed without one", h, err)
				}
				return
			}
			h, body, err := readResponse(c)
			if err != nil {
				t.Fatal(err)
			}
			if h.Code != tc.code || !strings.Contains(errMessage(t, body), tc.rule) {
				t.Fatalf("response %v %q, want %v naming %q", h.Code, errMessage(t, body), tc.code, tc.rule)
			}
			if got := !closed(c); got != tc.keepsOpen {
				t.Fatalf("connection open after the response: %v, want %v", got, tc.keepsOpen)
			}
		})
	}
}

// TestSlowClient: a client that sends one byte a second is cut off after FrameTimeout, and
// meanwhile others are served.
func TestSlowClient(t *testing.T) {
	f := start(t, lean.Config{FrameTimeout: 1500 * time.Millisecond})
	slow := f.dial(t)
	req := frame(1, wire.OpHello, 0, 1, nil)
	start := time.Now()
	cut := make(chan time.Duration, 1)
	go func() {
		for _, b := range req {
			if _, err := slow.Write([]byte{b}); err != nil {
				cut <- time.Since(start)
				return
			}
			time.Sleep(time.Second)
		}
		cut <- 0
	}()
	// Another client is served while the slow one trickles.
	fast := f.dial(t)
	fast.Write(frame(1, wire.OpHello, 0, 2, nil))
	if h, _, err := readResponse(fast); err != nil || h.Code != wire.CodeOK {
		t.Fatalf("fast client: %+v %v", h, err)
	}
	if !closed(slow) {
		// closed waits 2 s; the daemon cuts at 1.5 s after the first byte.
		if !closed(slow) {
			t.Fatal("slow client still connected")
		}
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Fatalf("slow client cut after %v (frame timeout 1.5s)", el)
	}
	var m bytes.Buffer
	f.lean.WriteMetrics(&m)
	if !strings.Contains(m.String(), `palisade_lean_connections_total{outcome="closed_slow"} 1`) {
		t.Fatalf("metrics do not count the slow client:\n%s", m.String())
	}
}

// TestIdleConnections: 1,000 idle connections are held, a request on any of them is served,
// and one more beyond MaxConns is refused with CodeBusy.
func TestIdleConnections(t *testing.T) {
	const n = 1000
	f := start(t, lean.Config{MaxConns: n})
	conns := make([]*net.UnixConn, n)
	for i := range conns {
		conns[i] = f.dial(t)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		conns[i].Write(frame(1, wire.OpHello, 0, uint32(i), nil))
		h, body, err := readResponse(conns[i])
		if err != nil || h.Code != wire.CodeOK || h.ID != uint32(i) {
			t.Fatalf("conn %d: %+v %v", i, h, err)
		}
		if _, err := wire.DecodeHelloResponse(body); err != nil {
			t.Fatal(err)
		}
	}
	extra := f.dial(t)
	h, body, err := readResponse(extra)
	if err != nil || h.Code != wire.CodeBusy || !strings.Contains(errMessage(t, body), "too many connections (max 1000)") {
		t.Fatalf("connection %d: %+v %v", n+1, h, err)
	}
	// Closing one makes room.
	conns[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := f.dial(t)
		c.Write(frame(1, wire.OpHello, 0, 1, nil))
		h, _, err := readResponse(c)
		if err == nil && h.Code == wire.CodeOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after closing a connection: %+v %v", h, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShutdownIdle: Shutdown closes idle connections at once and Serve returns.
func TestShutdownIdle(t *testing.T) {
	f := start(t, lean.Config{})
	c := f.dial(t)
	c.Write(frame(1, wire.OpHello, 0, 1, nil))
	if _, _, err := readResponse(c); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := f.lean.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an idle connection: %v", err)
	}
	if err := <-f.served; !errors.Is(err, lean.ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
	if !closed(c) {
		t.Fatal("idle connection still open after Shutdown")
	}
}

// register registers cmd/palisaded's test PAL (built with clang) through the API server, as
// the uid of this process, and returns its handle.
func (f *fixture) register(t *testing.T, lim *api.Limits) visor.Handle {
	t.Helper()
	out := filepath.Join(t.TempDir(), "testpal.wasm")
	if b, err := exec.Command("clang", "--target=wasm32", "-O2", "-nostdlib", "-fno-builtin", "-Wl,--no-entry",
		"-o", out, "../../cmd/palisaded/testdata/testpal.c").CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, b)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: server.Peer{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}})
	resp, err := f.api.Register(ctx, &api.RegisterRequest{Source: &api.RegisterRequest_Image{Image: img}, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	h, err := visor.ParseHandle(resp.Info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestCallCanceledOnDisconnect: a client that closes its connection during a long call gets
// the call canceled (its PAL instance freed), and one that stays gets its answer.
func TestCallCanceledOnDisconnect(t *testing.T) {
	f := start(t, lean.Config{})
	h := f.register(t, &api.Limits{TimeoutMs: 60_000})
	c := f.dial(t)
	c.Write(frame(1, wire.OpCall, 0, 1, wire.CallRequest{Handle: uint64(h), Input: []byte("l")}.Append(nil)))
	time.Sleep(400 * time.Millisecond) // past watchAfter: the connection is watched
	c.Close()
	c2 := f.dial(t)
	start := time.Now()
	c2.Write(frame(1, wire.OpCall, 0, 2, wire.CallRequest{Handle: uint64(h), Input: []byte("eok")}.Append(nil)))
	hd, body, err := readResponse(c2)
	if err != nil || hd.Code != wire.CodeOK {
		t.Fatalf("call after the disconnect: %+v %v", hd, err)
	}
	if r, err := wire.DecodeCallResponse(body); err != nil || string(r.Output) != "ok" {
		t.Fatalf("output %q, %v", r.Output, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("the looping call held the instance for %v after its client left", el)
	}
	// A long call whose client waits is answered (its watcher ends without canceling it).
	h2 := f.register(t, &api.Limits{TimeoutMs: 700})
	c2.Write(frame(1, wire.OpCall, 0, 3, wire.CallRequest{Handle: uint64(h2), Input: []byte("l")}.Append(nil)))
	if hd, _, err := readResponse(c2); err != nil || hd.Code != wire.CodeTimeout {
		t.Fatalf("long call: %+v %v, want TIMEOUT at the PAL's 700 ms", hd, err)
	}
	c2.Write(frame(1, wire.OpCall, 0, 4, wire.CallRequest{Handle: uint64(h2)}.Append(nil)))
	if hd, _, err := readResponse(c2); err != nil || hd.Code != wire.CodeOK || hd.ID != 4 {
		t.Fatalf("call after a watched one: %+v %v", hd, err)
	}
	var m bytes.Buffer
	f.lean.WriteMetrics(&m)
	if !strings.Contains(m.String(), `palisade_lean_connections_total{outcome="gone_mid_call"} 1`) {
		t.Fatalf("metrics:\n%s", m.String())
	}
}
