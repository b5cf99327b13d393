// Package wasm is the WebAssembly engine of Palisade ("wasm"), built on wazero's compiler.
//
// A PAL is a wasm module that follows docs/abi.md §5: it exports memory, palisade_alloc and
// palisade_entry, and imports only palisade.utpm and a small WASI subset that a Go wasip1
// reactor needs. Compile refuses anything else, naming the import.
//
// Compiled code is cached by measurement: an in-memory map of modules, and a wazero
// CompilationCache shared by all runtimes (optionally backed by a directory, so a restarted
// visor does not recompile a Go PAL, which costs seconds). wazero fixes the memory limit per
// runtime, so the engine keeps one runtime per distinct memory cap; they share the cache, and
// compiling a cached module in another runtime costs milliseconds.
//
// Timeouts: runtimes are created with WithCloseOnContextDone, so compiled code checks for
// termination; each call runs under an instance-owned context whose Done channel a timer closes
// at min(ctx deadline, Limits.Timeout).
package wasm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/pal"
)

// pageSize is the WebAssembly page size.
const pageSize = 64 << 10

// maxPages is the largest wasm32 memory (4 GiB).
const maxPages = 1 << 16

// Option configures an Engine.
type Option func(*options)

type options struct {
	cacheDir string
}

// WithCacheDir keeps compiled code in dir, so that compiling a module again after a restart
// costs milliseconds instead of seconds. The directory must be private to the visor: wazero
// trusts what it finds there.
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// Engine is the wasm engine. It is safe for concurrent use.
type Engine struct {
	cache wazero.CompilationCache

	mu       sync.Mutex
	closed   bool
	runtimes map[uint32]*runtime         // by memory cap in pages
	modules  map[pal.Measurement]*module // compiled modules, shared by every Compile of the same image
	idle     []*module                   // modules no longer referenced, oldest first, kept compiled
}

// maxIdle is how many unreferenced modules stay compiled, so that registering a PAL again
// (or another replica) costs no compilation. Closing a wazero CompiledModule also drops it
// from the in-memory compilation cache.
const maxIdle = 16

var _ engine.Engine = (*Engine)(nil)

// New creates a wasm engine.
func New(opts ...Option) (*Engine, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	e := &Engine{runtimes: map[uint32]*runtime{}, modules: map[pal.Measurement]*module{}}
	if o.cacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(o.cacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm engine: cache directory: %w", err)
		}
		e.cache = c
	} else {
		e.cache = wazero.NewCompilationCache()
	}
	return e, nil
}

// Name implements engine.Engine.
func (e *Engine) Name() string { return "wasm" }

// runtime is one wazero runtime with the host modules instantiated, for one memory cap.
type runtime struct {
	r     wazero.Runtime
	pages uint32
}

// runtimeFor returns the runtime of memory cap pages, creating it on first use. e.mu is held.
func (e *Engine) runtimeFor(ctx context.Context, pages uint32) (*runtime, error) {
	if rt, ok := e.runtimes[pages]; ok {
		return rt, nil
	}
	cfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(e.cache).
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(true).
		WithCoreFeatures(api.CoreFeaturesV2)
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if err := instantiateHostModules(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("wasm engine: host modules: %w", err)
	}
	rt := &runtime{r: r, pages: pages}
	e.runtimes[pages] = rt
	return rt, nil
}

// Compile implements engine.Engine. It refuses any import outside docs/abi.md §5, naming it,
// and any module without the required exports.
func (e *Engine) Compile(ctx context.Context, img *pal.Image) (engine.Module, error) {
	if img == nil || img.Kind != pal.KindWasm {
		return nil, fmt.Errorf("%w: the wasm engine runs only WebAssembly PALs", engine.ErrBadImage)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("wasm engine: closed")
	}
	if m, ok := e.modules[img.Measurement]; ok {
		if m.refs == 0 {
			e.idle = slices.DeleteFunc(e.idle, func(x *module) bool { return x == m })
		}
		m.refs++
		return &moduleRef{module: m}, nil
	}

	info, err := parseModule(img.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", engine.ErrBadImage, err)
	}
	if err := checkImports(info.Imports); err != nil {
		return nil, fmt.Errorf("%w: %v", engine.ErrBadImage, err)
	}
	// Compile in the runtime that most registrations will use; a module that needs more memory
	// than the default cap to start is compiled with a cap that fits it.
	pages := uint32(engine.DefaultLimits.MemoryMiB) * (1 << 20 / pageSize)
	if info.MemMinPages > pages {
		pages = min(info.MemMinPages, maxPages)
	}
	rt, err := e.runtimeFor(ctx, pages)
	if err != nil {
		return nil, err
	}
	cm, err := rt.r.CompileModule(ctx, img.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", engine.ErrBadImage, err)
	}
	if len(cm.ImportedMemories()) > 0 {
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("%w: a PAL must define its memory, not import it", engine.ErrBadImage)
	}
	if err := checkSignatures(cm.ImportedFunctions(), cm.ExportedFunctions(), cm.ExportedMemories()); err != nil {
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("%w: %v", engine.ErrBadImage, err)
	}
	_, hasInit := cm.ExportedFunctions()["_initialize"]
	m := &module{
		e: e, measurement: img.Measurement, bytes: img.Bytes, hasInit: hasInit, refs: 1,
		compiled: map[uint32]wazero.CompiledModule{pages: cm},
	}
	e.modules[img.Measurement] = m
	return &moduleRef{module: m}, nil
}

