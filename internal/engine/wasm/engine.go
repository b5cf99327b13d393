// Package wasm is the WebAssembly engine of Palisade ("wasm"), built on wazero's compiler.
//
// A PAL is a wasm module that follows docs/abi.md §5: it exports memory, palisade_alloc and
// palisade_entry, and imports only palisade.utpm and a small WASI subset that a Go wasip1
// reactor needs. Compile refuses anything else, naming the import.
//
// Compiled code is cached by measurement: an in-memory map of modules, and a wazero
// CompilationCache (optionally backed by a directory, so a restarted visor does not recompile a
// Go PAL, which costs seconds).
//
// Memory caps: the engine has one wazero runtime, without a memory limit of its own; each
// instance's linear memory is backed by a capMemory that refuses to grow past the instance's
// cap. So the engine knows when the cap refused a memory.grow, and reports a trap that follows
// as exhaustion of the memory cap, and any other trap as a trap (docs/abi.md §5).
//
// Timeouts: the runtime is created with WithCloseOnContextDone, so compiled code checks for
// termination; each call runs under an instance-owned context whose Done channel a timer closes
// at min(ctx deadline, Limits.Timeout).
package wasm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	cache    wazero.CompilationCache
	cacheDir string // "" without WithCacheDir
	rt       *runtime

	mu      sync.Mutex
	closed  bool
	modules map[pal.Measurement]*module // compiled modules, shared by every Compile of the same image
	idle    []*module                   // modules no longer referenced, oldest first, kept compiled
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
	e := &Engine{modules: map[pal.Measurement]*module{}}
	if o.cacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(o.cacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm engine: cache directory: %w", err)
		}
		e.cache, e.cacheDir = c, o.cacheDir
	} else {
		e.cache = wazero.NewCompilationCache()
	}
	rt, err := newRuntime(context.Background(), e.cache)
	if err != nil {
		_ = e.cache.Close(context.Background())
		return nil, err
	}
	e.rt = rt
	return e, nil
}

// Name implements engine.Engine.
func (e *Engine) Name() string { return "wasm" }

// runtime is the engine's wazero runtime with the host modules instantiated.
type runtime struct {
	r wazero.Runtime
}

// Features is what the engine accepts of WebAssembly: the 2.0 core specification (bulk
// memory, multi-value, non-trapping float-to-int, reference types, sign extension, 128-bit
// SIMD), and none of wazero's experimental features (threads, tail calls, exception handling,
// extended constants, typed function references). docs/abi.md §5; TestFeatures checks it.
const Features = api.CoreFeaturesV2

// newRuntime creates the runtime. It has no memory limit of its own (wasm32's 4 GiB): each
// instance's capMemory enforces the instance's cap.
func newRuntime(ctx context.Context, cache wazero.CompilationCache) (*runtime, error) {
	cfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(cache).
		WithCloseOnContextDone(true).
		WithCoreFeatures(Features)
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if err := instantiateHostModules(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("wasm engine: host modules: %w", err)
	}
	return &runtime{r: r}, nil
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
	cm, err := e.rt.r.CompileModule(ctx, img.Bytes)
	if err != nil && e.cacheDir != "" && isCacheFault(err) {
		// The cache is only a cache: an entry that no longer reads (torn, damaged) or one
		// that cannot be written (disk full) costs a compilation, not the image. wazero does
		// not say which entry failed, so every entry goes. After a failed write the compiled
		// module is in wazero's memory already and the second attempt finds it there (wazero
		// then counts one reference too many to it, so it stays compiled while the engine
		// lives: the price of not refusing the image).
		if rerr := e.clearCache(); rerr != nil {
			return nil, fmt.Errorf("wasm engine: compilation cache %s: %v (and clearing it: %w)", e.cacheDir, err, rerr)
		}
		cm, err = e.rt.r.CompileModule(ctx, img.Bytes)
	}
	if err != nil {
		if isCacheFault(err) {
			return nil, fmt.Errorf("wasm engine: compilation cache %s: %w", e.cacheDir, err)
		}
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
		e: e, measurement: img.Measurement, cm: cm, hasInit: hasInit, refs: 1,
		minPages: cm.ExportedMemories()["memory"].Min(),
	}
	e.modules[img.Measurement] = m
	return &moduleRef{module: m}, nil
}

// isCacheFault reports whether an error of wazero's CompileModule comes from its file cache
// rather than from the module: a file operation that failed (fs.PathError, os.LinkError from
// the rename), or an entry that does not decode (wazero's "compilationcache:" errors, which
// wrap nothing). Decoding and validation errors of the module are neither.
func isCacheFault(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	return errors.As(err, &pe) || errors.As(err, &le) || strings.HasPrefix(err.Error(), "compilationcache:")
}

// clearCache removes every entry (and temporary file) of the compilation cache directory:
// wazero keeps them one directory below, per wazero version and platform.
func (e *Engine) clearCache() error {
	paths, err := filepath.Glob(filepath.Join(e.cacheDir, "*", "*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close implements engine.Engine: it closes every runtime, and with them every instance.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	errs := []error{e.rt.r.Close(ctx)}
	e.modules = nil
	errs = append(errs, e.cache.Close(ctx))
	return errors.Join(errs...)
}

// module is a compiled PAL, shared by every Compile of the same measurement.
type module struct {
	e           *Engine
	measurement pal.Measurement
	cm          wazero.CompiledModule
	hasInit     bool
	minPages    uint32 // the initial size of the module's memory

	refs int // guarded by e.mu
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
	if r.minPages > lim.MemoryMiB*(1<<20/pageSize) {
		return nil, fmt.Errorf("wasm engine: instantiate: %w: the module's initial memory is %d KiB, the cap %d MiB",
			engine.ErrOutOfMemory, r.minPages*(pageSize>>10), lim.MemoryMiB)
	}
	r.e.mu.Lock()
	closed := r.e.closed
	r.e.mu.Unlock()
	if closed {
		return nil, errors.New("wasm engine: closed")
	}
	inst := newInstance(r.module, r.e.rt, r.cm, host, lim)
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
			_ = old.cm.Close(ctx)
		}
	})
	return nil
}
