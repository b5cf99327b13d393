//go:build linux && amd64

package kvm

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
)

// instance is one PAL instance: a VM (replaced by a fresh one after a fault) plus the call
// state. Not safe for concurrent use (engine.Instance).
type instance struct {
	mod       *module
	host      engine.Host
	lim       engine.Limits
	plan      ramPlan
	vm        *vm // nil after a fault or timeout: the next call loads a fresh VM
	mem       guestMem
	cs        engine.CallState
	closed    bool
	logBudget int
}

// maxLogPerCall bounds what one call may write to the visor's log.
const maxLogPerCall = 64 << 10

// TPM and Log make the instance the engine.Host that Dispatch sees: the PAL's log is copied
// out of its memory and bounded per call.
func (in *instance) TPM() *utpm.TPM { return in.host.TPM() }

func (in *instance) Log(msg []byte) {
	n := min(len(msg), in.logBudget)
	if n == 0 {
		return
	}
	in.logBudget -= n
	in.host.Log(append([]byte(nil), msg[:n]...))
}

// load gives the instance a freshly initialised VM.
func (in *instance) load() error {
	pool := in.mod.eng.pool
	v, err := pool.get()
	defer pool.refill()
	if err != nil {
		return err
	}
	if err := v.load(in.mod, in.plan); err != nil {
		in.mod.eng.release(v)
		return fmt.Errorf("kvm: load PAL: %w", err)
	}
	in.vm = v
	in.mem = guestMem{
		image: region{base: ImageBase, mem: in.mod.image},
		ram:   region{base: RAMBase, mem: v.ram, writable: true},
	}
	return nil
}

// Close implements engine.Instance.
func (in *instance) Close(ctx context.Context) error {
	if in.closed {
		return nil
	}
	in.closed = true
	if in.vm != nil {
		in.mod.eng.release(in.vm)
		in.vm = nil
	}
	return nil
}

// discard drops the VM after a fault or timeout; the next call loads a fresh one.
func (in *instance) discard() {
	in.mod.eng.release(in.vm)
	in.vm = nil
	in.mem = guestMem{}
}

// Call implements engine.Instance.
func (in *instance) Call(ctx context.Context, input []byte) (engine.Result, error) {
	if in.closed {
		return engine.Result{}, errClosed
	}
	if len(input) > in.lim.MaxInput {
		return engine.Result{}, fmt.Errorf("kvm: %w: %d bytes, limit %d", engine.ErrInputTooLarge, len(input), in.lim.MaxInput)
	}
	if err := ctx.Err(); err != nil {
		return engine.Result{}, fmt.Errorf("kvm: call: %w", err)
	}
	if in.vm == nil {
		if err := in.load(); err != nil {
			return engine.Result{}, fmt.Errorf("kvm: reset: %w", err)
		}
	}
	v := in.vm
	copy(v.ram[in.plan.inputGVA-RAMBase:], input)
	v.run.Regs = kvmRegs{
		RIP: in.mod.layout.entry, RSP: DataBase, RFLAGS: 2, // IF=0, IOPL=0
		RDI: in.plan.inputGVA, RSI: uint64(len(input)),
		RDX: in.plan.freeGVA, RCX: in.plan.inputGVA,
	}
	v.run.DirtyRegs = kvmSyncX86Regs
	v.run.ValidRegs = kvmSyncX86Regs
	in.cs = engine.CallState{MaxOutput: in.lim.MaxOutput}
	in.logBudget = maxLogPerCall

	// The vCPU runs on this goroutine's thread: the timeout signal must find it there.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	timeout := in.lim.Timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	k := kicker{run: v.run, tid: unix.Gettid(), armed: true}
	t := time.AfterFunc(timeout, k.kick)
	var stopCtx func() bool
	if ctx.Done() != nil {
		stopCtx = context.AfterFunc(ctx, k.kick)
	}
	status, err := in.loop(&k)
	t.Stop()
	if stopCtx != nil {
		stopCtx()
	}
	if k.disarm() {
		v.run.setImmediateExit(false)
	}
	if err != nil {
		if err == errKicked {
			rip := v.run.Regs.RIP
			in.discard()
			if ctx.Err() != nil && ctx.Err() != context.DeadlineExceeded {
				return engine.Result{}, fmt.Errorf("kvm: %w: %w (rip=%#x)", engine.ErrTimeout, ctx.Err(), rip)
			}
			return engine.Result{}, fmt.Errorf("kvm: %w after %v (rip=%#x)", engine.ErrTimeout, timeout, rip)
		}
		in.discard()
		return engine.Result{}, err
	}
	if in.cs.OutputTooLarge {
		return engine.Result{}, fmt.Errorf("kvm: %w (limit %d bytes)", engine.ErrOutputTooLarge, in.lim.MaxOutput)
	}
	return engine.Result{Status: status, Output: in.cs.Output}, nil
}

