package wasm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// Import is one entry of a module's import section.
type Import struct {
	Module, Name string
	Kind         byte // 0 func, 1 table, 2 memory, 3 global, 4 tag
}

func (i Import) String() string { return i.Module + "." + i.Name }

var kindNames = [...]string{"function", "table", "memory", "global", "tag"}

func (i Import) kindName() string {
	if int(i.Kind) < len(kindNames) {
		return kindNames[i.Kind]
	}
	return fmt.Sprintf("kind %d", i.Kind)
}

// moduleInfo is what the engine needs to know about a module before wazero compiles it.
type moduleInfo struct {
	Imports []Import
	// MemMinPages is the minimum size of the module's own memory (0 if it defines none).
	MemMinPages uint32
}

var errMalformed = errors.New("malformed module")

// parseModule walks a WebAssembly binary and extracts its imports and the minimum size of its
// memory. It is a bounded, allocation-light parser for hostile input: it refuses anything it
// does not understand rather than guessing, and never panics. wazero validates the rest.
func parseModule(b []byte) (moduleInfo, error) {
	var info moduleInfo
	r := reader{b: b}
	if string(r.bytes(8)) != "\x00asm\x01\x00\x00\x00" {
		return info, fmt.Errorf("%w: bad header", errMalformed)
	}
	for r.err == nil && len(r.b) > 0 {
		id := r.byte()
		size := r.u32()
		sec := reader{b: r.bytes(size)}
		if r.err != nil {
			break
		}
		switch id {
		case 2: // import section
			if err := parseImports(&sec, &info); err != nil {
				return info, err
			}
		case 5: // memory section
			if n := sec.u32(); n > 0 {
				_ = sec.byte() // limits flags
				info.MemMinPages = sec.u32()
			}
			if sec.err != nil {
				return info, fmt.Errorf("%w: memory section: %v", errMalformed, sec.err)
			}
		}
	}
	if r.err != nil {
		return info, fmt.Errorf("%w: %v", errMalformed, r.err)
	}
	return info, nil
}

// maxImports bounds the work a hostile import section can cause.
const maxImports = 1 << 12

func parseImports(r *reader, info *moduleInfo) error {
	n := r.u32()
	if n > maxImports {
		return fmt.Errorf("%w: %d imports", errMalformed, n)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		imp := Import{Module: r.name(), Name: r.name(), Kind: r.byte()}
		switch imp.Kind {
		case 0: // func: type index
			r.u32()
		case 1: // table: reftype, limits
			r.byte()
			r.limits()
		case 2: // memory: limits
			r.limits()
		case 3: // global: valtype, mutability
			r.byte()
			r.byte()
		case 4: // tag: attribute, type index
			r.byte()
			r.u32()
		default:
			return fmt.Errorf("%w: import %s: unknown kind %d", errMalformed, imp, imp.Kind)
		}
		info.Imports = append(info.Imports, imp)
	}
	if r.err != nil {
		return fmt.Errorf("%w: import section: %v", errMalformed, r.err)
	}
	return nil
}

type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("unexpected end")

func (r *reader) bytes(n uint32) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)) {
		r.err = errShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u32() uint32 {
	var v uint64
	for i := 0; i < 5; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if v > 0xffffffff {
				r.err = errors.New("LEB128 u32 overflows")
				return 0
			}
			return uint32(v)
		}
	}
	r.err = errors.New("LEB128 u32 too long")
	return 0
}

func (r *reader) name() string { return string(r.bytes(r.u32())) }

