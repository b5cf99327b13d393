package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
)

// bbolt's file layout (go.etcd.io/bbolt, page.go and meta.go): two meta pages at the start of
// the file, each a 16-byte page header then
//
//	magic u32 ‖ version u32 ‖ page size u32 ‖ flags u32 ‖ root bucket (pgid u64, sequence u64) ‖
//	freelist pgid u64 ‖ pgid u64 (the high-water mark) ‖ txid u64 ‖ checksum u64
//
// in the machine's byte order, the checksum being FNV-64a of the meta before it. The database
// of the meta with the highest txid that verifies spans pgid pages.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	boltPageHeader  = 16
	boltMetaSumSpan = 56 // bytes of the meta covered by its checksum
	boltMetaLen     = boltMetaSumSpan + 8
)

// boltMeta is what checkStateFile reads of one meta page.
type boltMeta struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// parseBoltMeta decodes the meta page at the start of b; ok is false unless it verifies.
func parseBoltMeta(b []byte) (m boltMeta, ok bool) {
	if len(b) < boltPageHeader+boltMetaLen {
		return m, false
	}
	b = b[boltPageHeader:]
	e := binary.NativeEndian
	if e.Uint32(b) != boltMagic || e.Uint32(b[4:]) != boltVersion {
		return m, false
	}
	h := fnv.New64a()
	h.Write(b[:boltMetaSumSpan])
	if h.Sum64() != e.Uint64(b[boltMetaSumSpan:]) {
		return m, false
	}
	m = boltMeta{pageSize: e.Uint32(b[8:]), pgid: e.Uint64(b[40:]), txid: e.Uint64(b[48:])}
	return m, m.pageSize >= 1024 && m.pageSize <= 1<<16 && m.pageSize&(m.pageSize-1) == 0
}

// stateFileNeeds returns the length the database whose first bytes are head must have (the
// high-water mark of its newest valid meta page), or ok false if no meta page in head verifies.
// head must hold the first two pages (2 × 64 KiB covers every page size bbolt uses).
func stateFileNeeds(head []byte) (need uint64, ok bool) {
	m0, ok0 := parseBoltMeta(head)
	var m1 boltMeta
	ok1 := false
	for _, ps := range []uint32{m0.pageSize, 4096, 16384, 65536} { // meta 1 is one page in
		if ps != 0 && int(ps) < len(head) {
			if m1, ok1 = parseBoltMeta(head[ps:]); ok1 && m1.pageSize == ps {
				break
			}
			ok1 = false
		}
	}
	m := m0
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		m = m1
	case !ok0 && !ok1:
		return 0, false
	}
	if m.pgid > (1<<63)/uint64(m.pageSize) {
		return 1 << 63, true // a corrupt but checksummed high-water mark: no file is this long
	}
	return m.pgid * uint64(m.pageSize), true
}

// checkStateFile refuses a state db that bbolt would silently replace or crash on: an empty
// file (bbolt writes a new, empty database over it: every registration and key would be gone
// without a word) and a file shorter than its own metadata says (bbolt maps the missing pages
// and the daemon dies of SIGBUS when it reads them). Both are what a truncation leaves: an
// interrupted copy or restore, a full disk. A missing file is a fresh state and fine; a file
// whose meta pages do not verify is left to bbolt, which refuses it.
func checkStateFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	const restore = "restore it from a backup, or move it away to start with no PALs and no keys"
	if fi.Size() == 0 {
		return fmt.Errorf("state db %s is empty (0 bytes): it was truncated; %s", path, restore)
	}
	head := make([]byte, 2<<16)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("state db %s: %w", path, err)
	}
	if need, ok := stateFileNeeds(head[:n]); ok && uint64(fi.Size()) < need {
		return fmt.Errorf("state db %s is truncated: %d bytes, but its last transaction spans %d; %s",
			path, fi.Size(), need, restore)
	}
	return nil
}
