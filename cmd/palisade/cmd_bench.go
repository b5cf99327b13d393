package main

// palisade bench: the paper's evaluation (DESIGN §9) in one run, side by side. The harness is
// internal/bench; this file only turns flags into its Options.

import (
	"context"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"

	"github.com/palisade-project/palisade/internal/bench"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "reproduce the paper's evaluation: HTTPS with a PAL-held key, SSH password checks in a PAL, µTPM vs TPM, PAL lifecycle, nginx with its key in PKCS#11 modules; writes results.md and chart.png",
		usage:   "--out DIR [--quick] [--sections https,ssh,utpm,lifecycle,web] [--levels 1,2,...] [--point D] [--ab N] [--cpuprofile FILE]",
		run:     runBench,
	})
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlags(commands["bench"])
	out := fs.String("out", "", "directory for results.md, results.json and chart.png (created)")
	quick := fs.Bool("quick", false, "tiny counts: checks that everything runs (seconds), numbers mean little")
	sections := fs.String("sections", "https,ssh,utpm,lifecycle,web", "comma-separated sections to run")
	levels := fs.String("levels", "", "HTTPS concurrency levels, comma-separated (default 1,2,4,8,16,32,64; quick: 1,4)")
	point := fs.Duration("point", 0, "HTTPS measuring time per point (default 2s; quick: 150ms)")
	ab := fs.Int("ab", 0, "also run ab (apache2-utils) with this many requests per concurrency level as a cross-check of the Go load generator")
	webRequests := fs.Int("web-requests", -1, "ab requests per point of the web-server section (default 400; quick: 0, which skips the section)")
	opensshLogins := fs.Int("openssh-logins", -1, "logins per PAM stack with the real sshd in the SSH section, and as many pamtester runs (default 31; quick: 1; 0 skips them)")
	agentSigns := fs.Int("agent-signs", -1, "ssh-agent signatures per agent in the SSH section (default 300; quick: 0, which skips them)")
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
	cfg := bench.Full
	if *quick {
		cfg = bench.Quick
	}
	if *levels != "" {
		cfg.Levels = nil
		for _, s := range strings.Split(*levels, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return usageErrorf("--levels: %q is not a positive number", s)
			}
			cfg.Levels = append(cfg.Levels, n)
		}
	}
	if *point > 0 {
		cfg.Point = *point
	}
	cfg.ABRequests = *ab
	if *opensshLogins >= 0 {
		cfg.OpenSSHLogins = *opensshLogins
	}
	if *agentSigns >= 0 {
		cfg.AgentSigns = *agentSigns
	}
	if *webRequests >= 0 {
		cfg.WebRequests = *webRequests
		if cfg.WebLevels == nil { // --quick has none: a small run
			cfg.WebLevels, cfg.WebRounds, cfg.WebSigns = []int{1, 4}, 2, 50
		}
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(bench.Sections, s) {
			return usageErrorf("--sections: unknown section %q", s)
		}
		want[s] = true
	}
	return bench.Run(ctx, bench.Options{Out: *out, Quick: *quick, Config: cfg, Sections: want, Stdout: os.Stdout, Stderr: os.Stderr})
}
