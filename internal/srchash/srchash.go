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

// Cached returns the file name from the test build cache (os.UserCacheDir()/palisade-test),
// building it with build (which writes the file it is given) if it is not there. name should
// carry a Hash of everything the build reads, so that a stale file is never returned.
func Cached(name string, build func(out string) error) ([]byte, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "palisade-test")
	out := filepath.Join(dir, name)
	if b, err := os.ReadFile(out); err == nil {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	defer os.Remove(tmp)
	if err := build(tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}
