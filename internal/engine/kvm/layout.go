package kvm

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/pal"
)

// Guest address space of a PAL (docs/abi.md §6, docs/kvm.md). Guest virtual addresses equal
// guest physical addresses; the page tables use 2 MiB pages.
//
//	[0, 2 MiB)                  system page: GDT and page tables (not mapped for the guest)
//	[2 MiB, 4 MiB)              doorbells: mapped, but no memory behind them (stores exit to the host)
//	[ImageBase, ImageLimit)     the PAL's read-only segments (read-only slot shared by all instances)
//	[RAMBase, RAMBase+RAM)      RAM: stack, then writable segments, free memory, input buffer
//
// Everything else is unmapped: a stray access faults and the call fails with engine.ErrTrap.
const (
	ImageBase  = 0x0040_0000 // lowest address of a read-only (code, rodata) segment
	ImageLimit = 0x0800_0000 // read-only segments end below this
	RAMBase    = 0x1000_0000 // start of RAM; the stack's lowest address (the page below is unmapped)
	StackSize  = 1 << 20     // the stack occupies [RAMBase, DataBase) and starts at DataBase
	DataBase   = RAMBase + StackSize
	// DoorbellGPA: a store here is a µTPM hostcall; DoneGPA: an 8-byte store of the status ends
	// the call.
	DoorbellGPA = 0x0020_0000
	DoneGPA     = 0x0020_0008

	pageSize = 4 << 10
	hugePage = 2 << 20

	// The system slot at guest physical 0. Page 0 is the (zero) TSS the CPU requires.
	gdtGPA  = 0x1000
	pml4GPA = 0x2000
	pdptGPA = 0x3000
	pdGPA   = 0x4000 // numPDs page directories follow
	numPDs  = 4      // each maps 1 GiB: the page tables cover the low 4 GiB
	sysSize = pdGPA + numPDs*pageSize

	// MaxMemoryMiB is the largest RAM the page tables can map.
	MaxMemoryMiB = (numPDs<<30 - RAMBase) >> 20
)

// GDT selectors. The PAL runs with the ring-3 ones; the ring-0 ones exist only because a GDT
// without them is not a valid long-mode GDT.
const (
	selKernelCode = 0x08
	selKernelData = 0x10
	selTSS        = 0x18 // 16-byte descriptor
	selUserCode   = 0x28 | 3
	selUserData   = 0x30 | 3
	gdtLimit      = 0x38 - 1
)

// imageLayout is where an ELF image goes in guest memory. It depends only on the image.
type imageLayout struct {
	entry   uint64
	roEnd   uint64        // the image slot covers [ImageBase, roEnd), page-aligned
	dataEnd uint64        // end of the writable segments, page-aligned (DataBase if none)
	ro      []pal.Segment // read-only segments, copied into the image slot
	rw      []pal.Segment // writable segments, copied into RAM at every (re)initialisation
}

// planImage checks that every segment of img lies in its window: read-only segments in
// [ImageBase, ImageLimit), writable ones from DataBase up. It refuses writable+executable
// segments: RAM is never executable.
func planImage(img *pal.Image) (*imageLayout, error) {
	if img.Kind != pal.KindELF {
		return nil, fmt.Errorf("%w: kvm runs ELF PALs, not %q", engine.ErrBadImage, img.Kind)
	}
	l := &imageLayout{entry: img.Entry, roEnd: ImageBase, dataEnd: DataBase}
	maxData := uint64(RAMBase + MaxMemoryMiB<<20)
	for _, s := range img.Segments {
		if s.Memsz == 0 {
			continue
		}
		end := s.Vaddr + s.Memsz
		if end < s.Vaddr || uint64(len(s.Data)) > s.Memsz {
			return nil, fmt.Errorf("%w: segment at %#x: bad size", engine.ErrBadImage, s.Vaddr)
		}
		w, x := s.Flags&elf.PF_W != 0, s.Flags&elf.PF_X != 0
		switch {
		case w && x:
			return nil, fmt.Errorf("%w: segment at %#x is writable and executable", engine.ErrBadImage, s.Vaddr)
		case w:
			if s.Vaddr < DataBase || end > maxData {
				return nil, fmt.Errorf("%w: writable segment [%#x, %#x) outside [%#x, %#x)",
					engine.ErrBadImage, s.Vaddr, end, uint64(DataBase), maxData)
			}
			l.rw = append(l.rw, s)
			l.dataEnd = max(l.dataEnd, pageUp(end))
		default:
			if s.Vaddr < ImageBase || end > ImageLimit {
				return nil, fmt.Errorf("%w: read-only segment [%#x, %#x) outside [%#x, %#x)",
					engine.ErrBadImage, s.Vaddr, end, ImageBase, ImageLimit)
			}
			l.ro = append(l.ro, s)
			l.roEnd = max(l.roEnd, pageUp(end))
		}
	}
	if len(l.ro) == 0 {
		return nil, fmt.Errorf("%w: no read-only segment to hold the code", engine.ErrBadImage)
	}
	inCode := false
	for _, s := range l.ro {
		if s.Flags&elf.PF_X != 0 && l.entry >= s.Vaddr && l.entry < s.Vaddr+s.Memsz {
			inCode = true
		}
	}
	if !inCode {
		return nil, fmt.Errorf("%w: entry point %#x is not in an executable segment", engine.ErrBadImage, l.entry)
	}
	return l, nil
}

