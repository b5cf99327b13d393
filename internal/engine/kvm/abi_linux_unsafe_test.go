//go:build linux && amd64

package kvm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// kernelABI prints the ioctl numbers, constants and struct layouts this package hard-codes,
// from the kernel headers (linux-libc-dev).
const kernelABI = `#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#define P(x) printf("%s %lu\n", #x, (unsigned long)(x))
int main(void) {
P(KVM_GET_API_VERSION); P(KVM_CREATE_VM); P(KVM_CHECK_EXTENSION); P(KVM_GET_VCPU_MMAP_SIZE);
P(KVM_GET_SUPPORTED_CPUID); P(KVM_CREATE_VCPU); P(KVM_SET_USER_MEMORY_REGION); P(KVM_RUN);
P(KVM_GET_REGS); P(KVM_SET_REGS); P(KVM_GET_SREGS); P(KVM_SET_SREGS); P(KVM_SET_CPUID2);
P(KVM_API_VERSION); P(KVM_MEM_READONLY); P(KVM_SYNC_X86_REGS);
P(KVM_CAP_READONLY_MEM); P(KVM_CAP_IMMEDIATE_EXIT); P(KVM_CAP_SYNC_REGS);
P(KVM_EXIT_IO); P(KVM_EXIT_MMIO); P(KVM_EXIT_SHUTDOWN); P(KVM_EXIT_FAIL_ENTRY); P(KVM_EXIT_INTR);
P(KVM_EXIT_INTERNAL_ERROR);
P(sizeof(struct kvm_regs)); P(sizeof(struct kvm_sregs)); P(sizeof(struct kvm_segment));
P(sizeof(struct kvm_dtable)); P(sizeof(struct kvm_userspace_memory_region));
P(sizeof(struct kvm_cpuid_entry2)); P(sizeof(struct kvm_cpuid2));
P(offsetof(struct kvm_regs, rip)); P(offsetof(struct kvm_regs, r8));
P(offsetof(struct kvm_sregs, gdt)); P(offsetof(struct kvm_sregs, cr0)); P(offsetof(struct kvm_sregs, efer));
P(offsetof(struct kvm_segment, unusable));
P(offsetof(struct kvm_run, immediate_exit)); P(offsetof(struct kvm_run, exit_reason));
P(offsetof(struct kvm_run, mmio)); P(offsetof(struct kvm_run, mmio.data)); P(offsetof(struct kvm_run, mmio.len));
P(offsetof(struct kvm_run, mmio.is_write)); P(offsetof(struct kvm_run, internal.suberror));
P(offsetof(struct kvm_run, kvm_valid_regs)); P(offsetof(struct kvm_run, kvm_dirty_regs));
P(offsetof(struct kvm_run, s.regs.regs));
return 0; }
`

