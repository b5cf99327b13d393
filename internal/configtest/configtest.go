// Package configtest creates real trusted-configuration states for the tests of packages that
// consume configurations (utpm, engine, attest).
package configtest

import (
	"crypto"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/palisade-project/palisade/internal/config"
)

// NewState initialises a configuration state in a temporary directory, administered by a
// fresh key of algorithm alg ("ed25519" or "es256"), and opens it without a version anchor.
func NewState(t testing.TB, alg string) (admin crypto.Signer, st *config.State) {
	t.Helper()
	admin, err := config.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := config.InitState(dir, admin.Public()); err != nil {
		t.Fatal(err)
	}
	st, err = config.OpenState(dir, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return admin, st
}

// RewriteLastEntry does to the state in dir what someone who can write the directory can: it
// changes the last history entry's time and recomputes its record framing and the pointer
// from the documented formats (docs/configurations.md §3, §4), with a CBOR encoder of its
// own, so that the chain verifies on its own. Only a version anchor's history digest can
// tell. It fails t if the rewritten history does not decode.
func RewriteLastEntry(t testing.TB, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "history"))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := config.DecodeHistory(b)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for i, e := range hist {
		if i == len(hist)-1 {
			e.Time -= 3600
		}
		body, err := enc.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
		out = append(out, body...)
		hist[i] = e
	}
	if _, err := config.DecodeHistory(out); err != nil {
		t.Fatalf("rewritten history does not verify on its own: %v", err)
	}
	var p config.Pointer
	pb, err := os.ReadFile(filepath.Join(dir, "active"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cbor.Unmarshal(pb, &p); err != nil {
		t.Fatal(err)
	}
	p.Head, p.HistoryLen = hist[len(hist)-1].Hash(), uint64(len(out))
	if pb, err = enc.Marshal(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "history"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "active"), pb, 0o644); err != nil {
		t.Fatal(err)
	}
}
