package wasm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
)

// Call states of an instance.
const (
	stateIdle int32 = iota
	stateRunning
	stateKilled
)

// Bounds of the debug output a PAL can push through WASI fd_write in one call.
const (
	maxLogMessage = 4 << 10
	maxLogPerCall = 64 << 10
)

// instance is one PAL instance. Its fields are owned by the goroutine running Call, except
// state, which the kill timer also uses.
type instance struct {
	m    *module
	rt   *runtime
	cm   wazero.CompiledModule
	host engine.Host
	tpm  *utpm.TPM
	lim  engine.Limits

	mod          api.Module // nil after a reset until the next call re-instantiates
	view         api.Memory // the memory of the module a hostcall is serving (memView)
	alloc, entry api.Function
	stack        [2]uint64
	// The input buffer the last palisade_alloc returned, and the size asked for: inputs that
	// fit are written there without calling palisade_alloc again (docs/abi.md §5). Each call
	// of an exported function costs wazero a goroutine to watch for termination, so this
	// halves the cost of a small call.
	inPtr, inCap uint32
	// armed is the limit of the running call or initialisation, for error messages.
	armed  time.Duration
	cs     engine.CallState
	closed bool

	// Per-call state seen by host functions.
	logBudget int
	// mem backs the linear memory of mod and enforces the cap; its refused flag is per call.
	mem *capMemory

	// cctx is the context of every call into the module: host functions find the instance
	// through it, and its Done channel is closed to stop the PAL.
	cctx     callContext
	timer    *time.Timer
	deadline atomic.Int64  // UnixNano of the running call's deadline
	seq      atomic.Uint64 // number of the running call; a late kill of an earlier call is ignored
	state    atomic.Int32
	kmu      sync.Mutex  // serialises kill against the end of a call
	stopCtx  func() bool // stops the caller context's AfterFunc
}

func newInstance(m *module, rt *runtime, cm wazero.CompiledModule, host engine.Host, lim engine.Limits) *instance {
	i := &instance{m: m, rt: rt, cm: cm, host: host, tpm: host.TPM(), lim: lim}
	i.cctx.inst = i
	i.cctx.renew()
	i.timer = time.AfterFunc(time.Hour, func() {
		// A timer that fired just as its call ended must not kill the next call.
		if time.Now().UnixNano() >= i.deadline.Load() {
			i.kill(context.DeadlineExceeded, i.seq.Load())
		}
	})
	i.timer.Stop()
	i.cs.MaxOutput = lim.MaxOutput
	return i
}

// callContext is the context of calls into a PAL. It is allocated once per instance: the
// hot path of a call allocates nothing.
//
// done and err are atomic because wazero's watcher goroutine of a call may read them after
// the call returned, while the next call replaces them.
type callContext struct {
	inst *instance
	done atomic.Pointer[chan struct{}] // replaced after each kill
	err  atomic.Pointer[error]         // set before done is closed
}

type instanceKey struct{}

func (c *callContext) renew() {
	ch := make(chan struct{})
	c.done.Store(&ch)
	c.err.Store(nil)
}

func (c *callContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *callContext) Done() <-chan struct{}       { return *c.done.Load() }
func (c *callContext) Err() error {
	if e := c.err.Load(); e != nil {
		return *e
	}
	return nil
}
func (c *callContext) Value(key any) any {
	if key == (instanceKey{}) {
		return c.inst
	}
	return nil
}

// instanceOf returns the instance a host function is serving.
func instanceOf(ctx context.Context) *instance {
	i, _ := ctx.Value(instanceKey{}).(*instance)
	return i
}

// kill stops the running call: wazero, watching cctx.Done, closes the module, and the compiled
// code stops at its next termination check. reason is context.DeadlineExceeded or
// context.Canceled (wazero only reacts to those).
func (i *instance) kill(reason error, seq uint64) {
	i.kmu.Lock()
	defer i.kmu.Unlock()
	if i.seq.Load() == seq && i.state.CompareAndSwap(stateRunning, stateKilled) {
		i.cctx.err.Store(&reason)
		close(*i.cctx.done.Load())
	}
}

