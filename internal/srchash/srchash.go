// Package srchash names builds by their sources, so that tests and tools can keep built PALs
// in a cache across runs and rebuild only when a source changes.
package srchash

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// Hash digests the Go version, tag (what is built, and how) and every file under paths (files or
// directories), _test.go files excepted: they are not part of a build. Files are named relative
// to the path they were found under, so the same tree hashes the same wherever it is checked out.
func Hash(tag string, paths ...string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", runtime.Version(), tag)
	for _, p := range paths {
		var files []string
		err := filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasSuffix(path, "_test.go") {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			return "", err
		}
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			rel, err := filepath.Rel(p, f)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s\x00%s\x00%d\x00", filepath.Base(p), rel, len(b))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}
