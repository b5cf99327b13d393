package pal

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// minimalWasm is the smallest valid module: magic, version, no sections.
var minimalWasm = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

func TestParseWasm(t *testing.T) {
	// A module with one custom section named "x" holding "y".
	custom := append(append([]byte{}, minimalWasm...), 0x00, 0x03, 0x01, 'x', 'y')
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"minimal", minimalWasm, ""},
		{"custom section", custom, ""},
		{"empty", nil, "neither a WebAssembly module nor an ELF"},
		{"text", []byte("hello"), "neither"},
		{"version 2", []byte{0x00, 'a', 's', 'm', 0x02, 0, 0, 0}, "unsupported WebAssembly version"},
		{"truncated section", append(append([]byte{}, minimalWasm...), 0x01, 0x10, 0x00), "runs past the end"},
		{"bad leb", append(append([]byte{}, minimalWasm...), 0x01, 0xff, 0xff, 0xff, 0xff, 0xff), "bad size"},
		{"unknown section id", append(append([]byte{}, minimalWasm...), 0x42, 0x00), "unknown id 66"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse = %v, want error containing %q wrapping ErrInvalid", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if img.Kind != KindWasm {
				t.Fatalf("kind %q", img.Kind)
			}
		})
	}
}

func TestMeasurementDeterministicAndDistinct(t *testing.T) {
	a, err := Parse(minimalWasm)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse(append([]byte{}, minimalWasm...))
	if a.Measurement != b.Measurement {
		t.Fatal("same bytes, different measurement")
	}
	c, _ := Parse(append(append([]byte{}, minimalWasm...), 0x00, 0x01, 0x00))
	if a.Measurement == c.Measurement {
		t.Fatal("different bytes, same measurement")
	}
	// Golden value: the encoding is a published format (docs/formats.md §1); changing it
	// changes every PAL's identity and must be deliberate.
	if got := a.Measurement.String(); got != goldenMinimalWasm {
		t.Fatalf("measurement of the minimal module = %s, want %s", got, goldenMinimalWasm)
	}
}

// goldenMinimalWasm was computed independently of this package from the encoding in
// docs/formats.md §1: SHA-256("palisade.pal.v1\x00" || "wasm\x00" || u64le(8) || module).
const goldenMinimalWasm = "c01f1db08891bfda171e080bdd354f45e0db280f23a6c717929f665738ddefce"

func TestParseMeasurement(t *testing.T) {
	m, err := ParseMeasurement(goldenMinimalWasm)
	if err != nil || m.String() != goldenMinimalWasm {
		t.Fatalf("round trip: %v %s", err, m)
	}
	for _, bad := range []string{"", "zz", goldenMinimalWasm[:62], goldenMinimalWasm + "00"} {
		if _, err := ParseMeasurement(bad); err == nil {
			t.Errorf("ParseMeasurement(%q) succeeded", bad)
		}
	}
}

// buildELF compiles a freestanding static x86-64 program with gcc.
func buildELF(t *testing.T, src string, extra ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, "p.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "p.elf")
	args := append([]string{"-static", "-nostdlib", "-ffreestanding", "-fno-pie", "-no-pie", "-O2",
		"-Wl,--build-id=none", "-o", out, c}, extra...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const elfSrc = `
int counter = 7;
void _start(void) { for (;;) counter++; }
`

func TestParseELF(t *testing.T) {
	b := buildELF(t, elfSrc)
	img, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if img.Kind != KindELF || len(img.Segments) == 0 || img.Entry == 0 {
		t.Fatalf("parsed %+v", img)
	}
	// Bytes the loader never maps (here the .comment section) are not part of the identity.
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	sec := f.Section(".comment")
	if sec == nil || sec.Size == 0 {
		t.Skip("gcc emitted no .comment section")
	}
	mod := append([]byte{}, b...)
	mod[sec.Offset] ^= 0xff
	mimg, err := Parse(mod)
	if err != nil {
		t.Fatal(err)
	}
	if mimg.Measurement != img.Measurement {
		t.Fatal("changing an unloaded section changed the measurement")
	}
	// Changing code changes it.
	other := buildELF(t, strings.Replace(elfSrc, "counter = 7", "counter = 8", 1))
	oimg, err := Parse(other)
	if err != nil {
		t.Fatal(err)
	}
	if oimg.Measurement == img.Measurement {
		t.Fatal("different data, same measurement")
	}
}

func TestParseELFRefused(t *testing.T) {
	good := buildELF(t, elfSrc)
	f, err := elf.NewFile(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	// Offsets inside the ELF header (ELF64): e_type at 16, e_machine at 18, e_entry at 24.
	patch := func(off int, v []byte) []byte {
		b := append([]byte{}, good...)
		copy(b[off:], v)
		return b
	}
	u16 := func(v uint16) []byte { b := make([]byte, 2); binary.LittleEndian.PutUint16(b, v); return b }
	u64 := func(v uint64) []byte { b := make([]byte, 8); binary.LittleEndian.PutUint64(b, v); return b }
	tests := []struct {
		name, want string
		in         []byte
	}{
		{"shared object", "want ET_EXEC", patch(16, u16(uint16(elf.ET_DYN)))},
		{"arm64", "want EM_X86_64", patch(18, u16(uint16(elf.EM_AARCH64)))},
		{"entry outside code", "not in an executable segment", patch(24, u64(f.Entry+1<<40))},
		{"32-bit", "", patch(4, []byte{byte(elf.ELFCLASS32)})},
		{"truncated", "", good[:100]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	_, err := Parse(make([]byte, MaxImageSize+1))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("Parse(oversized) = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(minimalWasm)
	f.Add(append(append([]byte{}, minimalWasm...), 0x00, 0x03, 0x01, 'x', 'y'))
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	if b, err := os.ReadFile(filepath.Join("testdata", "tiny.elf")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		again, err := Parse(b)
		if err != nil || again.Measurement != img.Measurement {
			t.Fatal("measurement not deterministic")
		}
	})
}
