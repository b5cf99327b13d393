// Package visor is the core that ties Palisade together: it registers PALs (measure, validate,
// isolate in an engine, create the µTPM), dispatches calls to their instances one at a time
// per instance, and unregisters them.
//
// A registration has one µTPM, shared by its replicas: replicas are copies of one PAL that let
// calls run on several cores, and they extend the same PCRs and see the same identity.
package visor

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/rot"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/pal"
)

// Errors of the visor; engine errors (engine.ErrTimeout, ...) pass through wrapped.
var (
	ErrNotFound      = errors.New("no such PAL")
	ErrClosed        = errors.New("visor is closed")
	ErrUnknownEngine = errors.New("unknown engine")
	ErrBadOptions    = errors.New("invalid registration options")
)

// MaxReplicas bounds RegisterOptions.Replicas.
const MaxReplicas = 256

// Config configures a Visor.
type Config struct {
	Root    rot.RootOfTrust
	Engines []engine.Engine // by Name(); the first that accepts an image kind is its default
	// NotOffered says, by engine name, why an engine this build has is not running here (no
	// /dev/kvm…), so that a registration asking for it is told why, not only "unknown".
	NotOffered map[string]error
	Logger     *slog.Logger // defaults to slog.Default()
	// OnKeyUse, if set, is the audit of every use of a µTPM key object ("key-create",
	// "key-sign") by any PAL, with its outcome (utpm.AuditSink). It runs on the calling PAL's
	// goroutine and must not block for long. An error means the use could not be recorded:
	// the µTPM then refuses it (the PAL's hostcall fails with E_AUDIT, utpm.ErrAudit).
	OnKeyUse func(pal Info, op string, err error) error
}

// Handle names a registration. Handles are random so that one caller cannot guess another's.
type Handle uint64

func (h Handle) String() string { return fmt.Sprintf("pal-%016x", uint64(h)) }

// ParseHandle parses the String form of a Handle.
func ParseHandle(s string) (Handle, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "pal-"), 16, 64)
	if err != nil || !strings.HasPrefix(s, "pal-") {
		return 0, fmt.Errorf("%w: bad handle %q", ErrNotFound, s)
	}
	return Handle(v), nil
}

// RegisterOptions describe a registration.
type RegisterOptions struct {
	Name     string        // for logs and listings; need not be unique
	Engine   string        // "" picks the engine for the image kind
	Limits   engine.Limits // zero fields take engine.DefaultLimits
	Replicas int           // instances; 0 means 1
	// Handle, if non-zero, is the handle to use: the daemon restores persisted registrations
	// under the handles their owners know. Registering a handle in use fails.
	Handle Handle
}

// Info describes a registered PAL.
type Info struct {
	Handle      Handle
	Name        string
	Engine      string
	Measurement pal.Measurement
	Replicas    int
	Limits      engine.Limits
	Registered  time.Time
	Calls       uint64 // completed calls
	Failures    uint64 // calls that failed with a platform error (timeouts included)
	Timeouts    uint64
}

// Visor is safe for concurrent use.
type Visor struct {
	root     rot.RootOfTrust
	onKeyUse func(Info, string, error) error
	platform *utpm.Platform
	engines  []engine.Engine
	// notOffered: Config.NotOffered, read-only.
	notOffered map[string]error
	log        *slog.Logger

	mu     sync.RWMutex
	pals   map[Handle]*registration
	closed bool
}

type registration struct {
	info   Info // immutable after registration, except the counters below
	calls  atomic.Uint64
	fails  atomic.Uint64
	tmo    atomic.Uint64
	tpm    *utpm.TPM
	module engine.Module
	idle   chan engine.Instance // instances not in a call
	all    []engine.Instance

	// gone is closed by Unregister; waiting callers give up.
	gone     chan struct{}
	goneOnce sync.Once
}

