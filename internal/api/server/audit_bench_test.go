package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/visor"
)

// BenchmarkAuditKeyUse is the cost that auditing adds to each KEY_CREATE/KEY_SIGN of a PAL
// (buffered: written now, fsync'd by the flusher), against a record fsync'd before returning.
func BenchmarkAuditKeyUse(b *testing.B) {
	for _, mode := range []string{"buffered", "synced"} {
		b.Run(mode, func(b *testing.B) {
			a, err := OpenAudit(filepath.Join(b.TempDir(), "audit.log"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			log := a.LogBuffered
			if mode == "synced" {
				log = a.Log
			}
			info := visor.Info{Handle: 0x1234, Name: "signer"}
			for i := 0; b.Loop(); i++ {
				var err error
				if i%2 == 1 {
					err = errors.New("utpm: unsupported")
				}
				if err := log(KeyUseEvent(info, "key-sign", err)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAuditBufferedDurableAtClose checks that buffered records are in the file once Close
// returns, that a second Close is harmless, and that logging after Close fails.
func TestAuditBufferedDurableAtClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := OpenAudit(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	info := visor.Info{Handle: 0x1234, Name: "signer"}
	for i := 0; i < 3; i++ {
		if err := a.LogBuffered(KeyUseEvent(info, "key-sign", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := a.LogBuffered(KeyUseEvent(info, "key-sign", nil)); err == nil {
		t.Fatal("LogBuffered after Close succeeded")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"event":"key_use"`); n != 3 {
		t.Fatalf("%d key_use records in the file, want 3:\n%s", n, b)
	}
}
