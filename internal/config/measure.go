package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// Domain-separation tags of application measurements (docs/configurations.md §2). They
// differ from the PAL tags (pal package), so an executable and a PAL never collide.
const (
	tagApp  = "palisade.app.v1\x00"
	tagFile = "file\x00"
	tagTree = "tree\x00"
)

// Entry types in the tree encoding.
const (
	entryFile    byte = 1
	entryDir     byte = 2
	entrySymlink byte = 3
)

// MaxTreeEntries bounds a tree so that a hostile directory cannot exhaust memory.
const MaxTreeEntries = 1 << 20

// ErrUnsupportedFile is returned for a device, socket or FIFO inside a tree.
var ErrUnsupportedFile = errors.New("unsupported file type")

// MeasureReader measures a single executable of size bytes read from r:
//
//	SHA-256( "palisade.app.v1\x00" ‖ "file\x00" ‖ u64 size ‖ bytes )
//
// It fails if r does not hold exactly size bytes (the file changed while being measured).
func MeasureReader(r io.Reader, size int64) (Measurement, error) {
	h := sha256.New()
	h.Write([]byte(tagApp + tagFile))
	putU64(h, uint64(size))
	if err := copyExactly(h, r, size); err != nil {
		return Measurement{}, err
	}
	var m Measurement
	h.Sum(m[:0])
	return m, nil
}

// MeasureBytes is MeasureReader over a byte slice.
func MeasureBytes(b []byte) Measurement {
	m, _ := MeasureReader(bytes.NewReader(b), int64(len(b)))
	return m
}

// MeasureFile measures the regular file at path (symlinks are followed: this is the file that
// would be executed).
func MeasureFile(path string) (Measurement, error) {
	f, err := os.Open(path)
	if err != nil {
		return Measurement{}, fmt.Errorf("measure: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Measurement{}, fmt.Errorf("measure: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Measurement{}, fmt.Errorf("measure %s: %w: not a regular file", path, ErrUnsupportedFile)
	}
	m, err := MeasureReader(f, st.Size())
	if err != nil {
		return Measurement{}, fmt.Errorf("measure %s: %w", path, err)
	}
	return m, nil
}

func copyExactly(w io.Writer, r io.Reader, size int64) error {
	n, err := io.Copy(w, io.LimitReader(r, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("file changed while being measured: read %d of %d bytes", n, size)
	}
	var one [1]byte
	if k, _ := r.Read(one[:]); k != 0 {
		return fmt.Errorf("file changed while being measured: longer than %d bytes", size)
	}
	return nil
}

func putU64(h hash.Hash, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

func putBytes(h hash.Hash, b []byte) {
	putU64(h, uint64(len(b)))
	h.Write(b)
}

// unixMode maps Go's file mode to the permission bits of stat(2), setuid/setgid/sticky
// included, so the encoding does not depend on Go's internal bit layout.
func unixMode(m fs.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

type treeEntry struct {
	rel  string // slash-separated, relative to the root
	mode fs.FileMode
}

// MeasureTree measures the directory tree under root (the root directory itself, its name and
// its mode are not part of it). Every entry below root, in byte-wise order of its relative
// slash-separated path, contributes
//
//	u64 len(path) ‖ path ‖ u8 type ‖ u32 mode ‖ type-specific
//
// where type 1 (file) is followed by u64 size ‖ contents, type 2 (directory) by nothing and
// type 3 (symlink, never followed) by u64 len(target) ‖ target, and mode holds the permission
// bits with setuid/setgid/sticky (0 for symlinks, whose mode is not portable). The hash is
//
//	SHA-256( "palisade.app.v1\x00" ‖ "tree\x00" ‖ entries ‖ u64 number of entries )
//
// Owners, timestamps and extended attributes are not measured: they differ between machines.
// Devices, sockets and FIFOs are refused.
func MeasureTree(root string) (Measurement, error) {
	st, err := os.Lstat(root)
	if err != nil {
		return Measurement{}, fmt.Errorf("measure tree: %w", err)
	}
	if st.Mode()&os.ModeSymlink != 0 {
		// Following it would measure another path than the one named; refused, but named.
		target, _ := os.Readlink(root)
		return Measurement{}, fmt.Errorf("measure tree %s: a symbolic link to %s: give the directory itself", root, target)
	}
	if !st.IsDir() {
		return Measurement{}, fmt.Errorf("measure tree %s: not a directory", root)
	}
	var entries []treeEntry
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		if len(entries) >= MaxTreeEntries {
			return fmt.Errorf("more than %d entries", MaxTreeEntries)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		entries = append(entries, treeEntry{rel: filepath.ToSlash(rel), mode: info.Mode()})
		return nil
	})
	if err != nil {
		return Measurement{}, fmt.Errorf("measure tree %s: %w", root, err)
	}
	// WalkDir's order is per directory; sorting full paths gives one order that any
	// implementation can reproduce without walking the same way.
	sort.Slice(entries, func(i, j int) bool { return entries[i].rel < entries[j].rel })

	h := sha256.New()
	h.Write([]byte(tagApp + tagTree))
	for _, e := range entries {
		full := filepath.Join(root, filepath.FromSlash(e.rel))
		putBytes(h, []byte(e.rel))
		var mode [4]byte
		switch t := e.mode.Type(); {
		case t == 0:
			h.Write([]byte{entryFile})
			binary.LittleEndian.PutUint32(mode[:], unixMode(e.mode))
			h.Write(mode[:])
			if err := hashFile(h, full); err != nil {
				return Measurement{}, fmt.Errorf("measure tree %s: %s: %w", root, e.rel, err)
			}
		case t == fs.ModeDir:
			h.Write([]byte{entryDir})
			binary.LittleEndian.PutUint32(mode[:], unixMode(e.mode))
			h.Write(mode[:])
		case t == fs.ModeSymlink:
			target, err := os.Readlink(full)
			if err != nil {
				return Measurement{}, fmt.Errorf("measure tree %s: %w", root, err)
			}
			h.Write([]byte{entrySymlink})
			h.Write(mode[:])
			putBytes(h, []byte(target))
		default:
			return Measurement{}, fmt.Errorf("measure tree %s: %s: %w (%v)", root, e.rel, ErrUnsupportedFile, t)
		}
	}
	putU64(h, uint64(len(entries)))
	var m Measurement
	h.Sum(m[:0])
	return m, nil
}

// hashFile writes u64 size ‖ contents of a regular file, refusing anything that is no longer
// a regular file (O_NOFOLLOW: a file swapped for a symlink after the walk is not followed).
func hashFile(h hash.Hash, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("changed type while being measured")
	}
	putU64(h, uint64(st.Size()))
	return copyExactly(h, f, st.Size())
}
