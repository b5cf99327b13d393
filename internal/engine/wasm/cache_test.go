package wasm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/conformance"
	"github.com/palisade-project/palisade/internal/tmpfstest"
	"github.com/palisade-project/palisade/internal/utpm"
)

// TestCacheDirFaults: the compilation cache is only a cache. An entry that no longer reads
// (torn by a crash, damaged on disk) or a directory that cannot take a new entry (disk full)
// must cost a compilation, never refuse a valid image: once, a truncated entry made every
// registration of that image fail as "invalid PAL image", and palisaded failed to restore its
// PALs at every start until someone deleted the cache by hand.
func TestCacheDirFaults(t *testing.T) {
	img := palModule().bytes()
	cases := []struct {
		name   string
		dir    func(t *testing.T) string
		break_ func(t *testing.T, dir string) (repair func())
	}{
		{"truncated entry", func(t *testing.T) string { return t.TempDir() }, func(t *testing.T, dir string) func() {
			forEachEntry(t, dir, func(p string) error { return os.Truncate(p, 20) })
			return nil
		}},
		{"garbage entry", func(t *testing.T) string { return t.TempDir() }, func(t *testing.T, dir string) func() {
			forEachEntry(t, dir, func(p string) error { return os.WriteFile(p, []byte("WAZEVO\x07v1.12.0garbage"), 0o600) })
			return nil
		}},
		{"empty entry", func(t *testing.T) string { return t.TempDir() }, func(t *testing.T, dir string) func() {
			forEachEntry(t, dir, func(p string) error { return os.Truncate(p, 0) })
			return nil
		}},
		{"disk full", func(t *testing.T) string { return tmpfstest.Mount(t, 256<<10) }, func(t *testing.T, dir string) func() {
			forEachEntry(t, dir, os.Remove) // the entry must be written again, and cannot be
			return tmpfstest.Fill(t, dir)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			// A first engine fills the cache, as a daemon does before it stops.
			e := newTestEngine(t, WithCacheDir(dir))
			mod, err := compile(t, e, img)
			if err != nil {
				t.Fatal(err)
			}
			mod.Close(context.Background())
			e.Close(context.Background())

			repair := tc.break_(t, dir)
			// A restarted daemon compiles the same image again.
			e = newTestEngine(t, WithCacheDir(dir))
			mod, err = compile(t, e, img)
			if errors.Is(err, engine.ErrBadImage) {
				t.Fatalf("a valid image refused because of the cache: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			host := &conformance.Host{T: conformance.NewPlatform(t).NewTPM(utpm.Digest{1})}
			inst, err := mod.Instantiate(context.Background(), host, engine.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := inst.Call(context.Background(), nil)
			if err != nil || res.Status != 7 {
				t.Fatalf("call: %+v %v, want status 7", res, err)
			}
			inst.Close(context.Background())
			mod.Close(context.Background())
			e.Close(context.Background())
			if repair != nil {
				repair()
			}
			// The next engine finds a good entry again (or none), and compiles.
			e = newTestEngine(t, WithCacheDir(dir))
			if mod, err = compile(t, e, img); err != nil {
				t.Fatal(err)
			}
			mod.Close(context.Background())
		})
	}
}

// forEachEntry applies f to every file in the cache directory's version subdirectories.
func forEachEntry(t *testing.T, dir string, f func(path string) error) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*", "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no cache entries in %s (%v)", dir, err)
	}
	for _, p := range paths {
		if err := f(p); err != nil {
			t.Fatal(err)
		}
	}
}
