// Package pal parses PAL images and computes their measurement, the identity every µTPM
// operation is bound to.
//
// A measurement depends only on the image bytes: the same image has the same measurement on
// any machine, so an administrator or a relying party computes reference values offline, with
// Parse or `palisade measure`, and compares them with what the daemon reports
// (client.Info.Measurement) or what evidence proves (attest.Options.PAL). The encoding is
// specified in docs/formats.md §1: it is not a plain hash of the file, so that a wasm module and
// an ELF executable never share a measurement, and an ELF's measurement covers only what is
// loaded.
//
// A Go PAL's measurement depends on the compiler version and on the module paths and versions
// it is built from; build it with -trimpath -buildvcs=false so that it does not depend on where
// the source lies or on its commit (docs/sdk.md).
package pal

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
)

// Kind is the kind of a PAL image; each engine runs one kind.
type Kind string

const (
	KindWasm Kind = "wasm" // a WebAssembly module (engine "wasm")
	KindELF  Kind = "elf"  // a static freestanding x86-64 ELF executable (engine "kvm")
)

// MaxImageSize bounds an image before anything parses it.
const MaxImageSize = 64 << 20

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid PAL image")

// Measurement is the identity of a PAL: SHA-256 over the canonical encoding of its image.
type Measurement [32]byte

// String returns the measurement as 64 lowercase hex digits, as `palisade measure` prints it.
func (m Measurement) String() string { return hex.EncodeToString(m[:]) }

// ParseMeasurement parses 64 hex digits.
func ParseMeasurement(s string) (Measurement, error) {
	var m Measurement
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(m) {
		return m, fmt.Errorf("measurement must be 64 hex digits, got %q", s)
	}
	copy(m[:], b)
	return m, nil
}

// Segment is a loadable segment of an ELF image.
type Segment struct {
	Vaddr uint64       // virtual address of the segment's start
	Memsz uint64       // bytes of memory it occupies
	Flags elf.ProgFlag // PF_R, PF_W, PF_X
	Data  []byte       // file contents; Memsz-len(Data) zero bytes follow
}

// Image is a parsed, validated PAL image: the "spec" of a PAL, as opposed to a registered PAL.
type Image struct {
	Kind        Kind        // which engine runs it
	Bytes       []byte      // the whole image as given
	Measurement Measurement // the PAL's identity

	// ELF only: the entry point and the loadable segments, sorted by address.
	Entry    uint64    // the entry point's virtual address
	Segments []Segment // the PT_LOAD segments
}

// Domain-separation tags of the measurement encoding.
const (
	tagPrefix = "palisade.pal.v1\x00"
	tagWasm   = "wasm\x00"
	tagELF    = "elf-x86_64\x00"
)

var wasmMagic = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Parse recognises the kind of b, validates its structure and measures it. It does not check
// what an engine checks (imports, exports); b is not copied and must not be modified after.
func Parse(b []byte) (*Image, error) {
	if len(b) > MaxImageSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrInvalid, len(b), MaxImageSize)
	}
	switch {
	case bytes.HasPrefix(b, wasmMagic):
		if err := checkWasmSections(b[len(wasmMagic):]); err != nil {
			return nil, fmt.Errorf("%w: wasm: %v", ErrInvalid, err)
		}
		img := &Image{Kind: KindWasm, Bytes: b}
		img.Measurement = measureWasm(b)
		return img, nil
	case bytes.HasPrefix(b, []byte(elf.ELFMAG)):
		img, err := parseELF(b)
		if err != nil {
			return nil, fmt.Errorf("%w: elf: %v", ErrInvalid, err)
		}
		return img, nil
	case bytes.HasPrefix(b, []byte{0x00, 'a', 's', 'm'}):
		return nil, fmt.Errorf("%w: unsupported WebAssembly version % x (want 1)", ErrInvalid, b[4:min(8, len(b))])
	}
	return nil, fmt.Errorf("%w: neither a WebAssembly module nor an ELF executable", ErrInvalid)
}

func measureWasm(b []byte) Measurement {
	h := sha256.New()
	h.Write([]byte(tagPrefix + tagWasm))
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
	var m Measurement
	h.Sum(m[:0])
	return m
}

// checkWasmSections walks the section headers so that a truncated or garbled module is refused
// here with a precise message; the engine validates the contents.
func checkWasmSections(b []byte) error {
	off := 8
	for len(b) > 0 {
		id := b[0]
		size, n := uvarint32(b[1:])
		if n <= 0 {
			return fmt.Errorf("section at offset %d: bad size", off)
		}
		b = b[1+n:]
		if uint64(size) > uint64(len(b)) {
			return fmt.Errorf("section %d at offset %d: size %d runs past the end", id, off, size)
		}
		if id > 12 {
			return fmt.Errorf("section at offset %d: unknown id %d", off, id)
		}
		b = b[size:]
		off += 1 + n + int(size)
	}
	return nil
}

