package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/palisade-project/palisade/internal/srchash"

	"github.com/palisade-project/palisade/internal/csdk"
)

// Dir is the directory of this package's sources (testdata included).
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("conformance: cannot locate the package sources")
	}
	return filepath.Dir(file)
}

// CSource is the test PAL's C source, shared by every engine.
func CSource() string { return filepath.Join(Dir(), "testdata", "c", "conformance.c") }

// VariantDefine is the -D flag that selects a variant of the C test PAL.
func VariantDefine(variant string) string { return fmt.Sprintf("PAL_VARIANT=%q", variant) }

// buildCache keeps built PALs for the life of the test binary.
type buildCache struct {
	mu   sync.Mutex
	imgs map[string][]byte
	errs map[string]error
}

func (c *buildCache) get(key string, build func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock() // builds are serialised: they are CPU-bound anyway
	if c.imgs == nil {
		c.imgs, c.errs = map[string][]byte{}, map[string]error{}
	}
	if b, ok := c.imgs[key]; ok {
		return b, c.errs[key]
	}
	b, err := build()
	c.imgs[key], c.errs[key] = b, err
	return b, err
}

var builds buildCache

// BuildCWasm builds the C test PAL for the wasm engine (clang --target=wasm32, sdk/c).
func BuildCWasm(t testing.TB, variant string) []byte {
	t.Helper()
	b, err := builds.get("c-wasm/"+variant, func() ([]byte, error) {
		clang, err := exec.LookPath("clang")
		if err != nil {
			return nil, err
		}
		key, err := srchash.Hash("c-wasm/"+variant, clang, filepath.Join(Dir(), "testdata", "c"), csdk.Dir())
		if err != nil {
			return nil, err
		}
		return srchash.Cached("c-pal-"+key+".wasm", func(out string) error {
			return csdk.BuildWasm(context.Background(), out, []string{VariantDefine(variant)}, CSource())
		})
	})
	if err != nil {
		t.Fatalf("build C PAL (wasm32, variant %q): %v", variant, err)
	}
	return b
}

// BuildGo builds the Go test PAL (testdata/go, sdk/go/pal) as a wasip1 reactor. Building a Go
// PAL takes seconds, so the result is also kept across test runs in the user cache directory,
// keyed by a hash of the sources and the Go version.
func BuildGo(t testing.TB, variant string) []byte {
	t.Helper()
	b, err := builds.get("go/"+variant, func() ([]byte, error) { return buildGo(variant) })
	if err != nil {
		t.Fatalf("build Go PAL (variant %q): %v", variant, err)
	}
	return b
}

func buildGo(variant string) ([]byte, error) {
	root := filepath.Join(Dir(), "..", "..", "..")
	key, err := srchash.Hash("go/"+variant, filepath.Join(Dir(), "testdata", "go"), filepath.Join(root, "sdk", "go", "pal"), filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	return srchash.Cached("go-pal-"+key+".wasm", func(out string) error {
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false",
			"-ldflags=-X=main.variant="+variant, "-o", out, "./internal/engine/conformance/testdata/go")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %w\n%s", err, msg)
		}
		return nil
	})
}
