package wasm_test

import (
	"context"
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/conformance"
	"github.com/palisade-project/palisade/internal/engine/wasm"
)

func newEngine(t testing.TB) *wasm.Engine {
	t.Helper()
	e, err := wasm.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func TestConformanceC(t *testing.T) {
	conformance.Run(t, conformance.Target{
		Name: "wasm-c", Engine: newEngine(t), Build: conformance.BuildCWasm,
		OOMError: engine.ErrOutOfMemory,
	})
}

func TestConformanceGo(t *testing.T) {
	conformance.Run(t, conformance.Target{
		Name: "wasm-go", Engine: newEngine(t), Build: conformance.BuildGo,
		OOMError: engine.ErrOutOfMemory,
	})
}