// uvarint32 decodes a LEB128 u32; n <= 0 on error.
func uvarint32(b []byte) (uint32, int) {
	var v uint64
	for i := 0; i < 5 && i < len(b); i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if v > 0xffffffff {
				return 0, -1
			}
			return uint32(v), i + 1
		}
	}
	return 0, -1
}

func parseELF(b []byte) (img *Image, err error) {
	// debug/elf is defensive, but a PAL image is hostile input: never let a parser bug take the
	// visor down.
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, fmt.Errorf("parser failure: %v", r)
		}
	}()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	switch {
	case f.Class != elf.ELFCLASS64:
		return nil, fmt.Errorf("class %v, want ELFCLASS64", f.Class)
	case f.Data != elf.ELFDATA2LSB:
		return nil, fmt.Errorf("data %v, want little-endian", f.Data)
	case f.Machine != elf.EM_X86_64:
		return nil, fmt.Errorf("machine %v, want EM_X86_64", f.Machine)
	case f.Type != elf.ET_EXEC:
		return nil, fmt.Errorf("type %v, want ET_EXEC (static, not position-independent)", f.Type)
	}
	img = &Image{Kind: KindELF, Bytes: b, Entry: f.Entry}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
		case elf.PT_INTERP, elf.PT_DYNAMIC:
			return nil, fmt.Errorf("dynamic executables are not PALs (found %v)", p.Type)
		default:
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, fmt.Errorf("segment at %#x: file size %d > memory size %d", p.Vaddr, p.Filesz, p.Memsz)
		}
		if p.Memsz > MaxImageSize || p.Vaddr+p.Memsz < p.Vaddr {
			return nil, fmt.Errorf("segment at %#x: memory size %d too large", p.Vaddr, p.Memsz)
		}
		if p.Off+p.Filesz > uint64(len(b)) || p.Off+p.Filesz < p.Off {
			return nil, fmt.Errorf("segment at %#x: contents run past the end of the file", p.Vaddr)
		}
		img.Segments = append(img.Segments, Segment{
			Vaddr: p.Vaddr, Memsz: p.Memsz, Flags: p.Flags & (elf.PF_R | elf.PF_W | elf.PF_X),
			Data: b[p.Off : p.Off+p.Filesz],
		})
	}
	if len(img.Segments) == 0 {
		return nil, errors.New("no loadable segments")
	}
	sort.Slice(img.Segments, func(i, j int) bool { return img.Segments[i].Vaddr < img.Segments[j].Vaddr })
	var total uint64
	for i, s := range img.Segments {
		if i > 0 && s.Vaddr < img.Segments[i-1].Vaddr+img.Segments[i-1].Memsz {
			return nil, fmt.Errorf("segments at %#x and %#x overlap", img.Segments[i-1].Vaddr, s.Vaddr)
		}
		total += s.Memsz
	}
	if total > MaxImageSize {
		return nil, fmt.Errorf("loadable segments total %d bytes, over the limit", total)
	}
	inside := false
	for _, s := range img.Segments {
		if s.Flags&elf.PF_X != 0 && img.Entry >= s.Vaddr && img.Entry < s.Vaddr+s.Memsz {
			inside = true
		}
	}
	if !inside {
		return nil, fmt.Errorf("entry point %#x is not in an executable segment", img.Entry)
	}
	img.Measurement = measureELF(img)
	return img, nil
}

// measureELF covers exactly what the loader uses: the entry point and each loadable segment's
// address, sizes, permission flags and contents. Bytes no segment maps (symbols, debug
// sections) do not count. The ELF header counts when a segment maps it, as linkers often do
// for the first segment: those bytes are in the PAL's memory.
func measureELF(img *Image) Measurement {
	h := sha256.New()
	h.Write([]byte(tagPrefix + tagELF))
	var buf [8]byte
	u64 := func(v uint64) { binary.LittleEndian.PutUint64(buf[:], v); h.Write(buf[:]) }
	u64(img.Entry)
	u64(uint64(len(img.Segments)))
	for _, s := range img.Segments {
		u64(s.Vaddr)
		u64(s.Memsz)
		u64(uint64(s.Flags))
		u64(uint64(len(s.Data)))
		h.Write(s.Data)
	}
	var m Measurement
	h.Sum(m[:0])
	return m
}
