package wasm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/conformance"
	"github.com/palisade-project/palisade/pal"
)

// A tiny WebAssembly module writer, so tests can build exactly the module they need.

func leb(v uint32) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func vec(items ...[]byte) []byte {
	b := leb(uint32(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func str(s string) []byte { return append(leb(uint32(len(s))), s...) }

func section(id byte, body []byte) []byte {
	return append(append([]byte{id}, leb(uint32(len(body)))...), body...)
}

const (
	tI32 = 0x7f
	tI64 = 0x7e
)

func functype(params, results []byte) []byte {
	return append(append([]byte{0x60}, vec(bytesOf(params)...)...), vec(bytesOf(results)...)...)
}

func bytesOf(b []byte) [][]byte {
	r := make([][]byte, len(b))
	for i := range b {
		r[i] = []byte{b[i]}
	}
	return r
}

type wimport struct {
	mod, name string
	kind      byte
	desc      []byte
}

type wfunc struct {
	typ  uint32
	body []byte // instructions, without locals and end
}

type wexport struct {
	name string
	kind byte
	idx  uint32
}

type wmodule struct {
	types   [][]byte
	imports []wimport
	funcs   []wfunc
	memMin  int    // -1: no memory
	memSec  []byte // the memory section's body, if not the one memMin gives
	exports []wexport
}

func (m wmodule) bytes() []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, section(1, vec(m.types...))...)
	var imps [][]byte
	for _, im := range m.imports {
		imps = append(imps, append(append(append(str(im.mod), str(im.name)...), im.kind), im.desc...))
	}
	if len(imps) > 0 {
		b = append(b, section(2, vec(imps...))...)
	}
	var fs, codes [][]byte
	for _, f := range m.funcs {
		fs = append(fs, leb(f.typ))
		body := append([]byte{0}, f.body...) // no locals
		body = append(body, 0x0b)
		codes = append(codes, append(leb(uint32(len(body))), body...))
	}
	b = append(b, section(3, vec(fs...))...)
	switch {
	case m.memSec != nil:
		b = append(b, section(5, m.memSec)...)
	case m.memMin >= 0:
		b = append(b, section(5, vec(append([]byte{0}, leb(uint32(m.memMin))...)))...)
	}
	var exps [][]byte
	for _, e := range m.exports {
		exps = append(exps, append(append(str(e.name), e.kind), leb(e.idx)...))
	}
	b = append(b, section(7, vec(exps...))...)
	b = append(b, section(10, vec(codes...))...)
	return b
}

// palModule is a minimal valid PAL: alloc returns 1024, entry returns 7. Extra imports are
// prepended (function indices shift by the number of function imports).
func palModule(extra ...wimport) wmodule {
	m := wmodule{
		types: [][]byte{
			functype([]byte{tI32}, []byte{tI32}),                  // 0: alloc
			functype([]byte{tI32, tI32}, []byte{tI32}),            // 1: entry
			functype(bytes.Repeat([]byte{tI32}, 9), []byte{tI32}), // 2: path_open-like
			functype([]byte{tI32}, nil),                           // 3: proc_exit
			functype(bytes.Repeat([]byte{tI32}, 5), []byte{tI64}), // 4: utpm
		},
		imports: extra,
		memMin:  1,
	}
	nimp := uint32(0)
	for _, im := range extra {
		if im.kind == 0 {
			nimp++
		}
	}
	m.funcs = []wfunc{
		{typ: 0, body: []byte{0x41, 0x80, 0x08}}, // i32.const 1024
		{typ: 1, body: []byte{0x41, 0x07}},       // i32.const 7
	}
	m.exports = []wexport{{"memory", 2, 0}, {"palisade_alloc", 0, nimp}, {"palisade_entry", 0, nimp + 1}}
	return m
}

func funcImport(mod, name string, typ uint32) wimport {
	return wimport{mod, name, 0, leb(typ)}
}

func compile(t *testing.T, e *Engine, b []byte) (engine.Module, error) {
	t.Helper()
	img, err := pal.Parse(b)
	if err != nil {
		t.Fatalf("pal.Parse: %v", err)
	}
	return e.Compile(context.Background(), img)
}

func newTestEngine(t testing.TB, opts ...Option) *Engine {
	e, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func TestCompileRefuses(t *testing.T) {
	e := newTestEngine(t)
	noEntry := palModule()
	noEntry.exports = noEntry.exports[:2]
	noMemory := palModule()
	noMemory.exports = noMemory.exports[1:]
	wrongEntry := palModule()
	wrongEntry.exports[2].idx = 0 // alloc's (i32) -> i32 as entry
	tests := []struct {
		name string
		mod  wmodule
		want string
	}{
		{"path_open", palModule(funcImport(wasiModule, "path_open", 2)), "wasi_snapshot_preview1.path_open"},
		{"env", palModule(funcImport("env", "anything", 0)), "env.anything"},
		{"wasi-p2", palModule(funcImport("wasi:filesystem/types@0.2.0", "[method]descriptor.read", 0)), "wasi:filesystem/types@0.2.0.[method]descriptor.read"},
		{"utpm-signature", palModule(funcImport(hostModule, "utpm", 0)), "import palisade.utpm has signature (i32) -> (i32)"},
		{"proc_exit-signature", palModule(funcImport(wasiModule, "proc_exit", 0)), "import wasi_snapshot_preview1.proc_exit"},
		{"memory-import", palModule(wimport{"env", "memory", 2, []byte{0, 1}}), "env.memory (memory)"},
		{"global-import", palModule(wimport{hostModule, "g", 3, []byte{tI32, 0}}), "palisade.g (global)"},
		{"missing-entry", noEntry, `missing export "palisade_entry"`},
		{"missing-memory", noMemory, `missing export "memory"`},
		{"entry-signature", wrongEntry, "export palisade_entry has signature (i32) -> (i32)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compile(t, e, tt.mod.bytes())
			if !errors.Is(err, engine.ErrBadImage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile: %v; want ErrBadImage naming %q", err, tt.want)
			}
		})
	}
	t.Run("not-wasm", func(t *testing.T) {
		if _, err := e.Compile(context.Background(), &pal.Image{Kind: pal.KindELF}); !errors.Is(err, engine.ErrBadImage) {
			t.Fatalf("ELF image: %v", err)
		}
	})
	t.Run("invalid-code", func(t *testing.T) {
		m := palModule()
		m.funcs[1].body = []byte{0x6a} // i32.add on an empty stack
		if _, err := compile(t, e, m.bytes()); !errors.Is(err, engine.ErrBadImage) {
			t.Fatalf("invalid code: %v", err)
		}
	})
}

func TestMinimalModule(t *testing.T) {
	e := newTestEngine(t)
	mod, err := compile(t, e, palModule(funcImport(hostModule, "utpm", 4)).bytes())
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(context.Background())
	h := conformance.Host{T: conformance.NewPlatform(t).NewTPM([32]byte{1})}
	inst, err := mod.Instantiate(context.Background(), &h, engine.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(context.Background())
	for _, in := range [][]byte{nil, []byte("x")} {
		r, err := inst.Call(context.Background(), in)
		if err != nil || r.Status != 7 || r.Output != nil {
			t.Fatalf("call(%q): %+v, %v", in, r, err)
		}
	}
	// Memory cap below the module's minimum.
	if _, err := mod.Instantiate(context.Background(), &h, engine.Limits{MemoryMiB: 4097}); err == nil {
		t.Fatal("memory cap above 4 GiB accepted")
	}
}

func TestMemoryCapBelowMinimum(t *testing.T) {
	e := newTestEngine(t)
	m := palModule()
	m.memMin = 32 // 2 MiB
	mod, err := compile(t, e, m.bytes())
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(context.Background())
	h := conformance.Host{T: conformance.NewPlatform(t).NewTPM([32]byte{1})}
	if _, err := mod.Instantiate(context.Background(), &h, engine.Limits{MemoryMiB: 1}); !errors.Is(err, engine.ErrOutOfMemory) {
		t.Fatalf("1 MiB cap for a 2 MiB module: %v, want ErrOutOfMemory", err)
	}
}

// TestProcExitAndBadAlloc: proc_exit and a palisade_alloc result outside memory are traps,
// and the instance works again afterwards.
func TestProcExitAndBadAlloc(t *testing.T) {
	e := newTestEngine(t)
	m := palModule(funcImport(wasiModule, "proc_exit", 3))
	// entry: if len == 3 then proc_exit(3); return 7
	m.funcs[1].body = []byte{0x20, 0x01, 0x41, 0x03, 0x46, 0x04, 0x40, 0x41, 0x03, 0x10, 0x00, 0x0b, 0x41, 0x07}
	// alloc: return 1024, or 0xfffffff0 when asked for 5 bytes
	m.funcs[0].body = []byte{0x41, 0x70, 0x41, 0x80, 0x08, 0x20, 0x00, 0x41, 0x05, 0x46, 0x1b}
	mod, err := compile(t, e, m.bytes())
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close(context.Background())
	h := conformance.Host{T: conformance.NewPlatform(t).NewTPM([32]byte{1})}
	inst, err := mod.Instantiate(context.Background(), &h, engine.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(context.Background())
	ctx := context.Background()
	if _, err := inst.Call(ctx, []byte("abc")); !errors.Is(err, engine.ErrTrap) || !strings.Contains(err.Error(), "code 3") {
		t.Fatalf("proc_exit(3): %v", err)
	}
	if r, err := inst.Call(ctx, []byte("ab")); err != nil || r.Status != 7 {
		t.Fatalf("after proc_exit: %+v %v", r, err)
	}
	if _, err := inst.Call(ctx, []byte("abcde")); !errors.Is(err, engine.ErrTrap) || !strings.Contains(err.Error(), "palisade_alloc") {
		t.Fatalf("bad alloc: %v", err)
	}
	if r, err := inst.Call(ctx, []byte("ab")); err != nil || r.Status != 7 {
		t.Fatalf("after bad alloc: %+v %v", r, err)
	}
}

// TestGoPALImports lists the imports of a real Go PAL: every one must be allowed, and every
// allowed WASI function but fd_read (in the ABI for PALs that read stdin) must be needed.
func TestGoPALImports(t *testing.T) {
	info, err := parseModule(conformance.BuildGo(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkImports(info.Imports); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, imp := range info.Imports {
		got = append(got, imp.String())
	}
	for name := range allowedImports {
		if !slices.Contains(got, name) && name != wasiModule+".fd_read" {
			t.Errorf("allowed import %s is not used by a Go PAL", name)
		}
	}
	t.Logf("Go PAL imports: %v", got)
}

func TestCacheDir(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		e := newTestEngine(t, WithCacheDir(dir))
		mod, err := compile(t, e, conformance.BuildCWasm(t, "a"))
		if err != nil {
			t.Fatal(err)
		}
		mod.Close(context.Background())
		e.Close(context.Background())
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("cache directory is empty (%v)", err)
	}
}

func TestCompileSharesModules(t *testing.T) {
	e := newTestEngine(t)
	b := conformance.BuildCWasm(t, "a")
	m1, err := compile(t, e, b)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := compile(t, e, b)
	if err != nil {
		t.Fatal(err)
	}
	if m1.(*moduleRef).module != m2.(*moduleRef).module {
		t.Fatal("two compiles of one measurement did not share the module")
	}
	m1.Close(context.Background())
	m1.Close(context.Background()) // closing twice drops one reference only
	if m2.(*moduleRef).refs != 1 {
		t.Fatalf("refs = %d after closing the other reference twice", m2.(*moduleRef).refs)
	}
	m2.Close(context.Background())
}

func FuzzParseModule(f *testing.F) {
	f.Add(palModule(funcImport(wasiModule, "path_open", 2)).bytes())
	f.Add(palModule(wimport{"env", "memory", 2, []byte{1, 1, 2}}).bytes())
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x02\x05\x01\x01a\x01b"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseModule(b)
		if err == nil && len(info.Imports) > maxImports {
			t.Fatalf("%d imports", len(info.Imports))
		}
		_ = checkImports(info.Imports)
	})
}

// TestFeatures is the experiment behind docs/abi.md §5's list of accepted WebAssembly
// features: a PAL using each feature's instructions is compiled and, when accepted, run (its
// entry returns 7 unless said otherwise); a refused one is ErrBadImage.
func TestFeatures(t *testing.T) {
	e := newTestEngine(t)
	i32 := func(v byte) []byte { return []byte{0x41, v} } // i32.const v (v < 64)
	cat := func(bs ...[]byte) []byte {
		var b []byte
		for _, x := range bs {
			b = append(b, x...)
		}
		return b
	}
	tests := []struct {
		name   string
		body   []byte // of palisade_entry
		memSec []byte
		accept bool
		status int32
	}{
		{"SIMD (v128.const, i32x4.extract_lane)", cat([]byte{0xfd, 0x0c}, make([]byte, 12), []byte{7, 0, 0, 0, 0xfd, 0x1b, 3}), nil, true, 7},
		{"bulk memory (memory.fill)", cat(i32(0), i32(7), i32(1), []byte{0xfc, 0x0b, 0}, i32(0), []byte{0x2d, 0, 0}), nil, true, 7},
		{"sign extension (i32.extend8_s)", cat([]byte{0x41, 0xff, 0x01, 0xc0}), nil, true, -1},
		{"non-trapping float-to-int (i32.trunc_sat_f32_s)", cat([]byte{0x43, 0, 0, 0xe0, 0x40, 0xfc, 0}), nil, true, 7},
		{"multi-value (block returning two values)", cat([]byte{0x02, 5}, i32(3), i32(4), []byte{0x0b, 0x6a}), nil, true, 7},
		{"reference types (ref.null, ref.is_null)", cat([]byte{0xd0, 0x70, 0xd1}), nil, true, 1},
		{"tail calls (return_call)", cat(i32(0), []byte{0x12, 0}), nil, false, 0},
		{"threads (atomic.fence)", cat([]byte{0xfe, 0x03, 0}, i32(7)), nil, false, 0},
		{"exception handling (try_table)", cat([]byte{0x1f, 0x40, 0, 0x0b}, i32(7)), nil, false, 0},
		{"threads (shared memory)", i32(7), []byte{1, 3, 1, 1}, false, 0},
		{"multiple memories", i32(7), []byte{2, 0, 1, 0, 1}, false, 0},
		{"64-bit memory", i32(7), []byte{1, 4, 1}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := palModule()
			m.types = append(m.types, functype(nil, []byte{tI32, tI32})) // 5: [] -> [i32 i32]
			m.funcs[1].body = tt.body
			m.memSec = tt.memSec
			mod, err := compile(t, e, m.bytes())
			if !tt.accept {
				if !errors.Is(err, engine.ErrBadImage) {
					t.Fatalf("Compile: %v, want ErrBadImage", err)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			defer mod.Close(context.Background())
			h := conformance.Host{T: conformance.NewPlatform(t).NewTPM([32]byte{1})}
			inst, err := mod.Instantiate(context.Background(), &h, engine.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(context.Background())
			if r, err := inst.Call(context.Background(), nil); err != nil || r.Status != tt.status {
				t.Fatalf("call: %+v, %v; want status %d", r, err, tt.status)
			}
		})
	}
}