// arm starts the deadline of one call (or of initialisation): the earlier of ctx's deadline
// and limit, and ctx's cancellation. It allocates nothing unless ctx can be cancelled.
func (i *instance) arm(ctx context.Context, limit time.Duration) {
	i.armed = limit
	d := limit
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	seq := i.seq.Add(1)
	i.deadline.Store(time.Now().Add(d).UnixNano())
	i.state.Store(stateRunning)
	i.timer.Reset(d)
	i.stopCtx = nil
	if ctx.Done() != nil {
		i.stopCtx = context.AfterFunc(ctx, func() { i.kill(context.Canceled, seq) })
	}
}

// disarm ends what arm started and reports whether the PAL was killed, and why.
func (i *instance) disarm(ctx context.Context) (killed bool, why error) {
	i.timer.Stop()
	if i.stopCtx != nil {
		i.stopCtx()
		i.stopCtx = nil
	}
	if i.state.CompareAndSwap(stateRunning, stateIdle) {
		return false, nil
	}
	i.kmu.Lock() // wait for kill to finish closing the channel
	why = i.cctx.Err()
	i.cctx.renew()
	i.state.Store(stateIdle)
	i.kmu.Unlock()
	if ctx.Err() != nil {
		why = ctx.Err()
	}
	return true, why
}

// start instantiates the module and runs its _initialize export.
func (i *instance) start(ctx context.Context) error {
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	i.resetCallState()
	i.inPtr, i.inCap = 0, 0
	i.mem = &capMemory{limit: uint64(i.lim.MemoryMiB) << 20}
	ictx := experimental.WithMemoryAllocator(&i.cctx, experimental.MemoryAllocatorFunc(i.mem.allocate))
	i.arm(ctx, max(i.lim.Timeout, engine.MinInitTimeout))
	mod, err := i.rt.r.InstantiateModule(ictx, i.cm, cfg)
	if err == nil && i.m.hasInit {
		_, err = mod.ExportedFunction("_initialize").Call(&i.cctx)
	}
	killed, why := i.disarm(ctx)
	if err == nil && killed && mod.IsClosed() {
		err = errors.New("killed")
	}
	if err != nil {
		if mod != nil {
			_ = mod.Close(context.Background())
		}
		return i.classify("initialisation", err, killed, why)
	}
	i.mod = mod
	i.alloc = mod.ExportedFunction("palisade_alloc")
	i.entry = mod.ExportedFunction("palisade_entry")
	return nil
}

func (i *instance) resetCallState() {
	i.cs.Output = i.cs.Output[:0]
	i.cs.OutputTooLarge = false
	i.logBudget = maxLogPerCall
	if i.mem != nil {
		i.mem.refused = false
	}
}

// reset drops the module; the next call instantiates a fresh one.
func (i *instance) reset() {
	if i.mod != nil {
		_ = i.mod.Close(context.Background())
		i.mod = nil
	}
}

// Call implements engine.Instance.
func (i *instance) Call(ctx context.Context, input []byte) (engine.Result, error) {
	if i.closed {
		return engine.Result{}, engine.ErrInstanceClosed
	}
	if len(input) > i.lim.MaxInput {
		return engine.Result{}, fmt.Errorf("%w: %d bytes, limit %d", engine.ErrInputTooLarge, len(input), i.lim.MaxInput)
	}
	if err := ctx.Err(); err != nil {
		return engine.Result{}, fmt.Errorf("%w: %w", engine.ErrTimeout, err)
	}
	if i.mod == nil || i.mod.IsClosed() {
		i.reset()
		if err := i.start(ctx); err != nil {
			return engine.Result{}, err
		}
	}
	i.resetCallState()

	i.arm(ctx, i.lim.Timeout)
	status, err := i.run(input)
	killed, why := i.disarm(ctx)
	if err != nil || (killed && i.mod.IsClosed()) {
		mod := i.mod
		i.mod = nil
		if err == nil {
			err = errors.New("killed")
		}
		err = i.classify("call", err, killed, why)
		_ = mod.Close(context.Background())
		return engine.Result{}, err
	}
	if i.cs.OutputTooLarge {
		return engine.Result{}, fmt.Errorf("%w: limit %d bytes", engine.ErrOutputTooLarge, i.lim.MaxOutput)
	}
	res := engine.Result{Status: status}
	if len(i.cs.Output) > 0 {
		res.Output = append([]byte(nil), i.cs.Output...)
	}
	return res, nil
}

