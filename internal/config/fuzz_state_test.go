package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fuzzState is a state directory with two configurations applied, whose files the state fuzz
// target replaces: its bytes, and the hashes an accepted state may report.
type fuzzState struct {
	dir    string
	files  map[string][]byte
	hashes map[Measurement]bool
}

// fastTempDir is a temporary directory on /dev/shm when there is one: every apply and load
// fsyncs, which on a disk made the state fuzz target run 4 inputs a second.
func fastTempDir(f *testing.F) string {
	d, err := os.MkdirTemp("/dev/shm", "palisade-fuzz")
	if err != nil {
		return f.TempDir()
	}
	f.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func newFuzzState(f *testing.F) fuzzState {
	admin := newKey(f, "ed25519")
	dir := filepath.Join(fastTempDir(f), "state")
	if err := InitState(dir, admin.Public()); err != nil {
		f.Fatal(err)
	}
	st, err := OpenState(dir, Options{Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		f.Fatal(err)
	}
	fs := fuzzState{dir: dir, files: map[string][]byte{}, hashes: map[Measurement]bool{}}
	for v := uint64(1); v <= 2; v++ {
		sc, _, err := st.Apply(mustSign(f, baseConfig(v), admin))
		if err != nil {
			f.Fatal(err)
		}
		fs.hashes[sc.Hash] = true
	}
	for _, n := range []string{filePointer, fileAnchor, fileHistory, fileAnchored} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil && !os.IsNotExist(err) {
			f.Fatal(err)
		}
		fs.files[n] = b
	}
	return fs
}

// FuzzStateFiles: whatever bytes are in the state's active pointer, anchor file, history and
// anchor mark, opening and loading the state never crashes, and a state it accepts has one of
// the configurations really applied (stored, signed by the pinned key) active: hostile state
// files can make the state unreadable, never make it report something the administrator did
// not apply.
func FuzzStateFiles(f *testing.F) {
	fs := newFuzzState(f)
	good := fs.files
	f.Add(good[filePointer], good[fileAnchor], good[fileHistory], []byte(nil))
	f.Add(good[filePointer], []byte("1"), good[fileHistory], []byte(nil))
	f.Add(good[filePointer][:len(good[filePointer])-1], good[fileAnchor], good[fileHistory], []byte(nil))
	f.Add(good[filePointer], good[fileAnchor], good[fileHistory][:len(good[fileHistory])/2], []byte(nil))
	f.Add(good[filePointer], good[fileAnchor], good[fileHistory], []byte{0xa2, 0x01, 0x61, 'x', 0x02, 0x58, 0x20})
	f.Add([]byte{0xa0}, []byte("0"), []byte(nil), []byte{0xa0})
	base := fastTempDir(f)
	f.Fuzz(func(t *testing.T, pointer, anchor, history, mark []byte) {
		dir, err := os.MkdirTemp(base, "s")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if err := os.CopyFS(dir, os.DirFS(fs.dir)); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{filePointer: pointer, fileAnchor: anchor, fileHistory: history, fileAnchored: mark} {
			p := filepath.Join(dir, name)
			os.Remove(p)
			if name == fileAnchored && len(b) == 0 {
				continue // no mark: the state as a file-anchored one leaves it
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		st, err := OpenState(dir, Options{})
		if err != nil {
			return
		}
		if sc, err := st.Active(); err == nil && !fs.hashes[sc.Hash] {
			t.Fatalf("state reports configuration %s active, which was never applied", sc.Hash)
		}
		st.History()
	})
}

// FuzzSecretBlob: a secret's file replaced by any bytes is either the blob Put wrote, which
// releases the value, or refused: nothing else ever releases a value.
func FuzzSecretBlob(f *testing.F) {
	admin := newKey(f, "ed25519")
	dir := filepath.Join(fastTempDir(f), "state")
	if err := InitState(dir, admin.Public()); err != nil {
		f.Fatal(err)
	}
	st, err := OpenState(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	c := baseConfig(1)
	c.Apps["web"] = []Measurement{meas("web-1")}
	c.Secrets["s"] = []string{"web"}
	if _, _, err := st.Apply(mustSign(f, c, admin)); err != nil {
		f.Fatal(err)
	}
	_, kid := st.AdminKey()
	store, err := OpenSecretStore(st.SecretsDir(), bytes.Repeat([]byte{7}, 32), kid, st.Active)
	if err != nil {
		f.Fatal(err)
	}
	value := []byte("the value")
	if err := store.Put("s", value); err != nil {
		f.Fatal(err)
	}
	p, _ := store.path("s")
	blob, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	f.Add(blob[:len(blob)-1])
	f.Add(blob[:secretNonce])
	f.Add([]byte("PLCS\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		v, err := store.Release("s", "web", meas("web-1"))
		if err == nil && (!bytes.Equal(b, blob) || !bytes.Equal(v, value)) {
			t.Fatalf("released %q from a blob that is not the one stored", v)
		}
		if err != nil && bytes.Equal(b, blob) {
			t.Fatalf("the stored blob is refused: %v", err)
		}
	})
}

// FuzzParseKeysAndMeasurement: the parsers of the administrator key files and of hex
// measurements never crash; an accepted measurement prints back as what was parsed
// (lower-case hex) and an accepted public key has a key id.
func FuzzParseKeysAndMeasurement(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	der, _ = x509.MarshalPKCS8PrivateKey(priv)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	f.Add([]byte(meas("x").String()))
	f.Add([]byte(strings.ToUpper(meas("x").String())))
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, err := ParsePublicKey(b); err == nil {
			if _, err := PublicKeyID(k); err != nil {
				t.Fatalf("accepted public key has no key id: %v", err)
			}
		}
		ParsePrivateKey(b)
		if m, err := ParseMeasurement(string(b)); err == nil && m.String() != strings.ToLower(string(b)) {
			t.Fatalf("measurement %q prints as %s", b, m)
		}
	})
}