func (r *reader) limits() {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

type signature struct{ params, results []api.ValueType }

func sig(params []api.ValueType, results ...api.ValueType) signature {
	return signature{params, results}
}

func i32s(n int) []api.ValueType {
	v := make([]api.ValueType, n)
	for i := range v {
		v[i] = i32
	}
	return v
}

// Module names of the imports a PAL may have (docs/abi.md §5).
const (
	hostModule = "palisade"
	wasiModule = "wasi_snapshot_preview1"
)

// allowedImports lists every function a PAL may import, with its exact signature. The WASI
// subset is what a Go wasip1 reactor needs to start and run (engine/wasm tests list the imports
// of a real Go PAL against it).
var allowedImports = map[string]signature{
	hostModule + ".utpm": sig(i32s(5), i64),

	wasiModule + ".args_get":            sig(i32s(2), i32),
	wasiModule + ".args_sizes_get":      sig(i32s(2), i32),
	wasiModule + ".environ_get":         sig(i32s(2), i32),
	wasiModule + ".environ_sizes_get":   sig(i32s(2), i32),
	wasiModule + ".clock_time_get":      sig([]api.ValueType{i32, i64, i32}, i32),
	wasiModule + ".random_get":          sig(i32s(2), i32),
	wasiModule + ".fd_write":            sig(i32s(4), i32),
	wasiModule + ".poll_oneoff":         sig(i32s(4), i32),
	wasiModule + ".sched_yield":         sig(nil, i32),
	wasiModule + ".proc_exit":           sig(i32s(1)),
	wasiModule + ".fd_close":            sig(i32s(1), i32),
	wasiModule + ".fd_read":             sig(i32s(4), i32),
	wasiModule + ".fd_fdstat_get":       sig(i32s(2), i32),
	wasiModule + ".fd_fdstat_set_flags": sig(i32s(2), i32),
	wasiModule + ".fd_prestat_get":      sig(i32s(2), i32),
	wasiModule + ".fd_prestat_dir_name": sig(i32s(3), i32),
}

// requiredExports are the functions every PAL exports (docs/abi.md §5).
var requiredExports = map[string]signature{
	"palisade_alloc": sig(i32s(1), i32),
	"palisade_entry": sig(i32s(2), i32),
}

// checkImports refuses any import outside the allowed list, naming it.
func checkImports(imps []Import) error {
	var bad []string
	for _, imp := range imps {
		if imp.Kind != 0 {
			bad = append(bad, fmt.Sprintf("%s (%s)", imp, imp.kindName()))
			continue
		}
		if _, ok := allowedImports[imp.String()]; !ok {
			bad = append(bad, imp.String())
		}
	}
	if len(bad) > 0 {
		if len(bad) > 8 {
			bad = append(bad[:8], fmt.Sprintf("and %d more", len(bad)-8))
		}
		return fmt.Errorf("refused import %s: a PAL may import only %s.utpm and the WASI subset of docs/abi.md §5",
			strings.Join(bad, ", "), hostModule)
	}
	return nil
}

// checkSignatures checks the signatures of the imported and exported functions of a compiled
// module against the ABI.
func checkSignatures(imported []api.FunctionDefinition, exported map[string]api.FunctionDefinition, memories map[string]api.MemoryDefinition) error {
	for _, f := range imported {
		mod, name, _ := f.Import()
		want := allowedImports[mod+"."+name]
		if !sameTypes(f.ParamTypes(), want.params) || !sameTypes(f.ResultTypes(), want.results) {
			return fmt.Errorf("import %s.%s has signature %s, want %s", mod, name, sigString(f.ParamTypes(), f.ResultTypes()), sigString(want.params, want.results))
		}
	}
	if _, ok := memories["memory"]; !ok {
		return errors.New(`missing export "memory"`)
	}
	for name, want := range requiredExports {
		f, ok := exported[name]
		if !ok {
			return fmt.Errorf("missing export %q", name)
		}
		if !sameTypes(f.ParamTypes(), want.params) || !sameTypes(f.ResultTypes(), want.results) {
			return fmt.Errorf("export %s has signature %s, want %s", name, sigString(f.ParamTypes(), f.ResultTypes()), sigString(want.params, want.results))
		}
	}
	if f, ok := exported["_initialize"]; ok && (len(f.ParamTypes()) != 0 || len(f.ResultTypes()) != 0) {
		return fmt.Errorf("export _initialize has signature %s, want () -> ()", sigString(f.ParamTypes(), f.ResultTypes()))
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sigString(params, results []api.ValueType) string {
	name := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return name(params) + " -> " + name(results)
}
