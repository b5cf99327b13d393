// Package server is the palisaded gRPC service: it serves a visor to local applications over a
// Unix socket, identifies each caller by SO_PEERCRED, enforces ownership of PALs, persists
// registrations (Store), keeps an audit log (Audit) and counts calls (metrics).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/api"
	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/keys"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
	"github.com/palisade-project/palisade/pal"
)

// Config configures a Server.
type Config struct {
	Visor  *visor.Visor
	Store  *Store // registrations survive restarts only with a store
	Audit  *Audit // nil: no audit log
	Policy Policy
	// ImageDirs are the directories from which the daemon reads images named by path. Empty
	// disables registration by path: a caller must not make the daemon (root) read files for it.
	ImageDirs []string
	Logger    *slog.Logger
	Version   string
	// Configuration is the visor's trusted configuration state, if it has one: evidence then
	// carries its head (attest.WithConfiguration) once a configuration has been applied.
	Configuration *config.State
	// Keys is the key service behind the Key* RPCs; nil: they fail with NOT_SUPPORTED.
	Keys *keys.Service
}

// Server implements api.PalisadeServer.
type Server struct {
	api.UnimplementedPalisadeServer
	v      *visor.Visor
	store  *Store
	audit  *Audit
	policy Policy
	dirs   []string
	log    *slog.Logger
	ver    string
	grpc   *grpc.Server
	denied atomic.Uint64
	config *config.State
	keys   *keys.Service

	mu   sync.RWMutex
	pals map[visor.Handle]*entry
}

// entry is what the server knows of a live registration beyond the visor.
type entry struct {
	owner      uint32
	name       string
	registered time.Time // by its owner: a restore keeps the original time
	m          *palMetrics
}

// New creates a server. Call Restore, then Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Visor == nil {
		return nil, errors.New("server: no visor")
	}
	if err := cfg.Policy.Check(); err != nil {
		return nil, fmt.Errorf("server: policy: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		v: cfg.Visor, store: cfg.Store, audit: cfg.Audit, policy: cfg.Policy, dirs: cfg.ImageDirs,
		log: log, ver: cfg.Version, pals: map[visor.Handle]*entry{}, config: cfg.Configuration,
		keys: cfg.Keys,
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(peerCreds{}),
		grpc.MaxRecvMsgSize(api.MaxMessage),
		grpc.MaxSendMsgSize(api.MaxMessage),
		// Static flow-control windows turn off gRPC's bandwidth-delay probing, whose pings
		// cost extra wakeups on every call; on a local socket there is no bandwidth to probe.
		grpc.InitialWindowSize(api.FlowWindow),
		grpc.InitialConnWindowSize(api.FlowWindow),
		// One connection cannot hold more calls than this in flight.
		grpc.MaxConcurrentStreams(1024),
		// A fixed pool of handler goroutines instead of one new goroutine per call.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	api.RegisterPalisadeServer(s.grpc, s)
	return s, nil
}

// Serve serves l until Shutdown.
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(l) }

// Shutdown stops accepting connections and waits for the RPCs in flight until ctx ends; then it
// cancels the remaining ones (their PAL calls are interrupted and fail with CANCELED) and
// returns ctx's error. It does not close the visor or the store.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return ctx.Err()
	}
}

// Restore registers the persisted registrations again under their handles. One that fails
// (an engine no longer offered, say) is logged and kept in the store: its owner can still
// unregister it, and a later start may restore it.
func (s *Server) Restore(ctx context.Context) error {
	if s.store == nil {
		return nil
	}
	recs, err := s.store.Records()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, r := range recs {
		err := s.restore(ctx, r)
		ev := Event{Event: "restore", PAL: r.Handle.String(), Name: r.Name, Owner: u32p(r.Owner), Engine: r.Engine}
		if err != nil {
			s.log.Error("cannot restore PAL", "pal", r.Handle.String(), "name", r.Name, "owner", r.Owner, "err", err)
			ev.Event, ev.Error = "restore_failed", err.Error()
		}
		if aerr := s.audit.Log(ev); aerr != nil {
			return aerr
		}
	}
	return nil
}