// TestKernelABI compares the hard-coded KVM ABI with the kernel headers, compiled with gcc.
func TestKernelABI(t *testing.T) {
	if _, err := os.Stat("/usr/include/linux/kvm.h"); err != nil {
		t.Skip("no kernel headers (linux-libc-dev)")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "abi.c"), filepath.Join(dir, "abi")
	if err := os.WriteFile(src, []byte(kernelABI), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	c := map[string]uint64{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		i := strings.LastIndexByte(line, ' ')
		c[line[:i]], _ = strconv.ParseUint(line[i+1:], 10, 64)
	}
	var run kvmRun
	var mmio kvmMMIOExit
	var regs kvmRegs
	var sregs kvmSregs
	var segm kvmSegment
	want := map[string]uint64{
		"KVM_GET_API_VERSION": kvmGetAPIVersion, "KVM_CREATE_VM": kvmCreateVM,
		"KVM_CHECK_EXTENSION": kvmCheckExtension, "KVM_GET_VCPU_MMAP_SIZE": kvmGetVCPUMmapSize,
		"KVM_GET_SUPPORTED_CPUID": kvmGetSupportedCPUID, "KVM_CREATE_VCPU": kvmCreateVCPU,
		"KVM_SET_USER_MEMORY_REGION": kvmSetUserMemoryRegion, "KVM_RUN": kvmRunIoctl,
		"KVM_GET_REGS": kvmGetRegs, "KVM_SET_REGS": kvmSetRegs, "KVM_GET_SREGS": kvmGetSregs,
		"KVM_SET_SREGS": kvmSetSregs, "KVM_SET_CPUID2": kvmSetCPUID2,
		"KVM_API_VERSION": kvmAPIVersion, "KVM_MEM_READONLY": kvmMemReadonly,
		"KVM_SYNC_X86_REGS": kvmSyncX86Regs, "KVM_CAP_READONLY_MEM": capReadonlyMem,
		"KVM_CAP_IMMEDIATE_EXIT": capImmediateExit, "KVM_CAP_SYNC_REGS": capSyncRegs,
		"KVM_EXIT_IO": exitIO, "KVM_EXIT_MMIO": exitMMIO, "KVM_EXIT_SHUTDOWN": exitShutdown,
		"KVM_EXIT_FAIL_ENTRY": exitFailEntry, "KVM_EXIT_INTR": exitIntr,
		"KVM_EXIT_INTERNAL_ERROR": exitInternalError,

		"sizeof(struct kvm_regs)":                     uint64(unsafe.Sizeof(kvmRegs{})),
		"sizeof(struct kvm_sregs)":                    uint64(unsafe.Sizeof(kvmSregs{})),
		"sizeof(struct kvm_segment)":                  uint64(unsafe.Sizeof(kvmSegment{})),
		"sizeof(struct kvm_dtable)":                   uint64(unsafe.Sizeof(kvmDTable{})),
		"sizeof(struct kvm_userspace_memory_region)":  uint64(unsafe.Sizeof(kvmMemRegion{})),
		"sizeof(struct kvm_cpuid_entry2)":             uint64(unsafe.Sizeof(kvmCPUIDEntry2{})),
		"sizeof(struct kvm_cpuid2)":                   uint64(unsafe.Offsetof(kvmCPUID2{}.Entries)),
		"offsetof(struct kvm_regs, rip)":              uint64(unsafe.Offsetof(regs.RIP)),
		"offsetof(struct kvm_regs, r8)":               uint64(unsafe.Offsetof(regs.R8)),
		"offsetof(struct kvm_sregs, gdt)":             uint64(unsafe.Offsetof(sregs.GDT)),
		"offsetof(struct kvm_sregs, cr0)":             uint64(unsafe.Offsetof(sregs.CR0)),
		"offsetof(struct kvm_sregs, efer)":            uint64(unsafe.Offsetof(sregs.EFER)),
		"offsetof(struct kvm_segment, unusable)":      uint64(unsafe.Offsetof(segm.Unusable)),
		"offsetof(struct kvm_run, immediate_exit)":    uint64(unsafe.Offsetof(run.ImmediateExit)),
		"offsetof(struct kvm_run, exit_reason)":       uint64(unsafe.Offsetof(run.ExitReason)),
		"offsetof(struct kvm_run, mmio)":              uint64(unsafe.Offsetof(run.Exit)),
		"offsetof(struct kvm_run, mmio.data)":         uint64(unsafe.Offsetof(run.Exit) + unsafe.Offsetof(mmio.Data)),
		"offsetof(struct kvm_run, mmio.len)":          uint64(unsafe.Offsetof(run.Exit) + unsafe.Offsetof(mmio.Len)),
		"offsetof(struct kvm_run, mmio.is_write)":     uint64(unsafe.Offsetof(run.Exit) + unsafe.Offsetof(mmio.IsWrite)),
		"offsetof(struct kvm_run, internal.suberror)": uint64(unsafe.Offsetof(run.Exit)),
		"offsetof(struct kvm_run, kvm_valid_regs)":    uint64(unsafe.Offsetof(run.ValidRegs)),
		"offsetof(struct kvm_run, kvm_dirty_regs)":    uint64(unsafe.Offsetof(run.DirtyRegs)),
		"offsetof(struct kvm_run, s.regs.regs)":       uint64(unsafe.Offsetof(run.Regs)),
	}
	for k, w := range want {
		got, ok := c[k]
		if !ok {
			t.Errorf("%s: not printed by the header probe", k)
			continue
		}
		if got != w {
			t.Errorf("%s = %#x in the kernel headers, %#x here", k, got, w)
		}
	}
	if len(c) != len(want) {
		t.Errorf("probe printed %d values, test checks %d", len(c), len(want))
	}
}