// fillImage writes the read-only segments into the image slot's memory (len = roEnd-ImageBase).
func (l *imageLayout) fillImage(mem []byte) {
	for _, s := range l.ro {
		copy(mem[s.Vaddr-ImageBase:], s.Data)
	}
}

// ramPlan is how one instance uses its RAM.
type ramPlan struct {
	size     uint64 // bytes of RAM at RAMBase
	inputGVA uint64 // input buffer: [inputGVA, RAM end)
	freeGVA  uint64 // free memory for the PAL: [freeGVA, inputGVA)
}

// planRAM sizes an instance's RAM from its memory cap and input cap. The stack, writable
// segments and input buffer must all fit in the cap.
func planRAM(l *imageLayout, lim engine.Limits) (ramPlan, error) {
	if lim.MemoryMiB > MaxMemoryMiB {
		return ramPlan{}, fmt.Errorf("memory cap %d MiB exceeds the engine's maximum %d MiB", lim.MemoryMiB, MaxMemoryMiB)
	}
	p := ramPlan{size: uint64(lim.MemoryMiB) << 20}
	end := RAMBase + p.size
	in := pageUp(uint64(max(lim.MaxInput, 0)))
	if in > p.size || end-in < l.dataEnd {
		return ramPlan{}, fmt.Errorf("%w: %d MiB cannot hold the stack (%d KiB), data (%d KiB) and input buffer (%d KiB)",
			engine.ErrOutOfMemory, lim.MemoryMiB, StackSize>>10, (l.dataEnd-DataBase)>>10, in>>10)
	}
	p.inputGVA = end - in
	p.freeGVA = l.dataEnd
	return p, nil
}

// fillRAM initialises fresh (zeroed) RAM with the writable segments.
func (l *imageLayout) fillRAM(ram []byte) {
	for _, s := range l.rw {
		copy(ram[s.Vaddr-RAMBase:], s.Data)
	}
}

// Page-table entry bits.
const (
	ptP  = 1 << 0
	ptW  = 1 << 1
	ptU  = 1 << 2
	ptA  = 1 << 5
	ptD  = 1 << 6
	ptPS = 1 << 7
	ptNX = 1 << 63
)

// buildSys writes the GDT and the page tables into the system slot's memory. Accessed and
// dirty bits are preset so the CPU never needs to write to the tables.
func buildSys(sys []byte, l *imageLayout, p ramPlan) {
	clear(sys)
	le := binary.LittleEndian
	gdt := sys[gdtGPA:]
	le.PutUint64(gdt[0x00:], 0)
	le.PutUint64(gdt[0x08:], 0x00AF9B000000FFFF) // ring-0 code, 64-bit
	le.PutUint64(gdt[0x10:], 0x00CF93000000FFFF) // ring-0 data
	le.PutUint64(gdt[0x18:], 0x00008B0000000067) // 64-bit TSS (busy) at 0, limit 0x67: no I/O bitmap
	le.PutUint64(gdt[0x20:], 0)
	le.PutUint64(gdt[0x28:], 0x00AFFB000000FFFF) // ring-3 code, 64-bit
	le.PutUint64(gdt[0x30:], 0x00CFF3000000FFFF) // ring-3 data

	le.PutUint64(sys[pml4GPA:], pdptGPA|ptP|ptW|ptU|ptA)
	for i := uint64(0); i < numPDs; i++ {
		le.PutUint64(sys[pdptGPA+8*i:], (pdGPA+i*pageSize)|ptP|ptW|ptU|ptA)
	}
	pde := func(addr, bits uint64) { le.PutUint64(sys[pdGPA+8*(addr/hugePage):], addr|bits|ptP|ptA|ptPS) }
	pde(0, ptW|ptD|ptNX)               // system page: only the CPU itself reads it
	pde(DoorbellGPA, ptW|ptU|ptD|ptNX) // no slot behind it: every access exits to the host
	for a := uint64(ImageBase); a < l.roEnd; a += hugePage {
		pde(a&^(hugePage-1), ptU) // read-only, executable
	}
	for a := uint64(RAMBase); a < RAMBase+p.size; a += hugePage {
		pde(a, ptW|ptU|ptD|ptNX) // writable, never executable
	}
}

func pageUp(n uint64) uint64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// region is a range of guest memory and its host view.
type region struct {
	base     uint64
	mem      []byte
	writable bool
}

// guestMem translates the PAL's pointers into host slices for hostcalls.
type guestMem struct {
	image, ram region
}

// Buffer implements engine.Memory: the host view of the guest buffer [gva, gva+n), if it lies
// entirely inside one region the PAL may pass this way (writes: RAM only; reads: RAM or its
// own image). engine.Hostcall checks sizes and empty buffers first (docs/abi.md §2).
// The result's capacity is its length, so nothing can append past the buffer.
func (g *guestMem) Buffer(gva uint64, n uint32, write bool) ([]byte, bool) {
	end := gva + uint64(n)
	if end < gva {
		return nil, false
	}
	for _, r := range [2]*region{&g.ram, &g.image} {
		if write && !r.writable {
			continue
		}
		if gva >= r.base && end <= r.base+uint64(len(r.mem)) {
			off := gva - r.base
			return r.mem[off : off+uint64(n) : off+uint64(n)], true
		}
	}
	return nil, false
}