// New creates a visor over the root of trust and engines in cfg.
func New(cfg Config) (*Visor, error) {
	if cfg.Root == nil {
		return nil, errors.New("visor: no root of trust")
	}
	if len(cfg.Engines) == 0 {
		return nil, errors.New("visor: no engine")
	}
	p, err := utpm.NewPlatform(cfg.Root.Platform())
	if err != nil {
		return nil, fmt.Errorf("visor: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Visor{
		root: cfg.Root, onKeyUse: cfg.OnKeyUse, platform: p, engines: cfg.Engines, notOffered: cfg.NotOffered, log: log,
		pals: make(map[Handle]*registration),
	}, nil
}

// Platform is the µTPM platform of this visor (identity key, visor measurement).
func (v *Visor) Platform() *utpm.Platform { return v.platform }

// Root is the visor's root of trust.
func (v *Visor) Root() rot.RootOfTrust { return v.root }

// Engines lists the names of the engines this visor runs.
func (v *Visor) Engines() []string {
	var n []string
	for _, e := range v.engines {
		n = append(n, e.Name())
	}
	return n
}

func (v *Visor) engineFor(name string, kind pal.Kind) (engine.Engine, error) {
	if name == "" {
		name = map[pal.Kind]string{pal.KindWasm: "wasm", pal.KindELF: "kvm"}[kind]
	}
	for _, e := range v.engines {
		if e.Name() == name {
			return e, nil
		}
	}
	if why := v.notOffered[name]; why != nil {
		return nil, fmt.Errorf("%w %q for %s images: not offered on this machine (%v); this visor runs: %s",
			ErrUnknownEngine, name, kind, why, strings.Join(v.Engines(), ", "))
	}
	return nil, fmt.Errorf("%w %q for %s images (this visor runs: %s)", ErrUnknownEngine, name, kind,
		strings.Join(v.Engines(), ", "))
}

// Register measures, validates and instantiates image, creating its µTPM.
func (v *Visor) Register(ctx context.Context, image []byte, opts RegisterOptions) (Info, error) {
	if opts.Replicas < 0 || opts.Replicas > MaxReplicas {
		return Info{}, fmt.Errorf("%w: replicas %d not in 1..%d", ErrBadOptions, opts.Replicas, MaxReplicas)
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if err := opts.Limits.Validate(); err != nil {
		return Info{}, fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	lim := opts.Limits.WithDefaults()
	img, err := pal.Parse(image)
	if err != nil {
		return Info{}, fmt.Errorf("register: %w", err)
	}
	eng, err := v.engineFor(opts.Engine, img.Kind)
	if err != nil {
		return Info{}, fmt.Errorf("register: %w", err)
	}
	if err := v.checkOpen(); err != nil {
		return Info{}, err
	}
	mod, err := eng.Compile(ctx, img)
	if err != nil {
		return Info{}, fmt.Errorf("register %s: %w", img.Measurement, err)
	}
	h := opts.Handle
	if h == 0 {
		h = newHandle()
	}
	r := &registration{
		info: Info{
			Handle: h, Name: opts.Name, Engine: eng.Name(), Measurement: img.Measurement,
			Replicas: opts.Replicas, Limits: lim, Registered: time.Now(),
		},
		tpm:    v.platform.NewTPM(utpm.Digest(img.Measurement)),
		module: mod,
		idle:   make(chan engine.Instance, opts.Replicas),
		gone:   make(chan struct{}),
	}
	if v.onKeyUse != nil {
		r.tpm.OnKeyUse(func(op string, err error) error { return v.onKeyUse(r.info, op, err) })
	}
	host := &palHost{tpm: r.tpm, log: v.log.With("pal", r.info.Handle.String(), "name", opts.Name)}
	for i := 0; i < opts.Replicas; i++ {
		inst, err := mod.Instantiate(ctx, host, lim)
		if err != nil {
			r.closeAll(context.Background())
			return Info{}, fmt.Errorf("register %s: instance %d: %w", img.Measurement, i, err)
		}
		r.all = append(r.all, inst)
		r.idle <- inst
	}
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		r.closeAll(context.Background())
		return Info{}, ErrClosed
	}
	if _, dup := v.pals[h]; dup {
		v.mu.Unlock()
		r.closeAll(context.Background())
		return Info{}, fmt.Errorf("%w: handle %s is in use", ErrBadOptions, h)
	}
	v.pals[h] = r
	v.mu.Unlock()
	v.log.Info("registered PAL", "pal", r.info.Handle.String(), "name", opts.Name, "engine", eng.Name(),
		"measurement", img.Measurement.String(), "replicas", opts.Replicas)
	return r.info, nil
}

func newHandle() Handle {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return Handle(binary.LittleEndian.Uint64(b[:]) | 1)
}

func (v *Visor) checkOpen() error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return ErrClosed
	}
	return nil
}

func (v *Visor) lookup(h Handle) (*registration, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return nil, ErrClosed
	}
	r, ok := v.pals[h]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, h)
	}
	return r, nil
}

