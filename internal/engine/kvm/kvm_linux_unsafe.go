//go:build linux && amd64

package kvm

// The KVM ioctl interface (linux/kvm.h, asm/kvm.h). Every use of unsafe in this package is in
// this file. TestKernelABI checks the numbers and layouts against the kernel headers.

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	kvmGetAPIVersion       = 0xae00
	kvmCreateVM            = 0xae01
	kvmCheckExtension      = 0xae03
	kvmGetVCPUMmapSize     = 0xae04
	kvmGetSupportedCPUID   = 0xc008ae05
	kvmCreateVCPU          = 0xae41
	kvmSetUserMemoryRegion = 0x4020ae46
	kvmRunIoctl            = 0xae80
	kvmGetRegs             = 0x8090ae81
	kvmSetRegs             = 0x4090ae82
	kvmGetSregs            = 0x8138ae83
	kvmSetSregs            = 0x4138ae84
	kvmSetCPUID2           = 0x4008ae90

	kvmAPIVersion    = 12
	kvmMemReadonly   = 1 << 1
	kvmSyncX86Regs   = 1 << 0
	capReadonlyMem   = 81
	capImmediateExit = 136
	capSyncRegs      = 74

	exitIO            = 2
	exitMMIO          = 6
	exitShutdown      = 8
	exitFailEntry     = 9
	exitIntr          = 10
	exitInternalError = 17
)

type kvmRegs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

type kvmSegment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Type                           uint8
	Present, DPL, DB, S, L, G, AVL uint8
	Unusable                       uint8
	_                              uint8
}

type kvmDTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

type kvmSregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT kvmSegment
	GDT, IDT                        kvmDTable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER, APICBase                  uint64
	InterruptBitmap                 [4]uint64
}

type kvmMemRegion struct {
	Slot, Flags            uint32
	GuestPhys, Size, UAddr uint64
}

type kvmCPUIDEntry2 struct {
	Function, Index, Flags, EAX, EBX, ECX, EDX uint32
	_                                          [3]uint32
}

const maxCPUIDEntries = 256

type kvmCPUID2 struct {
	Nent, _ uint32
	Entries [maxCPUIDEntries]kvmCPUIDEntry2
}

// kvmRun is the start of the shared kvm_run page, up to the synced registers.
type kvmRun struct {
	RequestInterruptWindow uint8
	ImmediateExit          uint8
	_                      [6]uint8
	ExitReason             uint32
	ReadyForIntrInjection  uint8
	IFFlag                 uint8
	Flags                  uint16
	CR8, APICBase          uint64
	Exit                   [256]byte // the exit union, at 0x20
	ValidRegs              uint64    // kvm_valid_regs, 0x120
	DirtyRegs              uint64    // kvm_dirty_regs, 0x128
	Regs                   kvmRegs   // s.regs, 0x130
}

type kvmMMIOExit struct {
	PhysAddr uint64
	Data     [8]byte
	Len      uint32
	IsWrite  uint8
}

type kvmInternalExit struct {
	Suberror, NData uint32
	Data            [16]uint64
}

func (r *kvmRun) mmio() *kvmMMIOExit         { return (*kvmMMIOExit)(unsafe.Pointer(&r.Exit[0])) }
func (r *kvmRun) internal() *kvmInternalExit { return (*kvmInternalExit)(unsafe.Pointer(&r.Exit[0])) }

// setImmediateExit sets or clears immediate_exit from any goroutine while the vCPU thread may be
// inside KVM_RUN. The first word of kvm_run holds request_interrupt_window (always 0 here),
// immediate_exit and padding.
func (r *kvmRun) setImmediateExit(on bool) {
	var v uint32
	if on {
		v = 1 << 8
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(r)), v)
}

// ioctl and ioctlPtr retry on EINTR, a bounded number of times: the Go runtime signals its
// threads (preemption) and some KVM ioctls, KVM_CREATE_VM among them, can be interrupted before
// they did anything.
const eintrRetries = 100

func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	for i := 0; ; i++ {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e == 0 {
			return r, nil
		}
		if e != unix.EINTR || i == eintrRetries {
			return r, e
		}
	}
}

// ioctlPtr converts arg in the Syscall call itself, as unsafe.Pointer's rules require.
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	for i := 0; ; i++ {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == 0 {
			return nil
		}
		if e != unix.EINTR || i == eintrRetries {
			return e
		}
	}
}

// runVCPU is one KVM_RUN. A blocking syscall, so the Go scheduler can run other goroutines
// while the PAL computes.
func runVCPU(fd int) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmRunIoctl, 0)
	return e
}

func getSupportedCPUID(kvmFD int) (*kvmCPUID2, error) {
	c := &kvmCPUID2{Nent: maxCPUIDEntries}
	return c, ioctlPtr(kvmFD, kvmGetSupportedCPUID, unsafe.Pointer(c))
}

func setCPUID(vcpuFD int, c *kvmCPUID2) error {
	return ioctlPtr(vcpuFD, kvmSetCPUID2, unsafe.Pointer(c))
}

// setMemRegion maps mem at guest physical gpa as slot (len(mem) == 0 deletes the slot).
// mem must stay mapped while the slot exists.
func setMemRegion(vmFD int, slot uint32, gpa uint64, mem []byte, flags uint32) error {
	r := kvmMemRegion{Slot: slot, Flags: flags, GuestPhys: gpa, Size: uint64(len(mem))}
	if len(mem) > 0 {
		r.UAddr = uint64(uintptr(unsafe.Pointer(&mem[0])))
	}
	return ioctlPtr(vmFD, kvmSetUserMemoryRegion, unsafe.Pointer(&r))
}

func mapRun(vcpuFD, size int) ([]byte, *kvmRun, error) {
	mem, err := unix.Mmap(vcpuFD, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	if size < int(unsafe.Sizeof(kvmRun{})) {
		unix.Munmap(mem)
		return nil, nil, unix.EINVAL
	}
	return mem, (*kvmRun)(unsafe.Pointer(&mem[0])), nil
}

func getSregs(vcpuFD int) (kvmSregs, error) {
	var s kvmSregs
	return s, ioctlPtr(vcpuFD, kvmGetSregs, unsafe.Pointer(&s))
}

func setSregs(vcpuFD int, s *kvmSregs) error {
	return ioctlPtr(vcpuFD, kvmSetSregs, unsafe.Pointer(s))
}
