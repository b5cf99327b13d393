//go:build linux && amd64

package kvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/pal"
)

// Engine runs ELF PALs, each instance in its own KVM virtual machine.
type Engine struct {
	kvmFD    int
	runSize  int
	cpuid    *kvmCPUID2
	pool     *pool
	reapMu   sync.Mutex
	reapQ    chan *vm // VMs to destroy off the caller's path
	reapDone chan struct{}
	closed   bool // under reapMu
}

var _ engine.Engine = (*Engine)(nil)

// Option configures New.
type Option func(*config)

type config struct{ poolSize int }

// WithPoolSize sets how many VMs the engine keeps created ahead of registrations (default 4;
// 0 disables the pool, so every registration creates its VM).
func WithPoolSize(n int) Option { return func(c *config) { c.poolSize = max(n, 0) } }

// New opens /dev/kvm. Without a usable KVM it returns an error wrapping engine.ErrNotSupported.
func New(opts ...Option) (*Engine, error) {
	cfg := config{poolSize: 4}
	for _, o := range opts {
		o(&cfg)
	}
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: open /dev/kvm: %w (%w)", engine.ErrNotSupported, err)
	}
	e := &Engine{kvmFD: fd}
	if err := e.probe(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	e.reapQ = make(chan *vm, 64)
	e.reapDone = make(chan struct{})
	go e.reaper()
	e.pool = newPool(cfg.poolSize, e.newVM)
	return e, nil
}

