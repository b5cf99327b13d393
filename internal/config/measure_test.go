package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Golden values computed once by this implementation; they pin the encoding of
// docs/configurations.md §2, so another machine or implementation must reproduce them. They
// were cross-checked with an independent Python implementation of §2 (docs/configurations.md).
const (
	goldenTree = "bf74948eaae3b5cfea7292e181792d6b27f970728ea31e3fd1cf80989fe7042c"
	goldenFile = "b88d3cde8cea6f198258ae97602e1de5e0cfd48d1a75bf61068f6d4039c0bf04"
)

// makeTree builds a small tree with every supported entry type, with modes set explicitly
// (the umask must not matter).
func makeTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mk := func(rel string, mode os.FileMode, data string) {
		p := filepath.Join(root, rel)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "etc", "etc/empty.d", "share"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(root, d), 0o755)
	}
	mk("bin/app", 0o755, "#!/bin/sh\necho hello\n")
	mk("bin/helper", os.ModeSetuid|0o755, "\x7fELF not really")
	mk("etc/app.conf", 0o644, "listen=:8443\n")
	mk("share/empty", 0o600, "")
	if err := os.Symlink("../etc/app.conf", filepath.Join(root, "bin/conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(root, "dangling")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestMeasureTreeGolden(t *testing.T) {
	root := makeTree(t)
	m, err := MeasureTree(root)
	if err != nil {
		t.Fatal(err)
	}
	if m.String() != goldenTree {
		t.Fatalf("tree measurement %s, golden %s", m, goldenTree)
	}
	// The root directory's own mode and name do not count.
	os.Chmod(root, 0o711)
	moved := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Rename(root, moved); err != nil {
		t.Fatal(err)
	}
	if m2, err := MeasureTree(moved); err != nil || m2 != m {
		t.Fatalf("moved tree: %s %v", m2, err)
	}
}

func TestMeasureTreeChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(root string) error
	}{
		{"file mode", func(r string) error { return os.Chmod(filepath.Join(r, "etc/app.conf"), 0o640) }},
		{"setuid bit", func(r string) error { return os.Chmod(filepath.Join(r, "bin/helper"), 0o755) }},
		{"dir mode", func(r string) error { return os.Chmod(filepath.Join(r, "etc/empty.d"), 0o700) }},
		{"content", func(r string) error {
			return os.WriteFile(filepath.Join(r, "bin/app"), []byte("#!/bin/sh\necho hellO\n"), 0)
		}},
		{"appended byte", func(r string) error {
			f, err := os.OpenFile(filepath.Join(r, "share/empty"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			f.Write([]byte{0})
			return f.Close()
		}},
		{"symlink target", func(r string) error {
			os.Remove(filepath.Join(r, "bin/conf"))
			return os.Symlink("../etc/app.conf2", filepath.Join(r, "bin/conf"))
		}},
		{"symlink becomes file", func(r string) error {
			os.Remove(filepath.Join(r, "dangling"))
			return os.WriteFile(filepath.Join(r, "dangling"), []byte("/nonexistent/target"), 0o777)
		}},
		{"added file", func(r string) error { return os.WriteFile(filepath.Join(r, "etc/empty.d/new"), nil, 0o644) }},
		{"added dir", func(r string) error { return os.Mkdir(filepath.Join(r, "share/sub"), 0o755) }},
		{"removed file", func(r string) error { return os.Remove(filepath.Join(r, "share/empty")) }},
		{"renamed file", func(r string) error {
			return os.Rename(filepath.Join(r, "share/empty"), filepath.Join(r, "share/empty2"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := makeTree(t)
			if err := tc.change(root); err != nil {
				t.Fatal(err)
			}
			m, err := MeasureTree(root)
			if err != nil {
				t.Fatal(err)
			}
			if m.String() == goldenTree {
				t.Fatal("change did not change the measurement")
			}
		})
	}
}

func TestMeasureTreeIgnoresTimesAndFollowsNoLink(t *testing.T) {
	root := makeTree(t)
	// A symlink to a directory outside the tree is measured as a link, not walked.
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644)
	os.Remove(filepath.Join(root, "dangling"))
	os.Symlink(outside, filepath.Join(root, "dangling"))
	m1, err := MeasureTree(root)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(outside, "secret"), []byte("changed"), 0o644)
	os.Chtimes(filepath.Join(root, "bin/app"), timeZero, timeZero)
	m2, err := MeasureTree(root)
	if err != nil || m1 != m2 {
		t.Fatalf("measurement followed a symlink or depends on times: %s %s %v", m1, m2, err)
	}
}

func TestMeasureTreeRefusesSpecialFiles(t *testing.T) {
	root := makeTree(t)
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	if _, err := MeasureTree(root); !errors.Is(err, ErrUnsupportedFile) {
		t.Fatalf("got %v, want ErrUnsupportedFile", err)
	}
	f := filepath.Join(root, "bin/app")
	if _, err := MeasureTree(f); err == nil {
		t.Fatal("a file measured as a tree")
	}
}

// A tree given through a symbolic link to it is refused naming the link and where it points
// (it said "not a directory" of what `ls` shows as one: palisade measure LINK, exec --tree LINK).
func TestMeasureTreeRootSymlinkNamed(t *testing.T) {
	root := makeTree(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	_, err := MeasureTree(link)
	if err == nil || !strings.Contains(err.Error(), ": a symbolic link to "+root+": give the directory itself") {
		t.Fatalf("got %v", err)
	}
}

func TestMeasureFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tool")
	data := []byte("#!/bin/sh\nexit 0\n")
	os.WriteFile(p, data, 0o755)
	m, err := MeasureFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.String() != goldenFile {
		t.Fatalf("file measurement %s, golden %s", m, goldenFile)
	}
	if MeasureBytes(data) != m {
		t.Fatal("MeasureBytes differs from MeasureFile")
	}
	if MeasureBytes(append(data, 0)) == m {
		t.Fatal("appended byte did not change the measurement")
	}
	if _, err := MeasureFile(filepath.Dir(p)); !errors.Is(err, ErrUnsupportedFile) {
		t.Fatalf("directory measured as a file: %v", err)
	}
}

func BenchmarkMeasureTree(b *testing.B) {
	root := b.TempDir()
	for i := range 200 {
		d := filepath.Join(root, "d", string(rune('a'+i%26)))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "f"+string(rune('a'+i/26))), make([]byte, 4096), 0o644)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := MeasureTree(root); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMeasureFile1MiB(b *testing.B) {
	p := filepath.Join(b.TempDir(), "f")
	os.WriteFile(p, make([]byte, 1<<20), 0o755)
	b.SetBytes(1 << 20)
	for b.Loop() {
		if _, err := MeasureFile(p); err != nil {
			b.Fatal(err)
		}
	}
}

var timeZero = time.Unix(0, 0)
