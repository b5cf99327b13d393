package wasm

import (
	"context"
	"encoding/binary"
	"math"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
)

// instantiateHostModules adds the palisade host module and the WASI shim to r. Both are shared
// by every instance of r; host functions find their instance through the call's context.
func instantiateHostModules(ctx context.Context, r wazero.Runtime) error {
	_, err := r.NewHostModuleBuilder(hostModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(hostUTPM), i32s(5), []api.ValueType{i64}).
		Export("utpm").Instantiate(ctx)
	if err != nil {
		return err
	}
	b := r.NewHostModuleBuilder(wasiModule)
	for name, f := range wasiFuncs {
		s := allowedImports[wasiModule+"."+name]
		b.NewFunctionBuilder().WithGoModuleFunction(f, s.params, s.results).Export(name)
	}
	_, err = b.Instantiate(ctx)
	return err
}

// hostUTPM is palisade.utpm (docs/abi.md §2): engine.Hostcall applies the ABI's rules on
// buffers, translating them through the instance (Buffer), and runs the shared dispatcher.
func hostUTPM(ctx context.Context, m api.Module, s []uint64) {
	i := instanceOf(ctx)
	if i == nil {
		s[0] = neg(engine.EInternal)
		return
	}
	i.view = m.Memory()
	s[0] = uint64(engine.Hostcall(i, &i.cs, i, uint32(s[0]), uint64(uint32(s[1])), uint32(s[2]), uint64(uint32(s[3])), uint32(s[4])))
}

// Buffer makes the instance the engine.Memory of its running hostcall: every wasm address is
// readable and writable.
func (i *instance) Buffer(ptr uint64, n uint32, _ bool) ([]byte, bool) {
	if ptr > math.MaxUint32 {
		return nil, false
	}
	return i.view.Read(uint32(ptr), n)
}

func neg(code int32) uint64 { return uint64(-int64(code)) }

// WASI errno values (wasi_snapshot_preview1).
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
	errnoIO      = 29
	errnoNotsup  = 58
)

// wasiFuncs is the WASI shim of docs/abi.md §5: no files, no network, no arguments or
// environment. Every pointer is checked through api.Memory, which refuses out-of-range access.
var wasiFuncs = map[string]api.GoModuleFunc{
	"args_sizes_get":      zeroSizes,
	"environ_sizes_get":   zeroSizes,
	"args_get":            success,
	"environ_get":         success,
	"clock_time_get":      clockTimeGet,
	"random_get":          randomGet,
	"fd_write":            fdWrite,
	"poll_oneoff":         pollOneoff,
	"sched_yield":         success,
	"proc_exit":           procExit,
	"fd_close":            badf,
	"fd_read":             badf,
	"fd_fdstat_get":       badf,
	"fd_fdstat_set_flags": badf,
	"fd_prestat_get":      badf, // EBADF ends the runtime's scan for preopened directories
	"fd_prestat_dir_name": badf,
}

func success(_ context.Context, _ api.Module, s []uint64) { s[0] = errnoSuccess }
func badf(_ context.Context, _ api.Module, s []uint64)    { s[0] = errnoBadf }

func zeroSizes(_ context.Context, m api.Module, s []uint64) {
	mem := m.Memory()
	if !mem.WriteUint32Le(uint32(s[0]), 0) || !mem.WriteUint32Le(uint32(s[1]), 0) {
		s[0] = errnoFault
		return
	}
	s[0] = errnoSuccess
}

// monoEpoch makes the monotonic clock start near zero, as WASI runtimes usually do.
var monoEpoch = time.Now()

func clockTimeGet(_ context.Context, m api.Module, s []uint64) {
	var t uint64
	switch uint32(s[0]) {
	case 0: // realtime
		t = uint64(time.Now().UnixNano())
	case 1: // monotonic
		t = uint64(time.Since(monoEpoch).Nanoseconds())
	default:
		s[0] = errnoInval
		return
	}
	if !m.Memory().WriteUint64Le(uint32(s[2]), t) {
		s[0] = errnoFault
		return
	}
	s[0] = errnoSuccess
}

