package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/api"
)

func init() {
	register(&command{
		name:    "pal",
		summary: "register, call, list and unregister PALs in the palisaded daemon",
		usage: "register FILE [--name N] [--engine E] [--replicas N] [--timeout D] [--memory-mib N]\n" +
			"                          [--max-input N] [--max-output N] [--daemon-reads]\n" +
			"       palisade pal call HANDLE [--input FILE|-] [--data STRING] [--hex] [--timeout D] [--json]\n" +
			"       palisade pal list\n" +
			"       palisade pal unregister HANDLE\n" +
			"(all take --socket PATH; default $PALISADE_SOCKET or " + client.DefaultSocket + ")",
		run: runPal,
	})
}

func runPal(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErrorf("missing subcommand (register, call, list, unregister)")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		newFlags(commands["pal"]).Usage()
		return flag.ErrHelp
	}
	sub := map[string]func(context.Context, []string) error{
		"register": palRegister, "call": palCall, "list": palList, "unregister": palUnregister,
	}[args[0]]
	if sub == nil {
		return usageErrorf("unknown subcommand %q (register, call, list, unregister)", args[0])
	}
	return sub(ctx, args[1:])
}

// subFlags makes the flag set of "palisade pal SUB" with the --socket flag every one has.
func subFlags(sub, usage string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("palisade pal "+sub, flag.ContinueOnError)
	socket := fs.String("socket", client.SocketPath(), "palisaded socket")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: palisade pal %s %s\n\nflags:\n", sub, usage)
		fs.PrintDefaults()
	}
	return fs, socket
}

func dial(ctx context.Context, socket string) (*client.Client, error) {
	return client.Dial(ctx, socket)
}

func palRegister(ctx context.Context, args []string) error {
	fs, socket := subFlags("register", "FILE [flags]")
	name := fs.String("name", "", "name of the PAL, for listings and access rules (default: the file name)")
	eng := fs.String("engine", "", "engine (wasm, kvm); default: by image kind")
	replicas := fs.Int("replicas", 1, "instances, so that calls run in parallel")
	timeout := fs.Duration("timeout", 0, "per-call timeout (default: the daemon's, 10s)")
	memory := fs.Uint("memory-mib", 0, "memory cap per instance in MiB (default: the daemon's, 64)")
	maxIn := fs.Int("max-input", 0, "input cap in bytes (default 1 MiB)")
	maxOut := fs.Int("max-output", 0, "output cap in bytes (default 1 MiB, at most 1 MiB + 4 KiB)")
	daemonReads := fs.Bool("daemon-reads", false, "send the path, not the bytes: the daemon reads FILE (it must be in one of its image_dirs)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("pal register: want exactly one image file")
	}
	if *memory > 1<<20 {
		return usageErrorf("--memory-mib %d is too large", *memory)
	}
	opts := client.RegisterOptions{
		Name: *name, Engine: *eng, Replicas: *replicas,
		Limits: client.Limits{Timeout: *timeout, MemoryMiB: uint32(*memory), MaxInput: *maxIn, MaxOutput: *maxOut},
	}
	if opts.Name == "" && pos[0] != "-" {
		opts.Name = strings.TrimSuffix(filepath.Base(pos[0]), filepath.Ext(pos[0]))
	}
	c, err := dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	var info client.Info
	if *daemonReads {
		p, err := filepath.Abs(pos[0])
		if err != nil {
			return err
		}
		info, err = c.RegisterPath(ctx, p, opts)
		if err != nil {
			return err
		}
	} else {
		img, err := readInput(pos[0], api.MaxImage)
		if err != nil {
			return err
		}
		if info, err = c.Register(ctx, img, opts); err != nil {
			return err
		}
	}
	// The handle alone on stdout, so that h=$(palisade pal register x.wasm) works.
	fmt.Println(info.Handle)
	fmt.Fprintf(os.Stderr, "registered %q: engine %s, measurement %x, %d replica(s), timeout %s\n",
		info.Name, info.Engine, info.Measurement, info.Replicas, info.Limits.Timeout)
	return nil
}

// readInput reads a file, or stdin for "-", refusing more than max bytes.
func readInput(path string, max int64) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, nil
}

func palCall(ctx context.Context, args []string) error {
	fs, socket := subFlags("call", "HANDLE [--input FILE|-] [--data STRING] [--hex] [--timeout D] [--json]")
	input := fs.String("input", "", "read the PAL's input from FILE, or stdin for -")
	data := fs.String("data", "", "the PAL's input, given literally")
	hexOut := fs.Bool("hex", false, "print the output in hex")
	timeout := fs.Duration("timeout", 0, "give up after this long (default: the PAL's own timeout)")
	jsonOut := fs.Bool("json", false, "print one JSON object (exit, status, output in base64, error) instead of the raw output (docs/cli.md)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("pal call: want exactly one HANDLE")
	}
	if *input != "" && *data != "" {
		return usageErrorf("pal call: --input and --data exclude each other")
	}
	if *jsonOut && *hexOut {
		return usageErrorf("pal call: --json and --hex exclude each other")
	}
	if !*jsonOut {
		return callOnce(ctx, *socket, pos[0], *input, *data, *timeout, *hexOut, nil)
	}
	r := callReport{Handle: pos[0]}
	return r.finish(callOnce(ctx, *socket, pos[0], *input, *data, *timeout, false, &r))
}

// callOnce calls PAL h of the daemon at socket once. With report nil it writes the output
// (in hex with hexOut); otherwise it records the call in report, which the caller prints.
func callOnce(ctx context.Context, socket, h, input, data string, timeout time.Duration, hexOut bool, report *callReport) error {
	in := []byte(data)
	if input != "" {
		var err error
		if in, err = readInput(input, api.MaxImage); err != nil {
			return err
		}
	}
	c, err := dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := c.Call(ctx, h, in)
	if err != nil {
		return err
	}
	switch {
	case report != nil:
		report.completed(res.Status, res.Output)
	case hexOut:
		fmt.Println(hex.EncodeToString(res.Output))
	default:
		os.Stdout.Write(res.Output)
	}
	if res.Status != 0 {
		return &palStatusError{res.Status}
	}
	return nil
}

func palList(ctx context.Context, args []string) error {
	fs, socket := subFlags("list", "")
	if pos, err := parseArgs(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageErrorf("pal list takes no arguments")
	}
	c, err := dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	pals, err := c.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HANDLE\tNAME\tENGINE\tOWNER\tREPLICAS\tCALLS\tFAILURES\tREGISTERED\tMEASUREMENT")
	for _, p := range pals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%x\n", p.Handle, p.Name, p.Engine, p.Owner,
			p.Replicas, p.Calls, p.Failures, p.Registered.UTC().Format(time.RFC3339), p.Measurement)
	}
	return tw.Flush()
}

func palUnregister(ctx context.Context, args []string) error {
	fs, socket := subFlags("unregister", "HANDLE")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("pal unregister: want exactly one HANDLE")
	}
	c, err := dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Unregister(ctx, pos[0])
}
