// Package cbuild builds native x86-64 C PALs for the kvm engine with Debian gcc and the C SDK
// (sdk/c, sdk/c/x86_64). Tests and tools use it to build PALs from source into a temporary
// directory: no binaries are committed.
package cbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/palisade-project/palisade/internal/srchash"
)

// CFlags are the compiler flags of native PALs; sdk/c/x86_64/native.mk has the same.
var CFlags = []string{
	"-std=c11", "-O2", "-Wall", "-ffreestanding", "-fno-builtin", "-nostdlib", "-static",
	"-fno-pic", "-fno-pie", "-mno-red-zone", "-fno-stack-protector", "-fcf-protection=none",
	"-fno-asynchronous-unwind-tables", "-fno-exceptions",
}

// LDFlags are the link flags; the linker script is added by Build.
var LDFlags = []string{
	"-no-pie", "-Wl,--build-id=none", "-Wl,-z,noexecstack", "-Wl,-z,norelro",
	"-Wl,-z,max-page-size=4096",
}

// SDKDir is the sdk/c directory of the source tree this package was built from.
func SDKDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cbuild: cannot locate the source tree")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "sdk", "c")
	if _, err := os.Stat(filepath.Join(dir, "palisade.h")); err != nil {
		return "", fmt.Errorf("cbuild: SDK not found: %w", err)
	}
	return filepath.Clean(dir), nil
}

// SDKSources are the SDK files linked into every PAL: the entry stub and hostcall of the
// native target and the shared C wrappers (those present in the tree).
func SDKSources() ([]string, error) {
	sdk, err := SDKDir()
	if err != nil {
		return nil, err
	}
	srcs := []string{filepath.Join(sdk, "x86_64", "entry.S")}
	for _, f := range []string{"palisade.c", "libc.c", "sha256.c"} {
		if p := filepath.Join(sdk, f); fileExists(p) {
			srcs = append(srcs, p)
		}
	}
	return srcs, nil
}

// compiler is the C compiler of native PALs: $PALISADE_NATIVE_CC, or gcc.
func compiler() string {
	if cc := os.Getenv("PALISADE_NATIVE_CC"); cc != "" {
		return cc
	}
	return "gcc"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Build compiles srcs with the SDK into dir/out and returns the ELF's bytes. flags are added
// to the compiler flags (for example -DTEST_VARIANT=2).
func Build(ctx context.Context, dir, out string, srcs []string, flags ...string) ([]byte, error) {
	sdk, err := SDKDir()
	if err != nil {
		return nil, err
	}
	sdkSrcs, err := SDKSources()
	if err != nil {
		return nil, err
	}
	cc := compiler()
	path := filepath.Join(dir, out)
	args := append([]string{}, CFlags...)
	args = append(args, "-I"+sdk)
	args = append(args, flags...)
	args = append(args, "-o", path)
	args = append(args, srcs...)
	args = append(args, sdkSrcs...)
	args = append(args, LDFlags...)
	args = append(args, "-Wl,-T,"+filepath.Join(sdk, "x86_64", "pal.ld"), "-lgcc")
	cmd := exec.CommandContext(ctx, cc, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cbuild: %s: %w\n%s", cc, err, stderr.Bytes())
	}
	return os.ReadFile(path)
}

// BuildCached is Build through the test build cache of package srchash: the PAL is rebuilt only
// when a source, the SDK, these flags (this package's source) or the compiler changes. Tests use
// it so that the slow part of a run under emulation (gcc) can be done once, outside.
func BuildCached(ctx context.Context, srcs []string, flags ...string) ([]byte, error) {
	sdk, err := SDKDir()
	if err != nil {
		return nil, err
	}
	ccPath, err := exec.LookPath(compiler())
	if err != nil {
		return nil, fmt.Errorf("cbuild: %w", err)
	}
	_, self, _, _ := runtime.Caller(0)
	paths := append([]string{ccPath, sdk, filepath.Dir(self)}, srcs...)
	key, err := srchash.Hash(fmt.Sprintf("c-native\x00%q", flags), paths...)
	if err != nil {
		return nil, err
	}
	return srchash.Cached("c-native-"+key+".elf", func(out string) error {
		_, err := Build(ctx, filepath.Dir(out), filepath.Base(out), srcs, flags...)
		return err
	})
}
