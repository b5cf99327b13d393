package kvm

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/palisade-project/palisade/internal/engine/kvm/cbuild"
	"github.com/palisade-project/palisade/pal"
)

var testPAL struct {
	once sync.Once
	elf  []byte
	err  error
}

// nativeTestPAL builds testdata/hostile.c once per test binary.
func nativeTestPAL() ([]byte, error) {
	testPAL.once.Do(func() {
		// A prebuilt PAL, for running these tests on a machine without a compiler.
		if p := os.Getenv("PALISADE_KVM_TEST_PAL"); p != "" {
			testPAL.elf, testPAL.err = os.ReadFile(p)
			return
		}
		testPAL.elf, testPAL.err = cbuild.BuildCached(context.Background(), []string{"testdata/hostile.c"})
	})
	return testPAL.elf, testPAL.err
}

func needPAL(tb testing.TB) *pal.Image {
	tb.Helper()
	b, err := nativeTestPAL()
	if err != nil {
		tb.Skipf("cannot build the native test PAL: %v", err)
	}
	img, err := pal.Parse(b)
	if err != nil {
		tb.Fatalf("pal.Parse: %v", err)
	}
	return img
}

// TestNativeSDK checks what the SDK's linker script and entry stub produce, without KVM.
func TestNativeSDK(t *testing.T) {
	img := needPAL(t)
	l, err := planImage(img)
	if err != nil {
		t.Fatalf("the SDK's own layout is refused: %v", err)
	}
	if l.entry != ImageBase {
		t.Errorf("entry %#x, want the stub at %#x", l.entry, ImageBase)
	}
	if len(l.rw) != 1 || l.rw[0].Vaddr != DataBase {
		t.Errorf("writable segments %+v, want one at %#x", l.rw, DataBase)
	}
	// The same sources build to the same measurement (no build IDs, no timestamps).
	b2, err := cbuild.Build(context.Background(), t.TempDir(), "again.elf", []string{"testdata/hostile.c"})
	if err != nil {
		t.Fatal(err)
	}
	img2, err := pal.Parse(b2)
	if err != nil {
		t.Fatal(err)
	}
	if img2.Measurement != img.Measurement {
		t.Errorf("rebuild changed the measurement: %s vs %s", img.Measurement, img2.Measurement)
	}
}
