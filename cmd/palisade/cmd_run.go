package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/visor"
)

func init() {
	register(&command{
		name:    "run",
		summary: "register a PAL in an embedded visor, call it once and print its output",
		usage:   "[--engine wasm|kvm] [--input FILE|-] [--timeout D] [--memory-mib N] PAL",
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErrorf("want exactly one PAL file, got %d arguments", fs.NArg())
	}
	image, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var in []byte
	switch *input {
	case "":
	case "-":
		in, err = io.ReadAll(os.Stdin)
	default:
		in, err = os.ReadFile(*input)
	}
	if err != nil {
		return fmt.Errorf("reading input: %w", err)
	}

	v, err := openEmbedded(ctx, *stateDir, *eng, *verbose)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v.Close(cctx)
	}()
	info, err := v.Register(ctx, image, visor.RegisterOptions{
		Name: fs.Arg(0), Engine: *eng,
		Limits: engine.Limits{Timeout: *timeout, MemoryMiB: uint32(*mem)},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "registered %s (engine %s, measurement %s)\n", info.Handle, info.Engine, info.Measurement)
	res, err := v.Call(ctx, info.Handle, in)
	if err != nil {
		return err
	}
	os.Stdout.Write(res.Output)
	if res.Status != 0 {
		return fmt.Errorf("PAL returned status %d", res.Status)
	}
	return nil
}
