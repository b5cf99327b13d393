package atomicfile

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	for _, content := range []string{"old", "new"} {
		if err := WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read %q %v, want %q", b, err, content)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, TempPattern)); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestInterruptedBeforeRename shows what a crash between writing and renaming leaves: the old
// contents in place and a temporary file that TempPattern finds.
func TestInterruptedBeforeRename(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	var during string
	var temps []string
	err := WriteFileHook(p, []byte("new"), 0o644, func() {
		b, _ := os.ReadFile(p)
		during = string(b)
		temps, _ = filepath.Glob(filepath.Join(dir, TempPattern))
	})
	if err != nil {
		t.Fatal(err)
	}
	if during != "old" || len(temps) != 1 {
		t.Fatalf("before the rename: contents %q, temporary files %v", during, temps)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("after: %q", b)
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	if err := WriteFile(filepath.Join(t.TempDir(), "no", "such"), nil, 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

// TestMkdirAll: each directory MkdirAll creates is made durable in its parent, once; existing
// directories are not touched, and a file in the way is an error.
func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	var synced []string
	syncDir = func(dir string) error {
		synced = append(synced, dir)
		return SyncDir(dir)
	}
	t.Cleanup(func() { syncDir = SyncDir })
	for _, tc := range []struct {
		dir  string
		want []string // directories fsync'd, in order
	}{
		{filepath.Join(root, "a", "b", "c"), []string{root, filepath.Join(root, "a"), filepath.Join(root, "a", "b")}},
		{filepath.Join(root, "a", "b", "c"), nil},                                 // exists
		{filepath.Join(root, "a", "d") + "/", []string{filepath.Join(root, "a")}}, // one new
	} {
		synced = nil
		if err := MkdirAll(tc.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(tc.dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v", tc.dir, fi, err)
		}
		if !slices.Equal(synced, tc.want) {
			t.Errorf("MkdirAll(%s) synced %v, want %v", tc.dir, synced, tc.want)
		}
	}
	f := filepath.Join(root, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{f, filepath.Join(f, "sub")} {
		if err := MkdirAll(d, 0o700); err == nil {
			t.Errorf("MkdirAll(%s) through a file succeeded", d)
		}
	}
}
