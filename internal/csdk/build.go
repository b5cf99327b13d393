// Package csdk builds C PALs with the C SDK (sdk/c), for tests and tools that work from a
// source checkout (the SDK sources are found relative to this file). It lives in its own
// directory because Go refuses .c files next to a Go package that does not use cgo.
//
// The wasm32 build is the documented command of docs/sdk.md:
//
//	clang --target=wasm32 -nostdlib -ffreestanding -fno-builtin -O2 -I sdk/c \
//	    -Wl,--no-entry -Wl,-z,stack-size=65536 -o pal.wasm pal.c \
//	    sdk/c/palisade.c sdk/c/libc.c sdk/c/sha256.c sdk/c/wasm32/entry.c
package csdk

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Dir is the directory of the C SDK (palisade.h and its sources).
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("csdk: cannot locate the SDK sources")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "sdk", "c")
}

// WasmFlags are the clang flags of a wasm32 PAL, without include paths and sources.
var WasmFlags = []string{
	"--target=wasm32", "-nostdlib", "-ffreestanding", "-fno-builtin", "-O2",
	"-Wall", "-Wextra", "-Werror",
	"-Wl,--no-entry", "-Wl,-z,stack-size=65536",
}

// WasmSources are the SDK sources linked into every wasm32 PAL, relative to Dir.
var WasmSources = []string{"palisade.c", "libc.c", "sha256.c", "wasm32/entry.c"}

// BuildWasm compiles the PAL sources srcs with the SDK into the wasm module out. defines are
// passed as -D flags (e.g. `PAL_VARIANT="b"`). The output depends only on the sources, the
// defines and the compiler, so its measurement is reproducible.
func BuildWasm(ctx context.Context, out string, defines []string, srcs ...string) error {
	dir := Dir()
	args := append([]string{}, WasmFlags...)
	args = append(args, "-I", dir, "-o", out)
	for _, d := range defines {
		args = append(args, "-D"+d)
	}
	args = append(args, srcs...)
	for _, s := range WasmSources {
		args = append(args, filepath.Join(dir, s))
	}
	cmd := exec.CommandContext(ctx, "clang", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("csdk: clang %v: %w\n%s", srcs, err, stderr.Bytes())
	}
	return nil
}
