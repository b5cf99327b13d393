package atomicfile

import (
	"os"
	"path/filepath"
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
