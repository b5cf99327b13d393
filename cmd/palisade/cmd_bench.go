package main

// palisade bench: the paper's evaluation (DESIGN §9) in one run, side by side. The harness is
// internal/bench; this file only turns flags into its Options.

import (
	"context"
	"fmt"
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
		summary: "reproduce the paper's evaluation: HTTPS with a PAL-held key, SSH password checks in a PAL, µTPM vs TPM, PAL lifecycle, nginx with its key in PKCS#11 modules; writes results.md, results.json and charts (chart.png for HTTPS, web.png for nginx)",
		usage:   "--out DIR [--quick] [--sections https,ssh,utpm,lifecycle,web] [--levels 1,2,...] [--point D] [--ab N] [--cpuprofile FILE]",
		run:     runBench,
	})
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlags(commands["bench"])
	out := fs.String("out", "", "directory for results.md, results.json and the charts of the sections run: chart.png (https), web.png (web) (created)")
	quick := fs.Bool("quick", false, "tiny counts: checks that everything runs (seconds), numbers mean little")
	sections := fs.String("sections", "https,ssh,utpm,lifecycle,web", "comma-separated sections to run")
	levels := fs.String("levels", "", "HTTPS concurrency levels, comma-separated (default 1,2,4,8,16,32,64; quick: 1,4)")
	point := fs.Duration("point", 0, "HTTPS measuring time per point (default 2s; quick: 150ms)")
	ab := fs.Int("ab", 0, "also run ab (apache2-utils) with this many requests per concurrency level as a cross-check of the Go load generator")
	var webRequests, opensshLogins, agentSigns optCount
	fs.Var(&webRequests, "web-requests", "`N` ab requests per point of the web-server section (default 400; quick: 0, which skips the section)")
	fs.Var(&opensshLogins, "openssh-logins", "`N` logins per PAM stack with the real sshd in the SSH section, and as many pamtester runs (default 31; quick: 1; 0 skips them)")
	fs.Var(&agentSigns, "agent-signs", "`N` ssh-agent signatures per agent in the SSH section (default 300; quick: 0, which skips them)")
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
	switch {
	case *point < 0:
		return usageErrorf("--point: %s is negative", *point)
	case *point > 0:
		cfg.Point = *point
	}
	if *ab < 0 {
		return usageErrorf("--ab: %d is negative (0: no ab cross-check)", *ab)
	}
	cfg.ABRequests = *ab
	if opensshLogins.set {
		cfg.OpenSSHLogins = opensshLogins.n
	}
	if agentSigns.set {
		cfg.AgentSigns = agentSigns.n
	}
	if webRequests.set {
		cfg.WebRequests = webRequests.n
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

// optCount is a count flag whose default depends on --quick, so "not given" is no number: its
// help states the defaults, and the flag package prints no "(default …)" of its own (the zero
// optCount prints as ""). A negative count is refused rather than taken for "not given".
type optCount struct {
	n   int
	set bool
}

func (c *optCount) String() string {
	if c == nil || !c.set {
		return ""
	}
	return strconv.Itoa(c.n)
}

func (c *optCount) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a count (an integer ≥ 0)", s)
	}
	c.n, c.set = n, true
	return nil
}
