package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/palisade-project/palisade/internal/api"
)

// DefaultSocket is where palisaded listens unless configured otherwise; the PALISADE_SOCKET
// environment variable overrides it for SocketPath.
const DefaultSocket = "/run/palisade/palisade.sock"

// SocketPath returns $PALISADE_SOCKET, or DefaultSocket.
func SocketPath() string {
	if p := os.Getenv("PALISADE_SOCKET"); p != "" {
		return p
	}
	return DefaultSocket
}

// Client is a connection to palisaded. It is safe for concurrent use; one Client multiplexes
// any number of concurrent calls over one connection.
type Client struct {
	path string
	conn *grpc.ClientConn
	rpc  api.PalisadeClient
	lean *leanPool // the hot path (lean.go)
}

// Dial connects to the daemon at socketPath ("" means SocketPath()). It fails with an error
// wrapping ErrUnavailable, saying why, if nothing serves the socket. Once connected, the Client
// survives restarts of the daemon: it reconnects by itself, and calls made while the daemon is
// down wait for it (up to ReconnectWait).
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	if socketPath == "" {
		socketPath = SocketPath()
	}
	// Probe once, so that a missing daemon is reported now and plainly rather than as a gRPC
	// status on the first call.
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, &Error{Reason: api.ReasonUnavailable, Message: unreachable(socketPath, err), sentinel: ErrUnavailable}
	}
	c.Close()
	conn, err := grpc.NewClient("passthrough:///palisaded",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(api.MaxMessage), grpc.MaxCallSendMsgSize(api.MaxMessage)),
		grpc.WithInitialWindowSize(api.FlowWindow),
		grpc.WithInitialConnWindowSize(api.FlowWindow),
		reconnectBackoff,
		grpc.WithUnaryInterceptor(awaitConnection),
	)
	if err != nil {
		return nil, fmt.Errorf("palisade: %w", err)
	}
	conn.Connect()
	return &Client{path: socketPath, conn: conn, rpc: api.NewPalisadeClient(conn), lean: newLeanPool(socketPath)}, nil
}

func unreachable(path string, err error) string {
	var hint string
	switch {
	case errors.Is(err, os.ErrNotExist):
		hint = "is it running? (start it with 'systemctl start palisaded' or 'palisaded --socket " + path + "')"
	case errors.Is(err, os.ErrPermission):
		hint = "permission denied: is your user in the socket's group?"
	default:
		hint = "is it running? (a stale socket remains after a crash; start it with 'systemctl start palisaded')"
	}
	return fmt.Sprintf("cannot reach palisaded at %s: %s (%v)", path, hint, err)
}

// Socket returns the path of the daemon's socket the Client dials.
func (c *Client) Socket() string { return c.path }

// Close closes the connection.
func (c *Client) Close() error {
	c.lean.close()
	return c.conn.Close()
}

// Limits bound a registration; zero fields take the daemon's defaults (10 s, 64 MiB, 1 MiB in,
// 1 MiB out). A call that exceeds one fails with ErrTimeout, ErrOutOfMemory, ErrInputTooLarge
// or ErrOutputTooLarge.
type Limits struct {
	Timeout   time.Duration // per call
	MemoryMiB uint32        // memory of each instance of the PAL
	MaxInput  int           // bytes of a call's input
	MaxOutput int           // bytes of a call's output
}

// RegisterOptions describe a registration.
type RegisterOptions struct {
	Name     string // for people (List, logs); need not be unique, and names no identity
	Engine   string // "" picks by image kind
	Limits   Limits // zero fields take the daemon's defaults
	Replicas int    // instances that serve calls concurrently; 0 means 1
}

// Info describes a registered PAL.
type Info struct {
	Handle      string    // "pal-…": what Call, Attest and Unregister take
	Name        string    // as registered
	Engine      string    // "wasm" or "kvm"
	Measurement [32]byte  // the PAL's identity (package pal; `palisade measure` computes it offline)
	Replicas    int       // instances serving calls
	Limits      Limits    // with the daemon's defaults filled in
	Registered  time.Time // when the daemon registered it
	Owner       uint32    // uid of the process that registered it
	Calls       uint64    // calls so far
	Failures    uint64    // calls that ended in a platform error (trap, limits, timeouts included)
	Timeouts    uint64    // calls that ended in ErrTimeout
}

// Register sends image to the daemon, which measures, validates and instantiates it.
func (c *Client) Register(ctx context.Context, image []byte, opts RegisterOptions) (Info, error) {
	return c.register(ctx, &api.RegisterRequest{Source: &api.RegisterRequest_Image{Image: image}}, opts)
}

// RegisterPath asks the daemon to read the image at path itself; the daemon allows only paths
// in its configured image directories.
func (c *Client) RegisterPath(ctx context.Context, path string, opts RegisterOptions) (Info, error) {
	return c.register(ctx, &api.RegisterRequest{Source: &api.RegisterRequest_ImagePath{ImagePath: path}}, opts)
}

