package server

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/visor"
)

// storeFile makes a closed state db with three registrations, one of a 300 KB image so that
// the file spans many pages, and returns its path and bytes.
func storeFile(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	for h, img := range [][]byte{bytes.Repeat([]byte{1}, 300<<10), []byte("two"), []byte("three")} {
		if err := s.Put(Record{Handle: visor.Handle(h + 1), Name: "r"}, img); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

// TestOpenStoreTruncated: a truncated state db is refused with an error that says so, and left
// as it is, instead of being replaced by an empty database (0 bytes: every registration and key
// gone, silently) or crashing the daemon with SIGBUS (pages its metadata counts are missing).
func TestOpenStoreTruncated(t *testing.T) {
	_, whole := storeFile(t)
	need, ok := stateFileNeeds(whole)
	if !ok || need > uint64(len(whole)) || need < 300<<10 {
		t.Fatalf("stateFileNeeds of an intact %d-byte file = %d, %v", len(whole), need, ok)
	}
	// A checksum that fails in meta page 0: bbolt then reads meta page 1, and so do we.
	meta0Bad := bytes.Clone(whole)
	meta0Bad[boltPageHeader+boltMetaSumSpan] ^= 1
	for _, tc := range []struct {
		name    string
		content []byte
		want    string // "": opens, with the three records
	}{
		{"intact", whole, ""},
		{"meta page 0 corrupt", meta0Bad, ""},
		{"empty", nil, "is empty (0 bytes)"},
		{"one page left", whole[:4096], "is truncated"},
		{"half", whole[:len(whole)/2], "is truncated"},
		{"one byte short", whole[:need-1], "is truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := OpenStore(path)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if recs, err := s.Records(); err != nil || len(recs) != 3 {
					t.Fatalf("Records = %d, %v", len(recs), err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("OpenStore of a %d-byte file succeeded", len(tc.content))
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "restore it from a backup") {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, tc.content) {
				t.Fatal("the refused file was changed")
			}
		})
	}
}

// FuzzStateFileNeeds: any first bytes of a file are read without a panic, and a length is
// only given, in whole pages, for a meta page that verifies.
func FuzzStateFileNeeds(f *testing.F) {
	dir := f.TempDir()
	s, err := OpenStore(filepath.Join(dir, "state.db"))
	if err != nil {
		f.Fatal(err)
	}
	s.Close()
	b, err := os.ReadFile(filepath.Join(dir, "state.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:8192])
	f.Add(b[:100])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, head []byte) {
		need, ok := stateFileNeeds(head)
		if !ok && need != 0 {
			t.Fatalf("need %d without a valid meta page", need)
		}
		// Page sizes are powers of two from 1 KiB: the length is a whole number of pages.
		if ok && need%1024 != 0 {
			t.Fatalf("need %d: not a whole number of pages", need)
		}
	})
}
