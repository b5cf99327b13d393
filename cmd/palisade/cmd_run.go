package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/visor"
	"github.com/palisade-project/palisade/pal"
)

func init() {
	register(&command{
		name:    "run",
		summary: "register a PAL in an embedded visor, call it once and print its output",
		usage:   "PAL [--engine wasm|kvm] [--input FILE|-] [--timeout D] [--memory-mib N] [--json]",
		run:     runRun,
	})
}

func runRun(ctx context.Context, args []string) error {
	c := commands["run"]
	fs := newFlags(c)
	eng := fs.String("engine", "", "engine to run the PAL in (default: by image kind: wasm for WebAssembly, kvm for ELF)")
	input := fs.String("input", "", "file whose bytes are the PAL's input ('-' for standard input; default: empty input)")
	timeout := fs.Duration("timeout", engine.DefaultLimits.Timeout, "limit on the call's duration")
	mem := fs.Uint("memory-mib", uint(engine.DefaultLimits.MemoryMiB), "memory cap of the PAL instance in MiB")
	stateDir := fs.String("state-dir", defaultStateDir(), "directory of the development root of trust (master secret, counters)")
	verbose := fs.Bool("v", false, "log the visor's work and the PAL's debug output to standard error")
	jsonOut := fs.Bool("json", false, "print one JSON object (exit, status, output in base64, error) instead of the raw output (docs/cli.md)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want exactly one PAL file, got %d arguments", len(pos))
	}
	if !*jsonOut {
		return runOnce(ctx, pos[0], *input, *stateDir, *eng, *verbose,
			engine.Limits{Timeout: *timeout, MemoryMiB: uint32(*mem)}, nil)
	}
	var r callReport
	return r.finish(runOnce(ctx, pos[0], *input, *stateDir, *eng, *verbose,
		engine.Limits{Timeout: *timeout, MemoryMiB: uint32(*mem)}, &r))
}

// runOnce registers the PAL in file and calls it once. With report nil it writes the output
// raw; otherwise it records the call in report, which the caller prints.
func runOnce(ctx context.Context, file, input, stateDir, eng string, verbose bool, limits engine.Limits, report *callReport) error {
	image, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var in []byte
	switch input {
	case "":
	case "-":
		in, err = io.ReadAll(os.Stdin)
	default:
		in, err = os.ReadFile(input)
	}
	if err != nil {
		return fmt.Errorf("reading input: %w", err)
	}

	// The engine the image needs, when none is named, so that an engine this machine cannot
	// run (kvm without /dev/kvm) is reported with its reason rather than as unknown.
	want := eng
	if img, err := pal.Parse(image); want == "" && err == nil {
		want = map[pal.Kind]string{pal.KindWasm: "wasm", pal.KindELF: "kvm"}[img.Kind]
	}
	v, err := openEmbedded(ctx, stateDir, want, verbose)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v.Close(cctx)
	}()
	info, err := v.Register(ctx, image, visor.RegisterOptions{Name: file, Engine: eng, Limits: limits})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "registered %s (engine %s, measurement %s)\n", info.Handle, info.Engine, info.Measurement)
	if report != nil {
		report.Handle, report.Engine, report.Measurement = info.Handle.String(), info.Engine, fmt.Sprintf("%x", info.Measurement[:])
	}
	res, err := v.Call(ctx, info.Handle, in)
	if err != nil {
		return err
	}
	if report != nil {
		report.completed(res.Status, res.Output)
	} else if _, err := os.Stdout.Write(res.Output); err != nil {
		return err
	}
	if res.Status != 0 {
		return &palStatusError{res.Status}
	}
	return nil
}