func (s *Server) restore(ctx context.Context, r Record) error {
	img, err := s.store.Image(r.Image)
	if err != nil {
		return err
	}
	info, err := s.v.Register(ctx, img, visor.RegisterOptions{
		Name: r.Name, Engine: r.Engine, Limits: r.Limits, Replicas: r.Replicas, Handle: r.Handle,
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.pals[info.Handle] = &entry{owner: r.Owner, name: r.Name, registered: r.Registered, m: newPALMetrics(info.Handle.String(), r.Name)}
	s.mu.Unlock()
	return nil
}

// Errors the server itself raises; visor and engine errors are classified in classify.
var (
	errPermission = errors.New("permission denied")
	errInvalid    = errors.New("invalid request")
	errNoPeer     = errors.New("caller has no peer credentials")
)

// caller returns the peer of an RPC.
func caller(ctx context.Context) (Peer, error) {
	p, ok := peerFrom(ctx)
	if !ok {
		return Peer{}, errNoPeer
	}
	return p, nil
}

// authorize finds the live registration named handle and checks that the caller may do op.
func (s *Server) authorize(ctx context.Context, handle string, op Op) (Peer, visor.Handle, *entry, error) {
	p, err := caller(ctx)
	if err != nil {
		return p, 0, nil, err
	}
	h, err := visor.ParseHandle(handle)
	if err != nil {
		return p, 0, nil, err
	}
	e, err := s.authorizePeer(p, h, op)
	return p, h, e, err
}

// authorizePeer finds the live registration h and checks that p may do op on it; a refusal is
// counted and audited.
func (s *Server) authorizePeer(p Peer, h visor.Handle, op Op) (*entry, error) {
	s.mu.RLock()
	e := s.pals[h]
	s.mu.RUnlock()
	if e == nil {
		return nil, fmt.Errorf("%w: %s", visor.ErrNotFound, h)
	}
	if !s.policy.Allowed(p.UID, e.owner, e.name, op) {
		s.deny(p, h, e.name, op)
		return nil, fmt.Errorf("%w: uid %d may not %s %s", errPermission, p.UID, op, h)
	}
	return e, nil
}

func (s *Server) deny(p Peer, h visor.Handle, name string, op Op) {
	s.denied.Add(1)
	ev := Event{Event: "denied", UID: u32p(p.UID), PID: p.PID, Name: name, Op: string(op)}
	if h != 0 {
		ev.PAL = h.String()
	}
	s.log.Warn("access denied", "uid", p.UID, "pid", p.PID, "pal", ev.PAL, "op", string(op))
	if err := s.audit.Log(ev); err != nil {
		s.log.Error("audit log", "err", err)
	}
}

// Register implements api.PalisadeServer.
func (s *Server) Register(ctx context.Context, req *api.RegisterRequest) (*api.RegisterResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if !s.policy.MayRegister(p.UID) {
		s.deny(p, 0, req.GetName(), "register")
		return nil, toStatus(fmt.Errorf("%w: uid %d may not register PALs", errPermission, p.UID))
	}
	var image []byte
	switch src := req.Source.(type) {
	case *api.RegisterRequest_Image:
		image = src.Image
	case *api.RegisterRequest_ImagePath:
		image, err = s.readImage(src.ImagePath)
		if err != nil {
			return nil, toStatus(err)
		}
	default:
		return nil, toStatus(fmt.Errorf("%w: no image", errInvalid))
	}
	if len(image) > api.MaxImage {
		return nil, toStatus(fmt.Errorf("%w: image of %d bytes (max %d)", errInvalid, len(image), api.MaxImage))
	}
	if len(req.Name) > 256 || strings.ContainsFunc(req.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, toStatus(fmt.Errorf("%w: name must be at most 256 printable characters", visor.ErrBadOptions))
	}
	lim, err := limitsFromProto(req.Limits)
	if err != nil {
		return nil, toStatus(err)
	}
	if req.Replicas > visor.MaxReplicas {
		return nil, toStatus(fmt.Errorf("%w: replicas %d (max %d)", visor.ErrBadOptions, req.Replicas, visor.MaxReplicas))
	}
	info, err := s.v.Register(ctx, image, visor.RegisterOptions{
		Name: req.Name, Engine: req.Engine, Limits: lim, Replicas: int(req.Replicas),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	// The record goes first, on disk, then the registration is persisted: a registration
	// persisted first could not always be undone when its record then fails (the delete needs
	// the same full disk), and would come back unrecorded at the next start. One whose
	// persisting fails after its record gets a second register record, with the error.
	ev := Event{
		Event: "register", UID: u32p(p.UID), PID: p.PID, PAL: info.Handle.String(), Name: info.Name,
		Engine: info.Engine, Measurement: info.Measurement.String(), Replicas: info.Replicas,
	}
	if err := s.audit.Log(ev); err != nil {
		_ = s.v.Unregister(context.WithoutCancel(ctx), info.Handle)
		return nil, toStatus(fmt.Errorf("register: %w", err))
	}
	if s.store != nil {
		err := s.store.Put(Record{
			Handle: info.Handle, Owner: p.UID, Name: info.Name, Engine: info.Engine,
			Limits: info.Limits, Replicas: info.Replicas, Registered: info.Registered,
		}, image)
		if err != nil {
			_ = s.v.Unregister(context.WithoutCancel(ctx), info.Handle)
			s.log.Error("register: cannot persist", "pal", info.Handle.String(), "err", err)
			ev.Time, ev.Error = time.Time{}, err.Error()
			_ = s.audit.Log(ev) // on a full disk it fails too: the log then reports its own failure
			return nil, toStatus(fmt.Errorf("register: %w", err))
		}
	}
	s.mu.Lock()
	s.pals[info.Handle] = &entry{owner: p.UID, name: info.Name, registered: info.Registered, m: newPALMetrics(info.Handle.String(), info.Name)}
	s.mu.Unlock()
	return &api.RegisterResponse{Info: infoToProto(info, p.UID)}, nil
}

// readImage reads an image file named by a client. The file must lie beneath one of the
// configured image directories; openat2 with RESOLVE_BENEATH keeps symlinks and ".." from
// leading out of it.
func (s *Server) readImage(path string) ([]byte, error) {
	if len(s.dirs) == 0 {
		return nil, fmt.Errorf("%w: registration by path is disabled (no image_dirs in the daemon's configuration); send the image bytes", errPermission)
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%w: image path %q is not absolute", errInvalid, path)
	}
	path = filepath.Clean(path)
	for _, d := range s.dirs {
		rel, err := filepath.Rel(d, path)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		return readBeneath(d, rel)
	}
	return nil, fmt.Errorf("%w: %s is not in an image directory (%s)", errPermission, path, strings.Join(s.dirs, ", "))
}

func readBeneath(dir, rel string) ([]byte, error) {
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: image directory %s: %v", errInvalid, dir, err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: image %s: %v", errInvalid, filepath.Join(dir, rel), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, rel))
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: image %s is not a regular file", errInvalid, f.Name())
	}
	if fi.Size() > api.MaxImage {
		return nil, fmt.Errorf("%w: image %s has %d bytes (max %d)", errInvalid, f.Name(), fi.Size(), api.MaxImage)
	}
	return io.ReadAll(io.LimitReader(f, api.MaxImage+1))
}

// Call implements api.PalisadeServer.
func (s *Server) Call(ctx context.Context, req *api.CallRequest) (*api.CallResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	h, err := visor.ParseHandle(req.Handle)
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := s.CallAs(ctx, p, h, req.Input)
	if err != nil {
		return nil, toStatus(err)
	}
	return &api.CallResponse{Status: res.Status, Output: res.Output}, nil
}

// CallAs calls the PAL h with input on behalf of p: the access check, its audit on refusal,
// the PAL's metrics and the log of platform failures are those of the gRPC Call, which every
// front end (gRPC, the lean protocol of internal/lean) goes through. Errors are classified by
// Reason.
func (s *Server) CallAs(ctx context.Context, p Peer, h visor.Handle, input []byte) (engine.Result, error) {
	e, err := s.authorizePeer(p, h, OpCall)
	if err != nil {
		return engine.Result{}, err
	}
	start := time.Now()
	res, err := s.v.Call(ctx, h, input)
	r := reasonNone
	if err != nil {
		r = classify(err)
	}
	e.m.observe(time.Since(start), r)
	if err != nil && (r == reasonTimeout || r == reasonTrap || r == reasonOutOfMemory) {
		s.log.Warn("PAL call failed", "pal", h.String(), "name", e.name, "reason", r.String(), "err", err)
	}
	return res, err
}

// Unregister implements api.PalisadeServer.
func (s *Server) Unregister(ctx context.Context, req *api.UnregisterRequest) (*api.UnregisterResponse, error) {
	p, h, e, err := s.authorize(ctx, req.Handle, OpUnregister)
	if errors.Is(err, visor.ErrNotFound) && h != 0 {
		// Not live: it may be a persisted registration that failed to restore.
		return s.unregisterDormant(ctx, p, h)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	if s.pals[h] != e {
		s.mu.Unlock()
		return nil, toStatus(fmt.Errorf("%w: %s", visor.ErrNotFound, h))
	}
	delete(s.pals, h)
	s.mu.Unlock()
	verr := s.v.Unregister(ctx, h)
	if errors.Is(verr, visor.ErrClosed) {
		return nil, toStatus(verr)
	}
	// The visor removed the PAL whatever else verr says (a deadline while draining calls).
	return s.forget(p, h, e.name, verr)
}

func (s *Server) unregisterDormant(ctx context.Context, p Peer, h visor.Handle) (*api.UnregisterResponse, error) {
	if s.store == nil {
		return nil, toStatus(fmt.Errorf("%w: %s", visor.ErrNotFound, h))
	}
	r, ok, err := s.store.Get(h)
	if err != nil {
		return nil, toStatus(err)
	}
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: %s", visor.ErrNotFound, h))
	}
	if !s.policy.Allowed(p.UID, r.Owner, r.Name, OpUnregister) {
		s.deny(p, h, r.Name, OpUnregister)
		return nil, toStatus(fmt.Errorf("%w: uid %d may not unregister %s", errPermission, p.UID, h))
	}
	return s.forget(p, h, r.Name, nil)
}

func (s *Server) forget(p Peer, h visor.Handle, name string, verr error) (*api.UnregisterResponse, error) {
	var errs []error
	if verr != nil && !errors.Is(verr, visor.ErrNotFound) {
		errs = append(errs, verr)
	}
	if s.store != nil {
		if err := s.store.Delete(h); err != nil {
			errs = append(errs, err)
		}
	}
	ev := Event{Event: "unregister", UID: u32p(p.UID), PID: p.PID, PAL: h.String(), Name: name}
	if err := errors.Join(errs...); err != nil {
		ev.Error = err.Error()
	}
	if err := s.audit.Log(ev); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error("unregister", "pal", h.String(), "err", err)
		return nil, toStatus(err)
	}
	return &api.UnregisterResponse{}, nil
}

