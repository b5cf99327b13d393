package kvm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/pal"
)

func seg(vaddr, memsz uint64, flags elf.ProgFlag, data []byte) pal.Segment {
	return pal.Segment{Vaddr: vaddr, Memsz: memsz, Flags: flags, Data: data}
}

const rx, r, rw, rwx = elf.PF_R | elf.PF_X, elf.PF_R, elf.PF_R | elf.PF_W, elf.PF_R | elf.PF_W | elf.PF_X

func TestPlanImage(t *testing.T) {
	code := seg(ImageBase, 0x1234, rx, []byte{0xc3})
	tests := []struct {
		name  string
		img   pal.Image
		ok    bool
		roEnd uint64
		dEnd  uint64
	}{
		{"code only", pal.Image{Entry: ImageBase, Segments: []pal.Segment{code}}, true, ImageBase + 0x2000, DataBase},
		{"code+data", pal.Image{Entry: ImageBase + 1, Segments: []pal.Segment{code, seg(DataBase, 0x10001, rw, []byte{1})}}, true, ImageBase + 0x2000, DataBase + 0x11000},
		{"empty segment ignored", pal.Image{Entry: ImageBase, Segments: []pal.Segment{code, seg(0, 0, rw, nil)}}, true, ImageBase + 0x2000, DataBase},
		{"code below window", pal.Image{Entry: 0x3ff000, Segments: []pal.Segment{seg(0x3ff000, 0x10, rx, nil)}}, false, 0, 0},
		{"code past window", pal.Image{Entry: ImageBase, Segments: []pal.Segment{seg(ImageBase, ImageLimit, rx, nil)}}, false, 0, 0},
		{"rodata in RAM", pal.Image{Entry: ImageBase, Segments: []pal.Segment{code, seg(DataBase, 0x10, r, nil)}}, false, 0, 0},
		{"data in stack", pal.Image{Entry: ImageBase, Segments: []pal.Segment{code, seg(RAMBase, 0x10, rw, nil)}}, false, 0, 0},
		{"data in image window", pal.Image{Entry: ImageBase, Segments: []pal.Segment{code, seg(ImageBase+0x10000, 0x10, rw, nil)}}, false, 0, 0},
		{"data past 4 GiB", pal.Image{Entry: ImageBase, Segments: []pal.Segment{code, seg(1<<32-0x1000, 0x2000, rw, nil)}}, false, 0, 0},
		{"data wraps", pal.Image{Entry: ImageBase, Segments: []pal.Segment{code, seg(DataBase, ^uint64(0), rw, nil)}}, false, 0, 0},
		{"writable code", pal.Image{Entry: DataBase, Segments: []pal.Segment{code, seg(DataBase, 0x10, rwx, nil)}}, false, 0, 0},
		{"entry in rodata", pal.Image{Entry: ImageBase + 0x3000, Segments: []pal.Segment{code, seg(ImageBase+0x3000, 0x10, r, nil)}}, false, 0, 0},
		{"no code", pal.Image{Entry: DataBase, Segments: []pal.Segment{seg(DataBase, 0x10, rw, nil)}}, false, 0, 0},
		{"file larger than memory", pal.Image{Entry: ImageBase, Segments: []pal.Segment{seg(ImageBase, 1, rx, []byte{1, 2})}}, false, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.img.Kind = pal.KindELF
			l, err := planImage(&tc.img)
			if !tc.ok {
				if !errors.Is(err, engine.ErrBadImage) {
					t.Fatalf("planImage = %v, want ErrBadImage", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.roEnd != tc.roEnd || l.dataEnd != tc.dEnd {
				t.Errorf("roEnd %#x dataEnd %#x, want %#x %#x", l.roEnd, l.dataEnd, tc.roEnd, tc.dEnd)
			}
		})
	}
	if _, err := planImage(&pal.Image{Kind: pal.KindWasm}); !errors.Is(err, engine.ErrBadImage) {
		t.Errorf("wasm image: %v, want ErrBadImage", err)
	}
}

func TestPlanRAM(t *testing.T) {
	l := &imageLayout{dataEnd: DataBase + 0x5000}
	tests := []struct {
		mib, input uint32
		ok         bool
	}{
		{64, 1 << 20, true},
		{2, 4096, true},
		{1, 4096, false},    // the stack alone takes 1 MiB
		{2, 1 << 20, false}, // stack + input, no room for data
		{MaxMemoryMiB, 1 << 20, true},
		{MaxMemoryMiB + 1, 1 << 20, false},
	}
	for _, tc := range tests {
		p, err := planRAM(l, engine.Limits{MemoryMiB: tc.mib, MaxInput: int(tc.input)})
		if (err == nil) != tc.ok {
			t.Errorf("planRAM(%d MiB, input %d) = %v, want ok=%v", tc.mib, tc.input, err, tc.ok)
			continue
		}
		if err != nil {
			continue
		}
		end := RAMBase + uint64(tc.mib)<<20
		if p.inputGVA+pageUp(uint64(tc.input)) != end || p.freeGVA != l.dataEnd || p.freeGVA > p.inputGVA {
			t.Errorf("planRAM(%d, %d) = %+v", tc.mib, tc.input, p)
		}
	}
}

// pde returns the page-directory entry that maps a, walking the tables as the CPU does.
func walk(t *testing.T, sys []byte, a uint64) uint64 {
	t.Helper()
	le := binary.LittleEndian
	pml4e := le.Uint64(sys[pml4GPA+8*((a>>39)&511):])
	if pml4e&ptP == 0 {
		return 0
	}
	pdpte := le.Uint64(sys[(pml4e&^0xfff&^ptNX)+8*((a>>30)&511):])
	if pdpte&ptP == 0 {
		return 0
	}
	pdBase := pdpte &^ 0xfff &^ ptNX
	if pdBase < pdGPA || pdBase >= sysSize {
		t.Fatalf("PDPTE for %#x points outside the system slot: %#x", a, pdpte)
	}
	return le.Uint64(sys[pdBase+8*((a>>21)&511):])
}

func TestBuildSys(t *testing.T) {
	l := &imageLayout{roEnd: ImageBase + 0x201000, dataEnd: DataBase + 0x1000}
	p, err := planRAM(l, engine.Limits{MemoryMiB: 5, MaxInput: 4096})
	if err != nil {
		t.Fatal(err)
	}
	sys := make([]byte, sysSize)
	buildSys(sys, l, p)
	tests := []struct {
		addr uint64
		want uint64 // bits that must be set, among P W U NX; 0 = unmapped
	}{
		{0, ptP | ptW | ptNX}, // system page: never user
		{gdtGPA, ptP | ptW | ptNX},
		{DoorbellGPA, ptP | ptW | ptU | ptNX},
		{ImageBase, ptP | ptU},            // code: read-only, executable
		{ImageBase + 0x200000, ptP | ptU}, // image spills into a second 2 MiB page
		{ImageBase + 0x400000, 0},
		{ImageLimit, 0},
		{RAMBase - 1, 0}, // below the stack: guard
		{RAMBase, ptP | ptW | ptU | ptNX},
		{RAMBase + 4<<20, ptP | ptW | ptU | ptNX}, // 5 MiB RAM: third huge page
		{RAMBase + 6<<20, 0},
		{1<<32 - 1, 0},
	}
	for _, tc := range tests {
		e := walk(t, sys, tc.addr)
		got := e & (ptP | ptW | ptU | ptNX)
		if got != tc.want {
			t.Errorf("mapping of %#x: entry %#x, permission bits %#x want %#x", tc.addr, e, got, tc.want)
		}
		if e&ptP != 0 {
			if e&(ptA|ptPS) != ptA|ptPS || e&^0xfff&^ptNX != tc.addr&^(hugePage-1) {
				t.Errorf("mapping of %#x: entry %#x is not an identity 2 MiB page with A set", tc.addr, e)
			}
			if e&ptW != 0 && e&ptD == 0 {
				t.Errorf("mapping of %#x: writable without D preset: the CPU would write the tables", tc.addr)
			}
		}
	}
	if !bytes.Equal(sys[gdtGPA+0x28:gdtGPA+0x30], []byte{0xff, 0xff, 0, 0, 0, 0xfb, 0xaf, 0}) {
		t.Errorf("ring-3 code descriptor = % x", sys[gdtGPA+0x28:gdtGPA+0x30])
	}
}

func testMem() *guestMem {
	return &guestMem{
		image: region{base: ImageBase, mem: make([]byte, 0x2000)},
		ram:   region{base: RAMBase, mem: make([]byte, 0x10000), writable: true},
	}
}

// TestBuffer: translation of guest buffers. Sizes and empty buffers are engine.Hostcall's
// (internal/engine's tests and the conformance suite cover them).
func TestBuffer(t *testing.T) {
	g := testMem()
	tests := []struct {
		name  string
		gva   uint64
		n     uint32
		write bool
		ok    bool
	}{
		{"RAM read", RAMBase, 16, false, true},
		{"RAM write whole", RAMBase, 0x10000, true, true},
		{"RAM past end", RAMBase + 0x10000 - 8, 16, true, false},
		{"RAM just past end", RAMBase + 0x10000, 1, true, false},
		{"below RAM", RAMBase - 1, 2, true, false},
		{"image read", ImageBase + 0x100, 0x100, false, true},
		{"image write", ImageBase + 0x100, 0x100, true, false},
		{"image past end", ImageBase + 0x1ff0, 0x20, false, false},
		{"system page", 0x1000, 8, false, false},
		{"doorbell", DoorbellGPA, 8, true, false},
		{"wraps", ^uint64(0) - 7, 16, true, false},
		{"large", RAMBase, engine.MaxHostcallIO, true, false},
	}
	for _, tc := range tests {
		b, ok := g.Buffer(tc.gva, tc.n, tc.write)
		if ok != tc.ok {
			t.Errorf("%s: ok %v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if ok && (len(b) != int(tc.n) || cap(b) != int(tc.n)) {
			t.Errorf("%s: len %d cap %d, want %d", tc.name, len(b), cap(b), tc.n)
		}
	}
	// The slice is the guest memory itself, not a copy.
	b, _ := g.Buffer(RAMBase+5, 1, true)
	b[0] = 42
	if g.ram.mem[5] != 42 {
		t.Error("Buffer does not alias guest RAM")
	}
}

// FuzzBuffer: whatever the PAL passes, a returned slice lies inside one region it may access.
func FuzzBuffer(f *testing.F) {
	f.Add(uint64(RAMBase), uint32(16), true)
	f.Add(uint64(ImageBase), uint32(0x2000), false)
	f.Add(^uint64(0), uint32(2), true)
	f.Add(uint64(RAMBase+0xfff0), uint32(0x10), true)
	g := testMem()
	f.Fuzz(func(t *testing.T, gva uint64, n uint32, write bool) {
		b, ok := g.Buffer(gva, n, write)
		if !ok {
			if b != nil {
				t.Fatal("slice on error")
			}
			return
		}
		if len(b) != int(n) || cap(b) != int(n) {
			t.Fatalf("len %d cap %d for n %d", len(b), cap(b), n)
		}
		if n == 0 {
			return
		}
		inside := func(r *region) bool {
			return gva >= r.base && gva-r.base+uint64(n) <= uint64(len(r.mem)) && gva-r.base+uint64(n) >= uint64(n)
		}
		if !(inside(&g.ram) || (!write && inside(&g.image))) {
			t.Fatalf("Buffer(%#x, %#x, %v) accepted a buffer outside the PAL's memory", gva, n, write)
		}
	})
}

// FuzzPlanImage: any ELF that pal.Parse accepts is either refused or laid out inside the windows.
func FuzzPlanImage(f *testing.F) {
	f.Add([]byte("\x7fELF"))
	if b, err := nativeTestPAL(); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := pal.Parse(b)
		if err != nil || img.Kind != pal.KindELF {
			return
		}
		l, err := planImage(img)
		if err != nil {
			return
		}
		if l.roEnd > ImageLimit || l.roEnd <= ImageBase || l.dataEnd < DataBase || l.dataEnd > RAMBase+MaxMemoryMiB<<20 {
			t.Fatalf("layout out of bounds: %+v", l)
		}
		mem := make([]byte, l.roEnd-ImageBase)
		l.fillImage(mem) // must not panic
	})
}
