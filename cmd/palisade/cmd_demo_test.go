package main

import (
	"strings"
	"testing"
)

// TestDemoSealAnywhere: "palisade demo seal", as README.md lists it, runs from any directory
// (it builds its PALs from the source tree, as demo tls and ssh do), not only from a checkout
// where scripts/demo.sh left build/pal.
func TestDemoSealAnywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two Go PALs (cached) and runs the demo: seconds")
	}
	t.Chdir(t.TempDir())
	code, out, errOut := capture(t, "demo", "seal", "--state-dir", t.TempDir())
	if code != 0 || !strings.Contains(out, "demo complete") || !strings.Contains(out, "(= PAL B: true)") {
		t.Fatalf("palisade demo seal outside the tree: status %d\n%s%s", code, out, errOut)
	}
}