// List implements api.PalisadeServer.
func (s *Server) List(ctx context.Context, _ *api.ListRequest) (*api.ListResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &api.ListResponse{}
	for _, info := range s.v.List() {
		s.mu.RLock()
		e := s.pals[info.Handle]
		s.mu.RUnlock()
		if e == nil || !s.policy.Allowed(p.UID, e.owner, e.name, OpList) {
			continue
		}
		info.Registered = e.registered
		resp.Pals = append(resp.Pals, infoToProto(info, e.owner))
	}
	sort.Slice(resp.Pals, func(i, j int) bool { return resp.Pals[i].RegisteredUnixNano < resp.Pals[j].RegisteredUnixNano })
	return resp, nil
}

// Attest implements api.PalisadeServer.
func (s *Server) Attest(ctx context.Context, req *api.AttestRequest) (*api.AttestResponse, error) {
	_, h, _, err := s.authorize(ctx, req.Handle, OpAttest)
	if err != nil {
		return nil, toStatus(err)
	}
	if req.PcrMask > 0xff {
		return nil, toStatus(fmt.Errorf("%w: pcr_mask %#x selects PCRs beyond 7", errInvalid, req.PcrMask))
	}
	mask := uint8(req.PcrMask)
	if mask == 0 {
		mask = 1
	}
	q, err := s.v.Quote(h, req.Nonce, req.UserData, mask)
	if err != nil {
		return nil, toStatus(err)
	}
	// One nonce makes both fresh: Assemble has the root of trust endorse the identity key
	// for the quote's own nonce.
	var opts []attest.AssembleOption
	if s.config != nil {
		// Read at each attestation, so the evidence names the configuration active now, who
		// signed it and whether it lists this visor.
		head, err := s.config.Statement(config.Measurement(s.v.Root().Platform().Visor))
		if err != nil {
			return nil, toStatus(fmt.Errorf("attest %s: configuration: %w", h, err))
		}
		if head.Seq > 0 {
			opts = append(opts, attest.WithConfiguration(attest.ConfigHead{
				Seq: head.Seq, Version: head.Version, Config: head.Config, Head: head.Head,
				Signer: head.Signer, VisorListed: head.VisorListed,
			}))
		}
	}
	ev, err := attest.Assemble(ctx, s.v.Root(), q, opts...)
	if err != nil {
		return nil, toStatus(fmt.Errorf("attest %s: %w", h, err))
	}
	parsed, err := attest.Parse(ev)
	if err != nil {
		return nil, toStatus(fmt.Errorf("attest %s: %w", h, err))
	}
	return &api.AttestResponse{
		Quote: q, Endorsement: parsed.Endorsement, RotMode: parsed.Root,
		IdentityPublic: parsed.Identity, Evidence: ev,
	}, nil
}