// randomGet serves random_get from the µTPM, so a PAL's randomness has one source.
func randomGet(ctx context.Context, m api.Module, s []uint64) {
	i := instanceOf(ctx)
	buf, ok := m.Memory().Read(uint32(s[0]), uint32(s[1]))
	if !ok {
		s[0] = errnoFault
		return
	}
	if i == nil {
		s[0] = errnoIO
		return
	}
	for len(buf) > 0 {
		n := min(len(buf), utpm.MaxRandom)
		if err := i.tpm.Random(buf[:n]); err != nil {
			s[0] = errnoIO
			return
		}
		buf = buf[n:]
	}
	s[0] = errnoSuccess
}

// maxIovs is IOV_MAX.
const maxIovs = 1024

// fdWrite sends writes to fd 1 and 2 to the instance's bounded debug log.
func fdWrite(ctx context.Context, m api.Module, s []uint64) {
	fd, iovs, n, nwritten := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
	i := instanceOf(ctx)
	if (fd != 1 && fd != 2) || i == nil {
		s[0] = errnoBadf
		return
	}
	if n > maxIovs {
		s[0] = errnoInval
		return
	}
	mem := m.Memory()
	vec, ok := mem.Read(iovs, 8*n)
	if !ok {
		s[0] = errnoFault
		return
	}
	var total uint32
	for k := uint32(0); k < n; k++ {
		ptr := binary.LittleEndian.Uint32(vec[8*k:])
		l := binary.LittleEndian.Uint32(vec[8*k+4:])
		b, ok := mem.Read(ptr, l)
		if !ok {
			s[0] = errnoFault
			return
		}
		if len(b) > 0 {
			i.Log(b)
		}
		total += l
	}
	if !mem.WriteUint32Le(nwritten, total) {
		s[0] = errnoFault
		return
	}
	s[0] = errnoSuccess
}

// Layout of WASI subscriptions and events.
const (
	subSize         = 48
	eventSize       = 32
	maxSubs         = 64
	eventClock      = 0
	subClockAbstime = 1
)

// pollOneoff supports only relative clock waits (how the Go runtime sleeps). Any other
// subscription completes at once with an error; the wait ends early if the call is stopped.
func pollOneoff(ctx context.Context, m api.Module, s []uint64) {
	in, out, nsubs, nevents := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
	if nsubs == 0 || nsubs > maxSubs {
		s[0] = errnoInval
		return
	}
	mem := m.Memory()
	subs, ok1 := mem.Read(in, subSize*nsubs)
	evs, ok2 := mem.Read(out, eventSize*nsubs)
	if !ok1 || !ok2 {
		s[0] = errnoFault
		return
	}
	// Take what we need from subs before writing evs: the PAL may make them overlap.
	type sub struct {
		userdata uint64
		tag      byte
		timeout  uint64
		errno    uint16
	}
	var list [maxSubs]sub
	wait, immediate := uint64(1<<63), false
	for k := uint32(0); k < nsubs; k++ {
		b := subs[subSize*k:]
		e := sub{userdata: binary.LittleEndian.Uint64(b), tag: b[8]}
		switch {
		case e.tag != eventClock:
			e.errno, immediate = errnoBadf, true
		case binary.LittleEndian.Uint16(b[40:])&subClockAbstime != 0:
			e.errno, immediate = errnoNotsup, true
		default:
			e.timeout = binary.LittleEndian.Uint64(b[24:])
			wait = min(wait, e.timeout)
		}
		list[k] = e
	}
	if !immediate && wait > 0 {
		t := time.NewTimer(time.Duration(min(wait, uint64(1<<62))))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	var n uint32
	for _, e := range list[:nsubs] {
		if immediate && e.errno == 0 {
			continue // clock not yet expired
		}
		if !immediate && e.timeout > wait {
			continue
		}
		ev := evs[eventSize*n : eventSize*(n+1)]
		clear(ev)
		binary.LittleEndian.PutUint64(ev, e.userdata)
		binary.LittleEndian.PutUint16(ev[8:], e.errno)
		ev[10] = e.tag
		n++
	}
	if !mem.WriteUint32Le(nevents, n) {
		s[0] = errnoFault
		return
	}
	s[0] = errnoSuccess
}

// procExit ends the module; the engine reports the call as a trap and resets the instance.
func procExit(ctx context.Context, m api.Module, s []uint64) {
	code := uint32(s[0])
	_ = m.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}