func (c *Client) register(ctx context.Context, req *api.RegisterRequest, opts RegisterOptions) (Info, error) {
	if opts.Replicas < 0 {
		return Info{}, fmt.Errorf("%w: negative replicas", ErrBadOptions)
	}
	req.Name, req.Engine, req.Replicas = opts.Name, opts.Engine, uint32(opts.Replicas)
	req.Limits = &api.Limits{
		TimeoutMs: opts.Limits.Timeout.Milliseconds(), MemoryMib: opts.Limits.MemoryMiB,
		MaxInput: int64(opts.Limits.MaxInput), MaxOutput: int64(opts.Limits.MaxOutput),
	}
	resp, err := c.rpc.Register(ctx, req)
	if err != nil {
		return Info{}, c.fromStatus(err)
	}
	return infoFromProto(resp.Info), nil
}

// Result is what a PAL returned.
type Result struct {
	Status int32  // chosen by the PAL; 0 means success
	Output []byte // the PAL's output (its explanation when Status is not 0)
}

// Call runs the PAL once with input. A PAL's own failure is a non-zero Result.Status with a
// nil error; platform failures are errors wrapping ErrTimeout, ErrTrap, ErrOutOfMemory, ...
func (c *Client) Call(ctx context.Context, handle string, input []byte) (Result, error) {
	if res, ok, err := c.leanCall(ctx, handle, input); ok {
		return res, err
	}
	resp, err := c.rpc.Call(ctx, &api.CallRequest{Handle: handle, Input: input})
	if err != nil {
		return Result{}, c.fromStatus(err)
	}
	return Result{Status: resp.Status, Output: resp.Output}, nil
}

// Unregister destroys the PAL and its µTPM, after the calls in flight on it.
func (c *Client) Unregister(ctx context.Context, handle string) error {
	_, err := c.rpc.Unregister(ctx, &api.UnregisterRequest{Handle: handle})
	return c.fromStatus(err)
}

// List returns the PALs the caller may see, oldest first.
func (c *Client) List(ctx context.Context) ([]Info, error) {
	resp, err := c.rpc.List(ctx, &api.ListRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	out := make([]Info, 0, len(resp.Pals))
	for _, p := range resp.Pals {
		out = append(out, infoFromProto(p))
	}
	return out, nil
}

// AttestOptions select what evidence reports.
type AttestOptions struct {
	Nonce    []byte // the verifier's challenge, ≤ 1024 bytes
	UserData []byte // ≤ 4096 bytes
	PCRMask  uint8  // 0 reports PCR0 only
}

// Evidence is what a remote verifier needs to decide which code a PAL runs.
type Evidence struct {
	Quote          []byte // µTPM quote, COSE_Sign1 (docs/formats.md)
	IdentityPublic []byte // the visor identity key that signed Quote, DER SubjectPublicKeyInfo
	Endorsement    []byte // the root of trust's endorsement of that key for Nonce; nil for "none"
	RotMode        string // "tpm" or "none" (unrooted: verifiers refuse it by default)
	Bundle         []byte // the assembled evidence (attest package), if the daemon provides it
}

// Attest returns evidence about the PAL, fresh for opts.Nonce.
func (c *Client) Attest(ctx context.Context, handle string, opts AttestOptions) (*Evidence, error) {
	resp, err := c.rpc.Attest(ctx, &api.AttestRequest{
		Handle: handle, Nonce: opts.Nonce, UserData: opts.UserData, PcrMask: uint32(opts.PCRMask),
	})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return &Evidence{
		Quote: resp.Quote, IdentityPublic: resp.IdentityPublic, Endorsement: resp.Endorsement,
		RotMode: resp.RotMode, Bundle: resp.Evidence,
	}, nil
}

// Health describes the daemon.
type Health struct {
	Status           string   // "serving"
	RotMode          string   // root of trust: "tpm", or "none" (development: evidence is unrooted)
	Engines          []string // engines the daemon offers: "wasm", "kvm"
	PALs             int      // visible to the caller
	CallerUID        uint32   // the caller's uid, as the daemon sees it (SO_PEERCRED)
	VisorMeasurement [32]byte // what attest.Options.Visor must be (attest.MeasureVisor computes it offline)
	Version          string   // the daemon's version, without "v"
}

// Health asks the daemon how it is.
func (c *Client) Health(ctx context.Context) (Health, error) {
	r, err := c.rpc.Health(ctx, &api.HealthRequest{})
	if err != nil {
		return Health{}, c.fromStatus(err)
	}
	h := Health{
		Status: r.Status, RotMode: r.RotMode, Engines: r.Engines, PALs: int(r.Pals),
		CallerUID: r.CallerUid, Version: r.Version,
	}
	copy(h.VisorMeasurement[:], r.VisorMeasurement)
	return h, nil
}

func infoFromProto(p *api.PalInfo) Info {
	i := Info{
		Handle: p.Handle, Name: p.Name, Engine: p.Engine, Replicas: int(p.Replicas),
		Registered: time.Unix(0, p.RegisteredUnixNano), Owner: p.OwnerUid,
		Calls: p.Calls, Failures: p.Failures, Timeouts: p.Timeouts,
	}
	copy(i.Measurement[:], p.Measurement)
	if l := p.Limits; l != nil {
		i.Limits = Limits{
			Timeout: time.Duration(l.TimeoutMs) * time.Millisecond, MemoryMiB: l.MemoryMib,
			MaxInput: int(l.MaxInput), MaxOutput: int(l.MaxOutput),
		}
	}
	return i
}