// Health implements api.PalisadeServer.
func (s *Server) Health(ctx context.Context, _ *api.HealthRequest) (*api.HealthResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var n uint32
	s.mu.RLock()
	for _, e := range s.pals {
		if s.policy.Allowed(p.UID, e.owner, e.name, OpList) {
			n++
		}
	}
	s.mu.RUnlock()
	vm := s.v.Root().Platform().Visor
	return &api.HealthResponse{
		Status: "serving", RotMode: s.v.Root().Mode(), Engines: s.v.Engines(), Pals: n,
		CallerUid: p.UID, VisorMeasurement: vm[:], Version: s.ver,
	}, nil
}

func (s *Server) metricsSnapshot() []*palMetrics {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*palMetrics, 0, len(s.pals))
	for _, e := range s.pals {
		out = append(out, e.m)
	}
	return out
}

func limitsFromProto(l *api.Limits) (engine.Limits, error) {
	if l == nil {
		return engine.Limits{}, nil
	}
	if l.TimeoutMs < 0 || l.MaxInput < 0 || l.MaxOutput < 0 ||
		l.TimeoutMs > int64(24*time.Hour/time.Millisecond) || l.MaxInput > api.MaxImage || l.MaxOutput > engine.MaxHostcallIO {
		return engine.Limits{}, fmt.Errorf("%w: limits out of range (timeout ≤ 24h, input ≤ %d bytes, output ≤ %d bytes)", visor.ErrBadOptions, api.MaxImage, engine.MaxHostcallIO)
	}
	return engine.Limits{
		Timeout:   time.Duration(l.TimeoutMs) * time.Millisecond,
		MemoryMiB: l.MemoryMib,
		MaxInput:  int(l.MaxInput),
		MaxOutput: int(l.MaxOutput),
	}, nil
}

