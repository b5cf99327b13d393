// Package bench is the harness of `palisade bench`: the paper's evaluation (DESIGN §9) in one
// run, side by side. Each section compares Palisade with its baseline on this machine at the
// same time; the report holds medians and ratios (these shared machines are noisy), a Markdown
// table and a PNG chart. The command only parses flags into Options and calls Run.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// Config sizes a run.
type Config struct {
	Levels    []int         // HTTPS concurrency levels
	Point     time.Duration // HTTPS measuring time per (mode, alg, level)
	SSHLogins int           // logins per checker on the example SSH server
	// OpenSSHLogins are logins per PAM stack with the real sshd (and as many pamtester runs);
	// 0 skips them.
	OpenSSHLogins int
	TPMIters      int
	LifeIters     int // registrations per engine
	CallIters     int // invocations per engine
	SignIters     int // serial signatures for the where-the-time-goes table
	ABRequests    int // per ab cross-check run; 0 disables

	// The web-server section.
	WebRequests int   // ab requests per (key, backend, level, round); 0 skips the section
	WebLevels   []int // concurrency levels
	WebRounds   int   // paired rounds
	WebSigns    int   // C_Sign calls timed per module

	AgentSigns int // ssh-agent signatures per agent (SSH section); 0 skips them
}

// Full is the size of a real run; Quick checks that everything runs (seconds), its numbers mean
// little.
var (
	Full = Config{
		Levels: []int{1, 2, 4, 8, 16, 32, 64}, Point: 2 * time.Second,
		SSHLogins: 100, OpenSSHLogins: 31, TPMIters: 50, LifeIters: 30, CallIters: 2000, SignIters: 300,
		WebRequests: 400, WebLevels: []int{1, 4, 16}, WebRounds: 3, WebSigns: 200,
		AgentSigns: 300,
	}
	Quick = Config{
		Levels: []int{1, 4}, Point: 150 * time.Millisecond,
		SSHLogins: 5, OpenSSHLogins: 1, TPMIters: 3, LifeIters: 3, CallIters: 50, SignIters: 10,
	}
)

// Sections are the sections a run can hold, in the order Run runs them.
var Sections = []string{"lifecycle", "utpm", "ssh", "https", "web"}

// Options is one run.
type Options struct {
	Out      string          // directory for results.md, results.json and chart.png (created)
	Quick    bool            // recorded in the report; the sizes are Config's
	Config   Config          // sizes
	Sections map[string]bool // the sections to run (names from Sections)
	Stdout   io.Writer       // receives the Markdown report and the list of files written
	Stderr   io.Writer       // receives the progress bar
}

// Run runs the sections asked for and writes the report. A section that fails is recorded in
// the report and in the returned error; the others still run.
func Run(ctx context.Context, o Options) error {
	cfg, want := o.Config, o.Sections
	for s := range want {
		if !validSection(s) {
			return fmt.Errorf("unknown section %q (sections: %s)", s, strings.Join(Sections, ", "))
		}
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}

	r := &benchReport{Started: time.Now().UTC(), Quick: o.Quick, GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()}
	r.Machine = machineName()
	p := newProgress(o.Stderr, cfg, want)
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
	run("ssh", func() error { return benchSSH(ctx, d, cfg, p, r) })
	run("https", func() error { return benchHTTPS(ctx, d, imgs, cfg, p, r) })
	run("web", func() error { return benchWeb(ctx, cfg, p, r) })
	if err := ctx.Err(); err != nil {
		return err
	}
	r.Took = time.Since(r.Started).Round(time.Second).String()
	p.done()

	md := r.markdown()
	if err := os.WriteFile(filepath.Join(o.Out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(o.Out, "results.json"), js, 0o644); err != nil {
		return err
	}
	written := []string{filepath.Join(o.Out, "results.md"), filepath.Join(o.Out, "results.json")}
	if len(r.HTTPS) > 0 {
		written = append(written, filepath.Join(o.Out, "chart.png"))
		if err := r.chart(written[len(written)-1]); err != nil {
			errs = append(errs, fmt.Errorf("chart: %w", err))
		}
	}
	if len(r.Web) > 0 {
		written = append(written, filepath.Join(o.Out, "web.png"))
		if err := r.webChart(written[len(written)-1]); err != nil {
			errs = append(errs, fmt.Errorf("web chart: %w", err))
		}
	}
	fmt.Fprint(o.Stdout, md)
	fmt.Fprintf(o.Stdout, "\nwrote %s\n", strings.Join(written, ", "))
	return errors.Join(errs...)
}

func validSection(s string) bool {
	for _, v := range Sections {
		if v == s {
			return true
		}
	}
	return false
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

// palImages are the PAL images a run needs.
type palImages struct {
	keygen, signer, goNull []byte
}

func benchImages(ctx context.Context, want map[string]bool) (palImages, error) {
	var b palImages
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
	if want["lifecycle"] {
		get(&b.goNull, "internal/e2e/apps/nullpal")
	}
	return b, err
}