var errKicked = fmt.Errorf("kicked")

// loop runs the vCPU until the PAL stores its status to DoneGPA, serving hostcalls on the way.
// Any other exit is a fault of the PAL.
func (in *instance) loop(k *kicker) (int32, error) {
	v := in.vm
	for {
		if errno := runVCPU(v.vcpuFD); errno != 0 {
			if errno == unix.EINTR {
				if k.fired() {
					return 0, errKicked
				}
				continue // a signal that was not ours (the Go runtime's): resume
			}
			return 0, &FaultError{Reason: fmt.Sprintf("KVM_RUN failed: %v", errno), RIP: v.run.Regs.RIP, HasRIP: true}
		}
		r := v.run
		switch r.ExitReason {
		case exitMMIO:
			m := r.mmio()
			if m.IsWrite == 1 && m.PhysAddr == DoorbellGPA {
				r.Regs.RAX = uint64(in.hostcall(&r.Regs))
				r.DirtyRegs = kvmSyncX86Regs
				continue
			}
			if m.IsWrite == 1 && m.PhysAddr == DoneGPA && m.Len >= 4 {
				return int32(binary.LittleEndian.Uint32(m.Data[:4])), nil
			}
			what := "read of"
			if m.IsWrite == 1 {
				what = "write to"
			}
			return 0, &FaultError{Reason: what + " memory with no RAM or read-only memory", RIP: r.Regs.RIP, HasRIP: true, Addr: m.PhysAddr, HasAddr: true}
		case exitIntr:
			if k.fired() {
				return 0, errKicked
			}
		case exitShutdown:
			return 0, shutdownFault(v)
		case exitInternalError:
			ie := r.internal()
			return 0, &FaultError{Reason: fmt.Sprintf("KVM internal error %d", ie.Suberror), RIP: r.Regs.RIP, HasRIP: true}
		default:
			return 0, &FaultError{Reason: fmt.Sprintf("unexpected exit %d", r.ExitReason), RIP: r.Regs.RIP, HasRIP: true}
		}
	}
}

// shutdownFault describes a triple fault. PVM and Intel VMX keep the vCPU state, so RIP and CR2
// (the page-fault address) say where the PAL faulted. AMD SVM resets the vCPU on a shutdown
// (the VMCB is undefined after it): the state then is the reset state and says nothing.
func shutdownFault(v *vm) *FaultError {
	f := &FaultError{Reason: "triple fault (an exception in ring 3: page fault, privileged instruction, ...)"}
	sr, err := getSregs(v.vcpuFD)
	if err != nil || (sr.CS.Selector == 0xf000 && v.run.Regs.RIP == 0xfff0) {
		f.Reason += "; this KVM reset the vCPU, so where is unknown"
		return f
	}
	f.RIP, f.HasRIP = v.run.Regs.RIP, true
	if sr.CR2 != 0 {
		f.Addr, f.HasAddr = sr.CR2, true
	}
	return f
}

// hostcall serves utpm(op, req_ptr, req_len, resp_ptr, resp_cap) from the SysV argument
// registers (docs/abi.md §6) through engine.Hostcall, which applies the ABI's rules on buffers.
// The 32-bit arguments are the low halves of their registers: the x86-64 calling convention
// leaves the upper halves undefined.
func (in *instance) hostcall(r *kvmRegs) int64 {
	return engine.Hostcall(in, &in.cs, &in.mem, uint32(r.RDI), r.RSI, uint32(r.RDX), r.RCX, uint32(r.R8))
}

// kicker stops a running vCPU from another goroutine: immediate_exit makes the next KVM_RUN
// return at once, the signal interrupts the current one. Setting the flag first closes the race
// where the signal lands just before KVM_RUN.
type kicker struct {
	mu     sync.Mutex
	run    *kvmRun
	tid    int
	armed  bool
	kicked bool
}

func (k *kicker) kick() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.armed || k.kicked {
		return
	}
	k.kicked = true
	k.run.setImmediateExit(true)
	// SIGURG: the Go runtime already handles it (preemption) and ignores the ones it did not send.
	unix.Tgkill(pid, k.tid, unix.SIGURG)
}

func (k *kicker) fired() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kicked
}

// disarm stops further kicks and reports whether one happened (immediate_exit is then set).
func (k *kicker) disarm() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.armed = false
	return k.kicked
}