func (e *Engine) probe() error {
	if v, err := ioctl(e.kvmFD, kvmGetAPIVersion, 0); err != nil || v != kvmAPIVersion {
		return fmt.Errorf("kvm: %w: API version %d (%v), want %d", engine.ErrNotSupported, v, err, kvmAPIVersion)
	}
	for _, c := range []struct {
		id   uintptr
		name string
	}{{capReadonlyMem, "KVM_CAP_READONLY_MEM"}, {capImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"}, {capSyncRegs, "KVM_CAP_SYNC_REGS"}} {
		v, err := ioctl(e.kvmFD, kvmCheckExtension, c.id)
		if err != nil || v == 0 || (c.id == capSyncRegs && v&kvmSyncX86Regs == 0) {
			return fmt.Errorf("kvm: %w: %s is missing", engine.ErrNotSupported, c.name)
		}
	}
	sz, err := ioctl(e.kvmFD, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("kvm: KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	e.runSize = int(sz)
	if e.cpuid, err = getSupportedCPUID(e.kvmFD); err != nil {
		return fmt.Errorf("kvm: KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	return nil
}

// Name implements engine.Engine.
func (e *Engine) Name() string { return "kvm" }

// Close destroys the pooled VMs and waits until every VM handed back has been destroyed.
// Modules and instances must be closed first.
func (e *Engine) Close(ctx context.Context) error {
	e.reapMu.Lock()
	if e.closed {
		e.reapMu.Unlock()
		return nil
	}
	e.closed = true
	e.reapMu.Unlock()
	for _, v := range e.pool.close() {
		v.destroy()
	}
	close(e.reapQ)
	<-e.reapDone
	return unix.Close(e.kvmFD)
}

// release destroys v in the background: VM teardown (hundreds of µs) is not on the caller's path.
func (e *Engine) release(v *vm) {
	e.reapMu.Lock()
	defer e.reapMu.Unlock()
	if e.closed {
		v.destroy()
		return
	}
	e.reapQ <- v
}

func (e *Engine) reaper() {
	for v := range e.reapQ {
		v.destroy()
	}
	close(e.reapDone)
}

// Compile checks the image's layout and loads its read-only segments into memory that every
// instance maps read-only.
func (e *Engine) Compile(ctx context.Context, img *pal.Image) (engine.Module, error) {
	l, err := planImage(img)
	if err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(-1, 0, int(l.roEnd-ImageBase), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("kvm: image memory: %w", err)
	}
	l.fillImage(mem)
	// The image is immutable from here on, for the host as well.
	if err := unix.Mprotect(mem, unix.PROT_READ); err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("kvm: image memory: %w", err)
	}
	m := &module{eng: e, layout: l, image: mem, measurement: img.Measurement}
	m.refs.Store(1)
	return m, nil
}

type module struct {
	eng         *Engine
	layout      *imageLayout
	image       []byte // read-only; mapped into the VM of every instance
	measurement pal.Measurement
	refs        atomic.Int32 // the module itself + one per VM that maps image
	closed      atomic.Bool
}

func (m *module) ref() { m.refs.Add(1) }

func (m *module) unref() {
	if m.refs.Add(-1) == 0 {
		unix.Munmap(m.image)
	}
}

// Close implements engine.Module. The image stays mapped until the last VM using it is gone.
func (m *module) Close(ctx context.Context) error {
	if m.closed.CompareAndSwap(false, true) {
		m.unref()
	}
	return nil
}

// Instantiate implements engine.Module: it takes a VM from the pool and loads the PAL into it.
func (m *module) Instantiate(ctx context.Context, host engine.Host, lim engine.Limits) (engine.Instance, error) {
	if m.closed.Load() {
		return nil, errors.New("kvm: instantiate: module is closed")
	}
	lim = lim.WithDefaults()
	plan, err := planRAM(m.layout, lim)
	if err != nil {
		return nil, fmt.Errorf("kvm: instantiate: %w", err)
	}
	in := &instance{mod: m, host: host, lim: lim, plan: plan}
	if err := in.load(); err != nil {
		return nil, err
	}
	return in, nil
}

// vm is one KVM virtual machine with one vCPU.
type vm struct {
	fd, vcpuFD int
	runMem     []byte
	run        *kvmRun
	sys        []byte // slot 0: GDT and page tables, not mapped for the guest
	ram        []byte // slot 2: RAM
	mod        *module
}

const (
	slotSys   = 0
	slotImage = 1
	slotRAM   = 2
)

// newVM creates a VM with its vCPU and system slot, and RAM of the default size: the part of
// registration that does not depend on the PAL.
func (e *Engine) newVM() (*vm, error) {
	fd, err := ioctl(e.kvmFD, kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_CREATE_VM: %w", err)
	}
	v := &vm{fd: int(fd), vcpuFD: -1}
	fail := func(what string, err error) (*vm, error) {
		v.destroy()
		return nil, fmt.Errorf("kvm: %s: %w", what, err)
	}
	if v.sys, err = anonMap(sysSize); err != nil {
		return fail("system memory", err)
	}
	// Not KVM_MEM_READONLY: AMD's nested paging treats the guest's page-table walk as a write
	// and faults on read-only slots (see docs/kvm.md). The guest cannot reach this slot anyway:
	// its page tables do not map it.
	if err := setMemRegion(v.fd, slotSys, 0, v.sys, 0); err != nil {
		return fail("system slot", err)
	}
	if err := v.setRAM(uint64(engine.DefaultLimits.MemoryMiB) << 20); err != nil {
		return fail("RAM", err)
	}
	vcpu, err := ioctl(v.fd, kvmCreateVCPU, 0)
	if err != nil {
		return fail("KVM_CREATE_VCPU", err)
	}
	v.vcpuFD = int(vcpu)
	if v.runMem, v.run, err = mapRun(v.vcpuFD, e.runSize); err != nil {
		return fail("map kvm_run", err)
	}
	if err := setCPUID(v.vcpuFD, e.cpuid); err != nil {
		return fail("KVM_SET_CPUID2", err)
	}
	return v, nil
}

// setRAM gives the VM fresh, zeroed RAM of size bytes. Pages are allocated when touched.
func (v *vm) setRAM(size uint64) error {
	if v.ram != nil {
		if err := setMemRegion(v.fd, slotRAM, RAMBase, nil, 0); err != nil {
			return err
		}
		unix.Munmap(v.ram)
		v.ram = nil
	}
	mem, err := anonMap(int(size))
	if err != nil {
		return err
	}
	if err := setMemRegion(v.fd, slotRAM, RAMBase, mem, 0); err != nil {
		unix.Munmap(mem)
		return err
	}
	v.ram = mem
	return nil
}

func anonMap(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
}

// destroy releases everything the VM holds. A VM is never reused after it ran a PAL: no state
// (registers, FPU, memory) can leak from one PAL or one reset to the next.
func (v *vm) destroy() {
	if v.runMem != nil {
		unix.Munmap(v.runMem)
	}
	if v.vcpuFD >= 0 {
		unix.Close(v.vcpuFD)
	}
	unix.Close(v.fd)
	for _, m := range [][]byte{v.sys, v.ram} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	if v.mod != nil {
		v.mod.unref()
	}
}

// load puts the PAL into a VM from the pool: image slot, page tables, RAM contents, long-mode
// ring-3 segment state.
func (v *vm) load(m *module, plan ramPlan) error {
	if uint64(len(v.ram)) != plan.size {
		if err := v.setRAM(plan.size); err != nil {
			return fmt.Errorf("RAM: %w", err)
		}
	}
	if err := setMemRegion(v.fd, slotImage, ImageBase, m.image, kvmMemReadonly); err != nil {
		return fmt.Errorf("image slot: %w", err)
	}
	m.ref()
	v.mod = m
	buildSys(v.sys, m.layout, plan)
	m.layout.fillRAM(v.ram)
	sr := longModeSregs()
	if err := setSregs(v.vcpuFD, &sr); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	return nil
}

// longModeSregs is the vCPU's segment and control state: 64-bit mode, paging on, ring 3, no
// IDT (any exception escalates to a triple fault, which KVM reports as a shutdown).
func longModeSregs() kvmSregs {
	code := kvmSegment{Limit: 0xffffffff, Selector: selUserCode, Type: 11, Present: 1, DPL: 3, S: 1, L: 1, G: 1}
	data := kvmSegment{Limit: 0xffffffff, Selector: selUserData, Type: 3, Present: 1, DPL: 3, S: 1, DB: 1, G: 1}
	return kvmSregs{
		CS: code, DS: data, ES: data, FS: data, GS: data, SS: data,
		TR:       kvmSegment{Limit: 0x67, Selector: selTSS, Type: 11, Present: 1},
		LDT:      kvmSegment{Type: 2, Present: 1, Unusable: 1},
		GDT:      kvmDTable{Base: gdtGPA, Limit: gdtLimit},
		IDT:      kvmDTable{},
		CR0:      0x80050033, // PG AM WP NE ET MP PE
		CR3:      pml4GPA,
		CR4:      0x620, // PAE OSFXSR OSXMMEXCPT
		EFER:     0xd00, // NXE LMA LME
		APICBase: 0xfee00900,
	}
}

// pool keeps VMs created ahead of registrations, filled by one background goroutine.
type pool struct {
	ready  chan *vm
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}
	create func() (*vm, error)
}

func newPool(size int, create func() (*vm, error)) *pool {
	p := &pool{ready: make(chan *vm, size), wake: make(chan struct{}, 1), quit: make(chan struct{}),
		done: make(chan struct{}), create: create}
	go p.fill()
	return p
}

func (p *pool) fill() {
	defer close(p.done)
	for {
		for len(p.ready) < cap(p.ready) {
			select {
			case <-p.quit:
				return
			default:
			}
			v, err := p.create()
			if err != nil {
				break // retried at the next get; the caller then sees the error itself
			}
			p.ready <- v
		}
		select {
		case <-p.wake:
		case <-p.quit:
			return
		}
	}
}

// get returns a pooled VM, or creates one if the pool is empty. It does not refill the pool:
// the caller calls refill once its registration is done, so that creating the replacement VM
// (mmap and KVM locks, CPU) does not compete with the registration itself.
func (p *pool) get() (*vm, error) {
	select {
	case v := <-p.ready:
		return v, nil
	default:
		return p.create()
	}
}

// refill wakes the filler.
func (p *pool) refill() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// close stops the filler and returns the VMs still pooled.
func (p *pool) close() []*vm {
	close(p.quit)
	<-p.done
	var vs []*vm
	for {
		select {
		case v := <-p.ready:
			vs = append(vs, v)
		default:
			return vs
		}
	}
}

var errClosed = fmt.Errorf("kvm: %w", engine.ErrInstanceClosed)

var pid = os.Getpid()