// Close implements engine.Engine: it closes every runtime, and with them every instance.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	var errs []error
	for _, rt := range e.runtimes {
		errs = append(errs, rt.r.Close(ctx))
	}
	e.runtimes, e.modules = nil, nil
	errs = append(errs, e.cache.Close(ctx))
	return errors.Join(errs...)
}

// module is a compiled PAL, shared by every Compile of the same measurement.
type module struct {
	e           *Engine
	measurement pal.Measurement
	bytes       []byte
	hasInit     bool

	// Guarded by e.mu.
	refs     int
	compiled map[uint32]wazero.CompiledModule // by memory cap in pages
}

// compiledFor returns the module compiled in the runtime of memory cap pages (from the shared
// compilation cache when it was compiled before).
func (m *module) compiledFor(ctx context.Context, pages uint32) (*runtime, wazero.CompiledModule, error) {
	e := m.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, errors.New("wasm engine: closed")
	}
	rt, err := e.runtimeFor(ctx, pages)
	if err != nil {
		return nil, nil, err
	}
	if cm, ok := m.compiled[pages]; ok {
		return rt, cm, nil
	}
	cm, err := rt.r.CompileModule(ctx, m.bytes)
	if err != nil {
		// The module compiled before, so what differs is the memory cap: the module's
		// minimum memory is above it.
		return nil, nil, fmt.Errorf("%w: memory cap %d MiB: %v", engine.ErrOutOfMemory, pages/16, err)
	}
	m.compiled[pages] = cm
	return rt, cm, nil
}

// moduleRef is what Compile returns: one reference to a shared module.
type moduleRef struct {
	*module
	closeOnce sync.Once
}

// Instantiate implements engine.Module. The instance is created and initialised (its
// _initialize export run) before Instantiate returns.
func (r *moduleRef) Instantiate(ctx context.Context, host engine.Host, lim engine.Limits) (engine.Instance, error) {
	if host == nil || host.TPM() == nil {
		return nil, errors.New("wasm engine: instantiate: no µTPM host")
	}
	lim = lim.WithDefaults()
	if lim.MemoryMiB > maxPages/16 {
		return nil, fmt.Errorf("wasm engine: memory cap %d MiB exceeds the 4096 MiB of wasm32", lim.MemoryMiB)
	}
	rt, cm, err := r.compiledFor(ctx, lim.MemoryMiB*16)
	if err != nil {
		return nil, fmt.Errorf("wasm engine: instantiate: %w", err)
	}
	inst := newInstance(r.module, rt, cm, host, lim)
	if err := inst.start(ctx); err != nil {
		return nil, fmt.Errorf("wasm engine: instantiate: %w", err)
	}
	return inst, nil
}

// Close implements engine.Module. When the last reference to the measurement is closed, the
// compiled code stays in the engine's cache of idle modules (at most maxIdle).
func (r *moduleRef) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		e := r.e
		e.mu.Lock()
		defer e.mu.Unlock()
		r.refs--
		if r.refs > 0 || e.closed {
			return
		}
		e.idle = append(e.idle, r.module)
		if len(e.idle) > maxIdle {
			old := e.idle[0]
			e.idle = e.idle[1:]
			delete(e.modules, old.measurement)
			for _, cm := range old.compiled {
				_ = cm.Close(ctx)
			}
		}
	})
	return nil
}
