package none_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/palisade-project/palisade/internal/rot"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
)

var visor = utpm.Digest{0x76}

func open(t testing.TB, dir string) *none.Root {
	t.Helper()
	r, err := none.Open(dir, visor)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	r := open(t, dir)
	var _ rot.RootOfTrust = r
	if r.Mode() != "none" {
		t.Fatalf("mode %q", r.Mode())
	}
	cfg := r.Platform()
	if cfg.Rooted || cfg.Visor != visor || len(cfg.MasterSecret) != 32 || cfg.Counters == nil {
		t.Fatalf("platform config %+v", cfg)
	}
	if ev, err := r.Endorse(context.Background(), []byte("n")); ev != nil || err != nil {
		t.Fatalf("Endorse = %x, %v; want nil, nil", ev, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "master.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master.key: %v, mode %v", err, fi.Mode())
	}

	// A second visor on the same state directory is refused while the first runs.
	if _, err := none.Open(dir, visor); err == nil {
		t.Fatal("second Open of a held state dir succeeded")
	}
	id1 := rot.IdentityPublic(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// A temporary file left by a crash is removed at the next Open.
	if err := os.WriteFile(filepath.Join(dir, ".counters.tmp123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := open(t, dir)
	defer r2.Close()
	cfg2 := r2.Platform()
	if !bytes.Equal(cfg2.MasterSecret, cfg.MasterSecret) {
		t.Fatal("master secret changed across reopen")
	}
	if rot.IdentityPublic(r2).Equal(id1) {
		t.Fatal("identity key is not fresh per Open")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 { // master.key, lock (no temp files left)
		t.Fatalf("state dir holds %d entries", len(ents))
	}
}

func TestSealedDataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	r := open(t, dir)
	p, err := utpm.NewPlatform(r.Platform())
	if err != nil {
		t.Fatal(err)
	}
	blob, err := p.NewTPM(utpm.Digest{1}).Seal([]byte("secret"), utpm.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	r2 := open(t, dir)
	defer r2.Close()
	p2, _ := utpm.NewPlatform(r2.Platform())
	if data, _, err := p2.NewTPM(utpm.Digest{1}).Unseal(blob); err != nil || string(data) != "secret" {
		t.Fatalf("after restart: %q, %v", data, err)
	}

	r3 := open(t, t.TempDir())
	defer r3.Close()
	p3, _ := utpm.NewPlatform(r3.Platform())
	if _, _, err := p3.NewTPM(utpm.Digest{1}).Unseal(blob); !errors.Is(err, utpm.ErrForeign) {
		t.Fatalf("other state dir: %v, want ErrForeign", err)
	}
}

func TestBadMasterKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"short", make([]byte, 31), 0o600},
		{"long", make([]byte, 33), 0o600},
		{"empty", nil, 0o600},
		{"group readable", make([]byte, 32), 0o640},
		{"world readable", make([]byte, 32), 0o604},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "master.key")
			if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tc.mode)
			if r, err := none.Open(dir, visor); err == nil {
				r.Close()
				t.Fatal("Open accepted a bad master.key")
			}
			// The lock is released after a failed Open.
			os.WriteFile(path, make([]byte, 32), 0o600)
			os.Chmod(path, 0o600)
			r := open(t, dir)
			r.Close()
		})
	}
}

func TestCountersSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	pal := utpm.Digest{7}
	r := open(t, dir)
	c := r.Platform().Counters
	for want := uint64(1); want <= 3; want++ {
		if v, err := c.Increment(pal, 5); err != nil || v != want {
			t.Fatalf("increment: %d, %v; want %d", v, err, want)
		}
	}
	c.Increment(utpm.Digest{8}, 5)
	r.Close()

	r2 := open(t, dir)
	defer r2.Close()
	c2 := r2.Platform().Counters
	for _, tc := range []struct {
		pal  utpm.Digest
		id   uint32
		want uint64
	}{{pal, 5, 3}, {utpm.Digest{8}, 5, 1}, {pal, 6, 0}, {utpm.Digest{9}, 5, 0}} {
		if v, err := c2.Read(tc.pal, tc.id); err != nil || v != tc.want {
			t.Fatalf("read %x/%d: %d, %v; want %d", tc.pal[:1], tc.id, v, err, tc.want)
		}
	}
	if v, _ := c2.Increment(pal, 5); v != 4 {
		t.Fatalf("increment after reopen: %d, want 4", v)
	}
}

func TestCorruptCounters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "counters")
	c, err := none.OpenFileCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Increment(utpm.Digest{1}, 1)
	c.Increment(utpm.Digest{2}, 2)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A body with a valid checksum but a bad structure, to reach the parser's own checks.
	resum := func(body []byte) []byte {
		s := sha256.Sum256(body)
		return append(bytes.Clone(body), s[:]...)
	}
	body := good[:len(good)-32]
	cases := map[string][]byte{
		"empty":           {},
		"truncated":       good[:len(good)-1],
		"bad magic":       resum(append([]byte("XLCTR\x00\x00\x01"), body[8:]...)),
		"count too large": resum(append(append(bytes.Clone(body[:8]), 3, 0, 0, 0), body[12:]...)),
		"duplicate":       resum(append(append(append(bytes.Clone(body[:8]), 2, 0, 0, 0), body[12:12+44]...), body[12:12+44]...)),
	}
	for i := range good {
		mut := bytes.Clone(good)
		mut[i] ^= 0x80
		cases[fmt.Sprintf("byte %d flipped", i)] = mut
	}
	for name, b := range cases {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := none.OpenFileCounters(path); !errors.Is(err, none.ErrCorrupt) {
			t.Errorf("%s: error %v, want ErrCorrupt", name, err)
		}
	}
	os.WriteFile(path, good, 0o600)
	c2, err := none.OpenFileCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c2.Read(utpm.Digest{2}, 2); v != 1 {
		t.Fatalf("restored file reads %d", v)
	}
}

func TestIncrementFailureKeepsValue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	os.Mkdir(dir, 0o700)
	c, err := none.OpenFileCounters(filepath.Join(dir, "counters"))
	if err != nil {
		t.Fatal(err)
	}
	c.Increment(utpm.Digest{1}, 1)
	// Removing the directory makes every write fail, even for root.
	os.RemoveAll(dir)
	if _, err := c.Increment(utpm.Digest{1}, 1); err == nil {
		t.Fatal("increment succeeded without storage")
	}
	if _, err := c.Increment(utpm.Digest{3}, 1); err == nil {
		t.Fatal("increment succeeded without storage")
	}
	if v, _ := c.Read(utpm.Digest{1}, 1); v != 1 {
		t.Fatalf("failed increment changed the value to %d", v)
	}
	if v, _ := c.Read(utpm.Digest{3}, 1); v != 0 {
		t.Fatalf("failed increment created a counter at %d", v)
	}
}

func TestCountersConcurrent(t *testing.T) {
	c, err := none.OpenFileCounters(filepath.Join(t.TempDir(), "counters"))
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 4, 25
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				v, err := c.Increment(utpm.Digest{1}, 1)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[v] {
					t.Errorf("value %d returned twice", v)
				}
				seen[v] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if v, _ := c.Read(utpm.Digest{1}, 1); v != goroutines*each {
		t.Fatalf("final %d, want %d", v, goroutines*each)
	}
}

func BenchmarkCounterIncrement(b *testing.B) {
	c, err := none.OpenFileCounters(filepath.Join(b.TempDir(), "counters"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Increment(utpm.Digest{1}, 1); err != nil {
			b.Fatal(err)
		}
	}
}