// errBadAlloc is a palisade_alloc result that does not point to the requested bytes.
var errBadAlloc = errors.New("palisade_alloc returned an unusable buffer")

func (i *instance) run(input []byte) (int32, error) {
	var ptr uint32
	if len(input) > 0 {
		if uint32(len(input)) > i.inCap {
			i.stack[0] = uint64(len(input))
			if err := i.alloc.CallWithStack(&i.cctx, i.stack[:]); err != nil {
				return 0, err
			}
			i.inPtr, i.inCap = uint32(i.stack[0]), uint32(len(input))
		}
		ptr = i.inPtr
		if ptr == 0 || !i.mod.Memory().Write(ptr, input) {
			return 0, fmt.Errorf("%w (%#x for %d bytes)", errBadAlloc, ptr, len(input))
		}
	}
	i.stack[0], i.stack[1] = uint64(ptr), uint64(len(input))
	if err := i.entry.CallWithStack(&i.cctx, i.stack[:]); err != nil {
		return 0, err
	}
	return int32(uint32(i.stack[0])), nil
}

// classify maps a failed call to the engine's sentinels, by cause: the deadline or the
// caller stopped it; or the memory cap refused a memory.grow during the call, and whatever
// then ended it (a trap, proc_exit, a failed palisade_alloc) is the PAL giving up for lack of
// memory; or it is a trap of its own. A PAL whose memory merely sits at its cap, with no grow
// refused in this call, traps as ErrTrap.
func (i *instance) classify(what string, err error, killed bool, why error) error {
	if killed {
		return fmt.Errorf("%w (%s, limit %v): %w", engine.ErrTimeout, what, i.armed, why)
	}
	detail := err.Error()
	if n := strings.IndexByte(detail, '\n'); n >= 0 {
		detail = detail[:n] // drop wazero's stack trace; it names PAL functions, not visor state
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		detail = fmt.Sprintf("PAL exited with code %d", exit.ExitCode())
	}
	if i.mem != nil && i.mem.refused {
		return fmt.Errorf("%w (%d MiB): %s: a memory.grow past the cap was refused, then %s", engine.ErrOutOfMemory, i.lim.MemoryMiB, what, detail)
	}
	return fmt.Errorf("%w: %s: %s", engine.ErrTrap, what, detail)
}

// capMemory backs a PAL's linear memory (a wazero experimental.LinearMemory) and enforces the
// instance's memory cap. wazero asks it for every grow below the module's own declared maximum,
// so a grow it refuses is exactly one the cap refused: memory.grow then returns -1 to the PAL,
// which goes on (docs/abi.md §5), and refused records it for classify.
type capMemory struct {
	buf     []byte
	limit   uint64 // bytes
	refused bool
}

func (m *capMemory) allocate(capHint, _ uint64) experimental.LinearMemory {
	m.buf = make([]byte, 0, min(capHint, m.limit))
	return m
}

// Reallocate implements experimental.LinearMemory. Memory never shrinks and the bytes past its
// length were never handed out, so growing within the capacity exposes only zeros.
func (m *capMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.refused = true
		return nil
	}
	if c := uint64(cap(m.buf)); size > c {
		m.buf = append(m.buf[:c], make([]byte, size-c)...)
	}
	m.buf = m.buf[:size]
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *capMemory) Free() { m.buf = nil }

// Close implements engine.Instance.
func (i *instance) Close(ctx context.Context) error {
	if i.closed {
		return nil
	}
	i.closed = true
	i.timer.Stop()
	i.reset()
	return nil
}

// TPM and Log make the instance the engine.Host that Dispatch sees: Log copies the message,
// which is a view of PAL memory, before it leaves the call.
func (i *instance) TPM() *utpm.TPM { return i.tpm }

func (i *instance) Log(msg []byte) {
	if i.logBudget <= 0 {
		return
	}
	if len(msg) > maxLogMessage {
		msg = msg[:maxLogMessage]
	}
	if len(msg) > i.logBudget {
		msg = msg[:i.logBudget]
	}
	i.logBudget -= len(msg)
	i.host.Log(append([]byte(nil), msg...))
}
