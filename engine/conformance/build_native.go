package conformance

import (
	"context"
	"os"
	"testing"

	"palisade/engine/kvm/cbuild"
)

// BuildCNative builds the C test PAL for the kvm engine: a static freestanding x86-64 ELF
// (Debian gcc, sdk/c with sdk/c/x86_64's entry stub and linker script).
func BuildCNative(t testing.TB, variant string) []byte {
	t.Helper()
	b, err := builds.get("c-native/"+variant, func() ([]byte, error) {
		dir, err := os.MkdirTemp("", "palisade-conformance-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		return cbuild.Build(context.Background(), dir, "conformance.elf", []string{CSource()},
			"-Wextra", "-Werror", "-D"+VariantDefine(variant))
	})
	if err != nil {
		t.Fatalf("build C PAL (x86-64, variant %q): %v", variant, err)
	}
	return b
}