func limitsToProto(l engine.Limits) *api.Limits {
	return &api.Limits{
		TimeoutMs: l.Timeout.Milliseconds(), MemoryMib: l.MemoryMiB,
		MaxInput: int64(l.MaxInput), MaxOutput: int64(l.MaxOutput),
	}
}

func infoToProto(i visor.Info, owner uint32) *api.PalInfo {
	return &api.PalInfo{
		Handle: i.Handle.String(), Name: i.Name, Engine: i.Engine, Measurement: i.Measurement[:],
		Replicas: uint32(i.Replicas), Limits: limitsToProto(i.Limits),
		RegisteredUnixNano: i.Registered.UnixNano(), OwnerUid: owner,
		Calls: i.Calls, Failures: i.Failures, Timeouts: i.Timeouts,
	}
}

// reason classifies an error for clients and metrics.
type reason int

const (
	reasonNone reason = iota
	reasonNotFound
	reasonPermission
	reasonTimeout
	reasonTrap
	reasonOutOfMemory
	reasonInputTooLarge
	reasonOutputTooLarge
	reasonBadImage
	reasonBadOptions
	reasonUnknownEngine
	reasonNotSupported
	reasonUnavailable
	reasonCanceled
	reasonInvalid
	reasonInternal
	reasonKeyExists
	reasonPINRequired
	reasonPINIncorrect
	reasonLocked
	reasonRefused
	reasonKeyUnavailable
	numReasons
)

var reasons = [numReasons]struct {
	name string
	code codes.Code
}{
	reasonNone:           {"", codes.OK},
	reasonNotFound:       {api.ReasonNotFound, codes.NotFound},
	reasonPermission:     {api.ReasonPermission, codes.PermissionDenied},
	reasonTimeout:        {api.ReasonTimeout, codes.DeadlineExceeded},
	reasonTrap:           {api.ReasonTrap, codes.Aborted},
	reasonOutOfMemory:    {api.ReasonOutOfMemory, codes.ResourceExhausted},
	reasonInputTooLarge:  {api.ReasonInputTooLarge, codes.InvalidArgument},
	reasonOutputTooLarge: {api.ReasonOutputTooLarge, codes.ResourceExhausted},
	reasonBadImage:       {api.ReasonBadImage, codes.InvalidArgument},
	reasonBadOptions:     {api.ReasonBadOptions, codes.InvalidArgument},
	reasonUnknownEngine:  {api.ReasonUnknownEngine, codes.InvalidArgument},
	reasonNotSupported:   {api.ReasonNotSupported, codes.FailedPrecondition},
	reasonUnavailable:    {api.ReasonUnavailable, codes.Unavailable},
	reasonCanceled:       {api.ReasonCanceled, codes.Canceled},
	reasonInvalid:        {api.ReasonInvalid, codes.InvalidArgument},
	reasonInternal:       {api.ReasonInternal, codes.Internal},
	reasonKeyExists:      {api.ReasonKeyExists, codes.AlreadyExists},
	reasonPINRequired:    {api.ReasonPINRequired, codes.Unauthenticated},
	reasonPINIncorrect:   {api.ReasonPINIncorrect, codes.Unauthenticated},
	reasonLocked:         {api.ReasonLocked, codes.PermissionDenied},
	reasonRefused:        {api.ReasonRefused, codes.PermissionDenied},
	reasonKeyUnavailable: {api.ReasonKeyUnavailable, codes.FailedPrecondition},
}

