package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/engine/kvm"
)

// TestRunNativeWithoutKVM: "palisade run x.elf" picks the kvm engine from the image; on a
// machine that cannot run it the error says why (no /dev/kvm), not that kvm is an unknown
// engine. Where /dev/kvm works, the PAL runs.
func TestRunNativeWithoutKVM(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed: ", err)
	}
	img, err := apps.BuildCNull(context.Background(), "kvm")
	if err != nil {
		t.Fatal(err)
	}
	elf := filepath.Join(t.TempDir(), "null.elf")
	if err := os.WriteFile(elf, img, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := capture(t, "run", elf, "--state-dir", t.TempDir())
	if e, err := kvm.New(); err == nil {
		e.Close(context.Background())
		if code != 0 {
			t.Fatalf("run %s on a machine with KVM: status %d\n%s%s", elf, code, out, errOut)
		}
		return
	}
	if code != exitRefused || !strings.Contains(errOut, "/dev/kvm") || strings.Contains(errOut, "unknown engine") {
		t.Fatalf("run %s without KVM: status %d, want %d and the reason (/dev/kvm)\n%s%s", elf, code, exitRefused, out, errOut)
	}
}
