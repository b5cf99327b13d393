package apps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/palisade-project/palisade/internal/csdk"
	"github.com/palisade-project/palisade/internal/engine/kvm/cbuild"
	"github.com/palisade-project/palisade/internal/srchash"
)

// SourceRoot finds the palisade module's source tree: the nearest directory at or above the
// working directory whose go.mod declares module github.com/palisade-project/palisade, else the tree this package was
// compiled from.
func SourceRoot() (string, error) {
	isRoot := func(dir string) bool {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		return err == nil && strings.HasPrefix(string(b), "module github.com/palisade-project/palisade\n")
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if isRoot(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if d := filepath.Join(filepath.Dir(file), "..", "..", ".."); isRoot(d) {
			return filepath.Clean(d), nil
		}
	}
	return "", errors.New("cannot find the palisade source tree (run from inside it)")
}

var (
	buildMu sync.Mutex
	built   = map[string][]byte{}
)

// BuildGoPAL builds the Go PAL in package dir pkg (relative to the source root, e.g.
// "examples/tlskey/signer") for GOOS=wasip1 and returns the image. Builds take seconds, so
// images are kept in memory for the process and on disk in the user cache directory, keyed by
// a hash of the Go version, the PAL's application directory, the SDK, signreq and go.mod/go.sum.
func BuildGoPAL(ctx context.Context, pkg string) ([]byte, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := built[pkg]; ok {
		return b, nil
	}
	root, err := SourceRoot()
	if err != nil {
		return nil, err
	}
	// The whole application directory (examples/NAME): PALs share packages with their host side.
	app := filepath.Join(root, filepath.Dir(pkg))
	key, err := srchash.Hash(pkg, app, filepath.Join(root, "sdk", "go", "pal"),
		filepath.Join(root, "client", "signreq"), filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	if err != nil {
		return nil, err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "palisade-apps")
	out := filepath.Join(dir, strings.ReplaceAll(pkg, "/", "_")+"-"+key+".wasm")
	if b, err := os.ReadFile(out); err == nil {
		built[pkg] = b
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", tmp, "./"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %w\n%s", pkg, err, msg)
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(out)
	if err == nil {
		built[pkg] = b
	}
	return b, err
}

// BuildCNull builds testdata/null.c for engine ("wasm": clang wasm32; "kvm": a static x86-64
// ELF) in a temporary directory.
func BuildCNull(ctx context.Context, engine string) ([]byte, error) {
	root, err := SourceRoot()
	if err != nil {
		return nil, err
	}
	src := filepath.Join(root, "internal", "e2e", "apps", "testdata", "null.c")
	dir, err := os.MkdirTemp("", "palisade-null-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	switch engine {
	case "wasm":
		out := filepath.Join(dir, "null.wasm")
		if err := csdk.BuildWasm(ctx, out, nil, src); err != nil {
			return nil, err
		}
		return os.ReadFile(out)
	case "kvm":
		return cbuild.Build(ctx, dir, "null.elf", []string{src})
	}
	return nil, fmt.Errorf("no C PAL build for engine %q", engine)
}