func (r reason) String() string { return reasons[r].name }

// classify maps an error to its reason; the order matters where errors wrap several sentinels.
func classify(err error) reason {
	for _, c := range []struct {
		err error
		r   reason
	}{
		{errNoPeer, reasonPermission},
		// Refused because the audit log cannot record it: it works again once the log can.
		{errAuditLog, reasonUnavailable},
		{keys.ErrAudit, reasonUnavailable},
		{utpm.ErrAudit, reasonUnavailable},
		{keys.ErrNotFound, reasonNotFound},
		{keys.ErrExists, reasonKeyExists},
		{keys.ErrDenied, reasonPermission},
		{keys.ErrPINRequired, reasonPINRequired},
		{keys.ErrPINIncorrect, reasonPINIncorrect},
		{keys.ErrLocked, reasonLocked},
		{keys.ErrBadRequest, reasonInvalid},
		{keys.ErrRefused, reasonRefused},
		{keys.ErrUnavailable, reasonKeyUnavailable},
		{errPermission, reasonPermission},
		{visor.ErrNotFound, reasonNotFound},
		{visor.ErrClosed, reasonUnavailable},
		{engine.ErrInstanceClosed, reasonUnavailable},
		{visor.ErrUnknownEngine, reasonUnknownEngine},
		{visor.ErrBadOptions, reasonBadOptions},
		{engine.ErrTimeout, reasonTimeout},
		{engine.ErrTrap, reasonTrap},
		{engine.ErrOutOfMemory, reasonOutOfMemory},
		{engine.ErrInputTooLarge, reasonInputTooLarge},
		{engine.ErrOutputTooLarge, reasonOutputTooLarge},
		{engine.ErrBadImage, reasonBadImage},
		{pal.ErrInvalid, reasonBadImage},
		{engine.ErrNotSupported, reasonNotSupported},
		{context.Canceled, reasonCanceled},
		{context.DeadlineExceeded, reasonTimeout},
		{errInvalid, reasonInvalid},
		{utpm.ErrInvalid, reasonInvalid},
		{utpm.ErrTooLarge, reasonInvalid},
	} {
		if errors.Is(err, c.err) {
			return c.r
		}
	}
	return reasonInternal
}

// toStatus turns err into a gRPC status with an ErrorInfo naming its reason.
func toStatus(err error) error {
	r := classify(err)
	st := status.New(reasons[r].code, err.Error())
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: r.String(), Domain: api.ErrorDomain}); derr == nil {
		st = d
	}
	return st.Err()
}

// KeyUseEvent is the audit record of one key-object use, without the owner.
func KeyUseEvent(info visor.Info, op string, err error) Event {
	ok := err == nil
	ev := Event{
		Event: "key_use", Op: op, PAL: info.Handle.String(), Name: info.Name,
		Measurement: info.Measurement.String(), OK: &ok,
	}
	if err != nil {
		ev.Error = err.Error()
	}
	return ev
}

// LogKeyUse records one use of a µTPM key object by a PAL in the audit log (visor.Config.OnKeyUse
// calls it): op is "key-create" or "key-sign", err its outcome. The owner is known for PALs
// registered through this server. An error means the record could not be written, and the
// µTPM refuses the operation (E_AUDIT); the log reports its own failures.
func (s *Server) LogKeyUse(info visor.Info, op string, err error) error {
	if s.keys != nil && s.keys.Internal(info.Handle) {
		return nil // the key service audits its own signatures, with the caller and the key
	}
	ev := KeyUseEvent(info, op, err)
	s.mu.RLock()
	if e := s.pals[info.Handle]; e != nil {
		ev.Owner = u32p(e.owner)
	}
	s.mu.RUnlock()
	return s.audit.LogBuffered(ev)
}
