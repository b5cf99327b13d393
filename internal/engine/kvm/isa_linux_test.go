//go:build linux && amd64

package kvm

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/kvm/cbuild"
	"github.com/palisade-project/palisade/pal"
)

// isaPAL builds testdata/isa.c with flags (through the build cache, which the QEMU rig fills
// on the host).
func isaPAL(tb testing.TB, flags ...string) *pal.Image {
	tb.Helper()
	b, err := cbuild.BuildCached(context.Background(), []string{"testdata/isa.c"}, flags...)
	if err != nil {
		tb.Skipf("cannot build testdata/isa.c: %v", err)
	}
	img, err := pal.Parse(b)
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

// stackProtector are the flags of a PAL built with a stack protector (and its own
// __stack_chk_fail, which the SDK does not provide).
var stackProtector = []string{"-fstack-protector-all", "-DSTACK_PROTECTOR"}

// TestISAPALBuilds builds the PALs of TestInstructionSets and TestStackProtector without KVM
// (the QEMU rig runs it on the host, to fill the build cache).
func TestISAPALBuilds(t *testing.T) {
	for _, flags := range [][]string{nil, stackProtector} {
		if _, err := planImage(isaPAL(t, flags...)); err != nil {
			t.Errorf("flags %q: %v", flags, err)
		}
	}
}

func registerImage(tb testing.TB, e *Engine, img *pal.Image) engine.Instance {
	tb.Helper()
	ctx := context.Background()
	m, err := e.Compile(ctx, img)
	if err != nil {
		tb.Fatal(err)
	}
	in, err := m.Instantiate(ctx, newHost(tb, img.Measurement), engine.Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { in.Close(ctx); m.Close(ctx) })
	return in
}

// TestInstructionSets is the experiment behind docs/abi.md §6's list of instruction sets. CPUID
// is the host's as KVM supports it (KVM_GET_SUPPORTED_CPUID, set unchanged), and CR4 has
// OSFXSR and OSXMMEXCPT but not OSXSAVE, so XCR0 stays x87-only:
//   - x87 and SSE2 always run;
//   - a legacy-encoded instruction set (SSE3 to SSE4.2, POPCNT, AES-NI, PCLMULQDQ, MOVBE,
//     CMPXCHG16B, RDRAND, SHA, ADX), or a VEX-encoded integer one (BMI1, BMI2, which in
//     Intel's and AMD's manuals do not depend on OSXSAVE or XCR0), runs exactly when CPUID
//     reports it;
//   - VEX- and EVEX-encoded vector instructions (AVX, AVX2, FMA, F16C, AVX-512) and XGETBV
//     fault whatever CPUID says, and CPUID.1:ECX.OSXSAVE is 0, which is how software that
//     follows the rules knows.
func TestInstructionSets(t *testing.T) {
	e := newEngine(t)
	in := registerImage(t, e, isaPAL(t))
	cpuid := func(leaf, sub uint32) [4]uint32 {
		t.Helper()
		q := append([]byte{'c'}, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, leaf), sub)...)
		r, err := in.Call(context.Background(), q)
		if err != nil || r.Status != 0 || len(r.Output) != 16 {
			t.Fatalf("cpuid %#x: %+v %v", leaf, r, err)
		}
		var v [4]uint32
		for i := range v {
			v[i] = binary.LittleEndian.Uint32(r.Output[4*i:])
		}
		return v
	}
	const ebx, ecx, edx = 1, 2, 3
	l1, l7 := cpuid(1, 0), cpuid(7, 0)
	t.Logf("CPUID.1: ecx %#08x edx %#08x; CPUID.7.0: ebx %#08x ecx %#08x", l1[ecx], l1[edx], l7[ebx], l7[ecx])
	if l1[ecx]&(1<<27) != 0 {
		t.Error("CPUID.1:ECX.OSXSAVE is set: the guest would believe AVX usable")
	}
	const (
		always = iota // runs whatever CPUID says
		cpu           // runs exactly when CPUID reports it
		never         // faults whatever CPUID says
	)
	type bit struct {
		leaf [4]uint32
		reg  int
		n    uint
	}
	tests := []struct {
		probe byte
		name  string
		rule  int
		bit   bit
	}{
		{0, "SSE2", always, bit{l1, edx, 26}},
		{21, "x87", always, bit{l1, edx, 0}},
		{1, "SSE3", cpu, bit{l1, ecx, 0}},
		{2, "SSSE3", cpu, bit{l1, ecx, 9}},
		{3, "SSE4.1", cpu, bit{l1, ecx, 19}},
		{4, "SSE4.2", cpu, bit{l1, ecx, 20}},
		{5, "POPCNT", cpu, bit{l1, ecx, 23}},
		{6, "AES-NI", cpu, bit{l1, ecx, 25}},
		{7, "PCLMULQDQ", cpu, bit{l1, ecx, 1}},
		{8, "MOVBE", cpu, bit{l1, ecx, 22}},
		{9, "CMPXCHG16B", cpu, bit{l1, ecx, 13}},
		{10, "RDRAND", cpu, bit{l1, ecx, 30}},
		{11, "SHA", cpu, bit{l7, ebx, 29}},
		{12, "ADX", cpu, bit{l7, ebx, 19}},
		{13, "BMI1", cpu, bit{l7, ebx, 3}},
		{14, "BMI2", cpu, bit{l7, ebx, 8}},
		{15, "AVX", never, bit{l1, ecx, 28}},
		{16, "AVX2", never, bit{l7, ebx, 5}},
		{17, "FMA", never, bit{l1, ecx, 12}},
		{18, "F16C", never, bit{l1, ecx, 29}},
		{19, "AVX-512F", never, bit{l7, ebx, 16}},
		{20, "XGETBV", never, bit{l1, ecx, 26}},
	}
	for _, tc := range tests {
		reported := tc.bit.leaf[tc.bit.reg]&(1<<tc.bit.n) != 0
		r, err := in.Call(context.Background(), []byte{'p', tc.probe})
		if err == nil && r.Status != 0 {
			t.Fatalf("%s: status %d", tc.name, r.Status)
		}
		if err != nil && !errors.Is(err, engine.ErrTrap) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ran := err == nil
		t.Logf("%-10s CPUID %-5v ran %v", tc.name, reported, ran)
		switch {
		case tc.rule == always && !ran:
			t.Errorf("%s faulted: %v", tc.name, err)
		case tc.rule == cpu && ran != reported:
			t.Errorf("%s: CPUID reports %v but it ran: %v (%v)", tc.name, reported, ran, err)
		case tc.rule == never && ran:
			t.Errorf("%s ran (CPUID reports %v): XCR0 is not set up, it must fault", tc.name, reported)
		}
	}
}

// TestStackProtector is the experiment behind docs/abi.md §6's rule that native PALs are built
// with -fno-stack-protector: there is no TLS (the %fs base is 0), so the canary read at
// %fs:0x28 is a read of unmapped memory, and the very first call traps.
func TestStackProtector(t *testing.T) {
	e := newEngine(t)
	in := registerImage(t, e, isaPAL(t, stackProtector...))
	_, err := in.Call(context.Background(), []byte{'n'})
	if !errors.Is(err, engine.ErrTrap) {
		t.Fatalf("call of a PAL built with a stack protector: %v, want ErrTrap", err)
	}
	var f *FaultError
	if errors.As(err, &f) && f.HasAddr && f.Addr != 0x28 {
		t.Errorf("fault address %#x, want the canary's 0x28", f.Addr)
	}
	t.Logf("stack protector: %v", err)
	// Without one, the same source runs.
	if r, err := registerImage(t, e, isaPAL(t)).Call(context.Background(), []byte{'n'}); err != nil || r.Status != 0 {
		t.Fatalf("without a stack protector: %+v %v", r, err)
	}
}
