package wasm_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/conformance"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/pal"
)

var builds = []struct {
	name  string
	build func(testing.TB, string) []byte
}{
	{"C", conformance.BuildCWasm},
	{"Go", conformance.BuildGo},
}

func parse(b testing.TB, img []byte) *pal.Image {
	p, err := pal.Parse(img)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	for _, bl := range builds {
		img := parse(b, bl.build(b, "a"))
		compile := func(b *testing.B, e *wasm.Engine) {
			m, err := e.Compile(ctx, img)
			if err != nil {
				b.Fatal(err)
			}
			m.Close(ctx)
		}
		b.Run(bl.name+"/cold", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				e, err := wasm.New()
				if err != nil {
					b.Fatal(err)
				}
				compile(b, e)
				e.Close(ctx)
			}
		})
		b.Run(bl.name+"/cache-dir", func(b *testing.B) {
			dir := b.TempDir()
			e, _ := wasm.New(wasm.WithCacheDir(dir))
			compile(b, e) // fill the cache
			e.Close(ctx)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e, err := wasm.New(wasm.WithCacheDir(dir))
				if err != nil {
					b.Fatal(err)
				}
				compile(b, e)
				e.Close(ctx)
			}
		})
		b.Run(bl.name+"/same-engine", func(b *testing.B) {
			e := newEngine(b)
			compile(b, e)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				compile(b, e)
			}
		})
	}
}

type benchPAL struct {
	mod  engine.Module
	host *conformance.Host
}

func setup(b *testing.B, build func(testing.TB, string) []byte) (*wasm.Engine, *benchPAL) {
	ctx := context.Background()
	e := newEngine(b)
	img := parse(b, build(b, "a"))
	mod, err := e.Compile(ctx, img)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mod.Close(ctx) })
	plat := conformance.NewPlatform(b)
	return e, &benchPAL{mod: mod, host: &conformance.Host{T: plat.NewTPM(utpm.Digest(img.Measurement))}}
}

func (p *benchPAL) instance(b *testing.B) engine.Instance {
	inst, err := p.mod.Instantiate(context.Background(), p.host, engine.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { inst.Close(context.Background()) })
	return inst
}

func BenchmarkInstantiate(b *testing.B) {
	ctx := context.Background()
	for _, bl := range builds {
		b.Run(bl.name, func(b *testing.B) {
			_, p := setup(b, bl.build)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				inst, err := p.mod.Instantiate(ctx, p.host, engine.Limits{})
				if err != nil {
					b.Fatal(err)
				}
				inst.Close(ctx)
			}
		})
	}
}

func benchCall(b *testing.B, inst engine.Instance, in []byte) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := inst.Call(ctx, in)
		if err != nil || r.Status != 0 {
			b.Fatalf("%v status %d", err, r.Status)
		}
	}
}

// BenchmarkNullCall is a call of a warm instance that does nothing (goal: ≤ 2 µs).
func BenchmarkNullCall(b *testing.B) {
	for _, bl := range builds {
		b.Run(bl.name, func(b *testing.B) {
			_, p := setup(b, bl.build)
			benchCall(b, p.instance(b), []byte{'n'})
		})
	}
}

// BenchmarkExtendCall is a call that extends a PCR through the hostcall.
func BenchmarkExtendCall(b *testing.B) {
	in := append([]byte{'e', 5, 0, 0, 0}, make([]byte, 32)...)
	for _, bl := range builds {
		b.Run(bl.name, func(b *testing.B) {
			_, p := setup(b, bl.build)
			benchCall(b, p.instance(b), in)
		})
	}
}

// BenchmarkParallelNullCall runs null calls on one instance per goroutine (GOMAXPROCS).
func BenchmarkParallelNullCall(b *testing.B) {
	for _, bl := range builds {
		b.Run(bl.name, func(b *testing.B) {
			_, p := setup(b, bl.build)
			insts := make(chan engine.Instance, 64)
			for i := 0; i < cap(insts); i++ {
				insts <- p.instance(b)
			}
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				inst := <-insts
				for pb.Next() {
					if r, err := inst.Call(context.Background(), []byte{'n'}); err != nil || r.Status != 0 {
						b.Errorf("%v status %d", err, r.Status)
						return
					}
				}
			})
		})
	}
}

// BenchmarkWazeroFloor calls palisade_alloc and palisade_entry of the C PAL straight through
// wazero, with and without WithCloseOnContextDone, to show what the engine adds and what
// interruptibility costs: with it, wazero starts a goroutine to watch the context on every call.
func BenchmarkWazeroFloor(b *testing.B) {
	ctx := context.Background()
	img := conformance.BuildCWasm(b, "a")
	for _, term := range []bool{false, true} {
		b.Run(fmt.Sprintf("CloseOnContextDone=%v", term), func(b *testing.B) {
			r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(term))
			defer r.Close(ctx)
			_, err := r.NewHostModuleBuilder("palisade").NewFunctionBuilder().
				WithGoModuleFunction(api.GoModuleFunc(func(context.Context, api.Module, []uint64) {}),
					[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32},
					[]api.ValueType{api.ValueTypeI64}).
				Export("utpm").Instantiate(ctx)
			if err != nil {
				b.Fatal(err)
			}
			m, err := r.Instantiate(ctx, img)
			if err != nil {
				b.Fatal(err)
			}
			alloc, entry := m.ExportedFunction("palisade_alloc"), m.ExportedFunction("palisade_entry")
			st := make([]uint64, 2)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st[0] = 1
				if err := alloc.CallWithStack(ctx, st); err != nil {
					b.Fatal(err)
				}
				p := uint32(st[0])
				m.Memory().WriteByte(p, 'n')
				st[0], st[1] = uint64(p), 1
				if err := entry.CallWithStack(ctx, st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
