package srchash

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHash(t *testing.T) {
	tree := func(files map[string]string) string {
		dir := t.TempDir()
		for name, content := range files {
			p := filepath.Join(dir, "src", name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return filepath.Join(dir, "src")
	}
	hash := func(tag, dir string) string {
		h, err := Hash(tag, dir)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	base := hash("a", tree(map[string]string{"main.go": "x", "sub/b.go": "y"}))
	tests := []struct {
		name  string
		tag   string
		files map[string]string
		same  bool
	}{
		{"same tree elsewhere", "a", map[string]string{"main.go": "x", "sub/b.go": "y"}, true},
		{"test files do not count", "a", map[string]string{"main.go": "x", "sub/b.go": "y", "x_test.go": "z"}, true},
		{"content", "a", map[string]string{"main.go": "X", "sub/b.go": "y"}, false},
		{"file name", "a", map[string]string{"main.go": "x", "sub/c.go": "y"}, false},
		{"added file", "a", map[string]string{"main.go": "x", "sub/b.go": "y", "c.go": ""}, false},
		{"tag", "b", map[string]string{"main.go": "x", "sub/b.go": "y"}, false},
	}
	for _, tt := range tests {
		if got := hash(tt.tag, tree(tt.files)) == base; got != tt.same {
			t.Errorf("%s: same hash = %v, want %v", tt.name, got, tt.same)
		}
	}
	if _, err := Hash("a", filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("hash of a missing path succeeded")
	}
}
