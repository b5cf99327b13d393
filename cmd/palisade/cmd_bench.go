package main

// palisade bench: the paper's evaluation (DESIGN §9) in one run, side by side. Each section
// compares Palisade with its baseline on this machine at the same time; the report holds
// medians and ratios (these shared machines are noisy), a Markdown table and a PNG chart.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/palisade-project/palisade/internal/e2e/apps"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "reproduce the paper's evaluation: HTTPS with a PAL-held key, SSH password checks in a PAL, µTPM vs TPM, PAL lifecycle; writes results.md and chart.png",
		usage:   "--out DIR [--quick] [--sections https,ssh,utpm,lifecycle] [--levels 1,2,...] [--point D] [--ab N] [--cpuprofile FILE]",
		run:     runBench,
	})
}

// benchConfig sizes a run.
type benchConfig struct {
	levels     []int         // HTTPS concurrency levels
	point      time.Duration // HTTPS measuring time per (mode, alg, level)
	sshLogins  int
	tpmIters   int
	lifeIters  int // registrations per engine
	callIters  int // invocations per engine
	signIters  int // serial signatures for the where-the-time-goes table
	abRequests int // per ab cross-check run; 0 disables
}

var fullBench = benchConfig{
	levels: []int{1, 2, 4, 8, 16, 32, 64}, point: 2 * time.Second,
	sshLogins: 100, tpmIters: 50, lifeIters: 30, callIters: 2000, signIters: 300,
}

var quickBench = benchConfig{
	levels: []int{1, 4}, point: 150 * time.Millisecond,
	sshLogins: 5, tpmIters: 3, lifeIters: 3, callIters: 50, signIters: 10,
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlags(commands["bench"])
	out := fs.String("out", "", "directory for results.md, results.json and chart.png (created)")
	quick := fs.Bool("quick", false, "tiny counts: checks that everything runs (seconds), numbers mean little")
	sections := fs.String("sections", "https,ssh,utpm,lifecycle", "comma-separated sections to run")
	levels := fs.String("levels", "", "HTTPS concurrency levels, comma-separated (default 1,2,4,8,16,32,64; quick: 1,4)")
	point := fs.Duration("point", 0, "HTTPS measuring time per point (default 2s; quick: 150ms)")
	ab := fs.Int("ab", 0, "also run ab (apache2-utils) with this many requests per concurrency level as a cross-check of the Go load generator")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (where the time goes)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("unexpected arguments %q", pos)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *out == "" {
		return usageErrorf("--out DIR is required")
	}
	cfg := fullBench
	if *quick {
		cfg = quickBench
	}
	if *levels != "" {
		cfg.levels = nil
		for _, s := range strings.Split(*levels, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return usageErrorf("--levels: %q is not a positive number", s)
			}
			cfg.levels = append(cfg.levels, n)
		}
	}
	if *point > 0 {
		cfg.point = *point
	}
	cfg.abRequests = *ab
	want := map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		switch s = strings.TrimSpace(s); s {
		case "https", "ssh", "utpm", "lifecycle":
			want[s] = true
		default:
			return usageErrorf("--sections: unknown section %q", s)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}

	r := &benchReport{Started: time.Now().UTC(), Quick: *quick, GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()}
	r.Machine = machineName()
	p := newProgress(os.Stderr, cfg, want)
	defer p.done()

	// Go PALs take seconds to build: do it before anything is timed.
	p.note("building PALs")
	imgs, err := benchImages(ctx, want)
	if err != nil {
		return err
	}
	p.note("starting a private palisaded")
	d, err := apps.StartDaemon(ctx, apps.DaemonOptions{})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Close(cctx)
	}()
	r.Engines = d.Engines

	var errs []error
	run := func(name string, f func() error) {
		if !want[name] || ctx.Err() != nil {
			return
		}
		if err := f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", name, err))
		}
	}
	run("lifecycle", func() error { return benchLifecycle(ctx, d, imgs, cfg, p, r) })
	run("utpm", func() error { return benchUTPM(ctx, d, cfg, p, r) })
	run("ssh", func() error { return benchSSH(ctx, d, imgs, cfg, p, r) })
	run("https", func() error { return benchHTTPS(ctx, d, imgs, cfg, p, r) })
	if err := ctx.Err(); err != nil {
		return err
	}
	r.Took = time.Since(r.Started).Round(time.Second).String()
	p.done()

	md := r.markdown()
	if err := os.WriteFile(filepath.Join(*out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "results.json"), js, 0o644); err != nil {
		return err
	}
	if len(r.HTTPS) > 0 {
		if err := r.chart(filepath.Join(*out, "chart.png")); err != nil {
			errs = append(errs, fmt.Errorf("chart: %w", err))
		}
	}
	fmt.Print(md)
	fmt.Printf("\nwrote %s\n", strings.Join([]string{filepath.Join(*out, "results.md"), filepath.Join(*out, "results.json"), filepath.Join(*out, "chart.png")}, ", "))
	return errors.Join(errs...)
}

func machineName() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				return fmt.Sprintf("%s, %d CPUs", strings.TrimSpace(v), runtime.NumCPU())
			}
		}
	}
	return fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
}

// benchPALs are the PAL images a run needs.
type benchPALs struct {
	keygen, signer, checker, goNull []byte
}

func benchImages(ctx context.Context, want map[string]bool) (benchPALs, error) {
	var b benchPALs
	var err error
	get := func(dst *[]byte, pkg string) {
		if err == nil {
			*dst, err = apps.BuildGoPAL(ctx, pkg)
		}
	}
	if want["https"] {
		get(&b.keygen, "examples/tlskey/keygen")
		get(&b.signer, "examples/tlskey/signer")
	}
	if want["ssh"] {
		get(&b.checker, "examples/sshpass/checker")
	}
	if want["lifecycle"] {
		get(&b.goNull, "internal/e2e/apps/nullpal")
	}
	return b, err
}
