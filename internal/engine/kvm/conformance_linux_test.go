//go:build linux && amd64

package kvm

import (
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/conformance"
	"github.com/palisade-project/palisade/pal"
)

// TestConformance runs the shared engine suite on the native C test PAL.
func TestConformance(t *testing.T) {
	e := newEngine(t)
	conformance.Run(t, conformance.Target{Name: "kvm-c", Engine: e, Build: conformance.BuildCNative, OOMError: engine.ErrTrap})
}

// TestConformancePALBuilds checks, without KVM, that the suite's C PAL builds for x86-64 and
// that the engine accepts its layout.
func TestConformancePALBuilds(t *testing.T) {
	for _, v := range []string{"a", "b"} {
		img, err := pal.Parse(conformance.BuildCNative(t, v))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := planImage(img); err != nil {
			t.Errorf("variant %s: %v", v, err)
		}
	}
}