// Call runs the PAL h once with input on a free instance, waiting for one if all are busy.
func (v *Visor) Call(ctx context.Context, h Handle, input []byte) (engine.Result, error) {
	r, err := v.lookup(h)
	if err != nil {
		return engine.Result{}, err
	}
	if len(input) > r.info.Limits.MaxInput {
		r.fails.Add(1)
		return engine.Result{}, fmt.Errorf("%w: %d bytes, limit %d", engine.ErrInputTooLarge, len(input), r.info.Limits.MaxInput)
	}
	var inst engine.Instance
	select {
	case inst = <-r.idle:
	case <-r.gone:
		return engine.Result{}, fmt.Errorf("%w: %s was unregistered", ErrNotFound, h)
	case <-ctx.Done():
		return engine.Result{}, ctx.Err()
	}
	res, err := inst.Call(ctx, input)
	r.idle <- inst
	r.calls.Add(1)
	if err != nil {
		r.fails.Add(1)
		if errors.Is(err, engine.ErrTimeout) {
			r.tmo.Add(1)
		}
		return res, fmt.Errorf("call %s: %w", h, err)
	}
	return res, nil
}

// Unregister waits for the calls in flight on h, then destroys its instances and µTPM.
func (v *Visor) Unregister(ctx context.Context, h Handle) error {
	v.mu.Lock()
	r, ok := v.pals[h]
	delete(v.pals, h)
	closed := v.closed
	v.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, h)
	}
	return v.drain(ctx, r)
}

// drain destroys a registration that is no longer in v.pals.
func (v *Visor) drain(ctx context.Context, r *registration) error {
	r.goneOnce.Do(func() { close(r.gone) })
	// Take every instance back, so that no call is running when they are closed.
	var err error
	for i := 0; i < len(r.all) && err == nil; i++ {
		select {
		case <-r.idle:
		case <-ctx.Done():
			// The engines make a call whose instance is closed under it return promptly.
			err = fmt.Errorf("unregister %s: %w (instances closed while calls were running)", r.info.Handle, ctx.Err())
		}
	}
	r.closeAll(context.Background())
	v.log.Info("unregistered PAL", "pal", r.info.Handle.String(), "name", r.info.Name)
	return err
}

func (r *registration) closeAll(ctx context.Context) {
	for _, inst := range r.all {
		_ = inst.Close(ctx)
	}
	if r.module != nil {
		_ = r.module.Close(ctx)
	}
}

// Info describes one registration.
func (v *Visor) Info(h Handle) (Info, error) {
	r, err := v.lookup(h)
	if err != nil {
		return Info{}, err
	}
	return r.snapshot(), nil
}

func (r *registration) snapshot() Info {
	i := r.info
	i.Calls, i.Failures, i.Timeouts = r.calls.Load(), r.fails.Load(), r.tmo.Load()
	return i
}

// List describes every registration, oldest first.
func (v *Visor) List() []Info {
	v.mu.RLock()
	out := make([]Info, 0, len(v.pals))
	for _, r := range v.pals {
		out = append(out, r.snapshot())
	}
	v.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Registered.Before(out[j].Registered) })
	return out
}

// Quote produces µTPM evidence for PAL h on behalf of the host (a remote verifier asking
// "which PAL is this?"): the same COSE_Sign1 a PAL gets from QUOTE.
func (v *Visor) Quote(h Handle, nonce, userData []byte, pcrMask uint8) ([]byte, error) {
	r, err := v.lookup(h)
	if err != nil {
		return nil, err
	}
	q, err := r.tpm.Quote(nonce, userData, pcrMask)
	if err != nil {
		return nil, fmt.Errorf("quote %s: %w", h, err)
	}
	return q, nil
}

// PCRs returns the current PCR values of PAL h.
func (v *Visor) PCRs(h Handle) ([utpm.NumPCRs]utpm.Digest, error) {
	r, err := v.lookup(h)
	if err != nil {
		return [utpm.NumPCRs]utpm.Digest{}, err
	}
	return r.tpm.PCRs(), nil
}

// Close unregisters every PAL and refuses further work. Calls in flight are given until ctx
// ends to finish.
func (v *Visor) Close(ctx context.Context) error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	pals := v.pals
	v.pals = map[Handle]*registration{}
	v.mu.Unlock()
	var errs []error
	for _, r := range pals {
		errs = append(errs, v.drain(ctx, r))
	}
	return errors.Join(errs...)
}

// palHost serves one registration's hostcalls.
type palHost struct {
	tpm *utpm.TPM
	log *slog.Logger
}

func (h *palHost) TPM() *utpm.TPM { return h.tpm }

func (h *palHost) Log(msg []byte) {
	h.log.Debug("PAL log", "msg", strings.TrimRight(string(msg), "\n"))
}
