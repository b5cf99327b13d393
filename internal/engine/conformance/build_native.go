package conformance

import (
	"context"
	"testing"

	"github.com/palisade-project/palisade/internal/engine/kvm/cbuild"
)

// BuildCNative builds the C test PAL for the kvm engine: a static freestanding x86-64 ELF
// (Debian gcc, sdk/c with sdk/c/x86_64's entry stub and linker script).
func BuildCNative(t testing.TB, variant string) []byte {
	t.Helper()
	b, err := builds.get("c-native/"+variant, func() ([]byte, error) {
		return cbuild.BuildCached(context.Background(), []string{CSource()},
			"-Wextra", "-Werror", "-D"+VariantDefine(variant))
	})
	if err != nil {
		t.Fatalf("build C PAL (x86-64, variant %q): %v", variant, err)
	}
	return b
}
