package bench

import (
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchQuick runs the whole harness as `palisade bench --quick` does (every section, real daemon, PALs,
// swtpm, HTTPS and SSH clients, ab if installed) and checks what it writes: counts are tiny,
// so only the shape and the sanity of the numbers are checked, never their size.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole benchmark (about 40 s)")
	}
	out := t.TempDir()
	cfg := Quick
	_, abErr := exec.LookPath("ab")
	if abErr == nil {
		cfg.ABRequests = 20
	}
	all := map[string]bool{}
	for _, s := range Sections {
		all[s] = true
	}
	var stdout, stderr strings.Builder
	err := Run(context.Background(), Options{Out: out, Quick: true, Config: cfg, Sections: all, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "## HTTPS") {
		t.Errorf("no report on stdout:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "100%") {
		t.Errorf("no progress bar on stderr:\n%s", stderr.String())
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## HTTPS", "rsa2048 pal-wasm", "ecdsa-p256 pal-wasm", "Where the time goes",
		"## SSH", "## µTPM operations", "## PAL registration", "XMHF64-TrustVisor, bare metal",
		"Web servers: skipped (--quick", "SSH agents: skipped (--quick"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q", want)
		}
	}
	var r benchReport
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) > 0 {
		t.Errorf("errors: %v", r.Errors)
	}
	if len(r.HTTPS) != 2*2*len(Quick.Levels) {
		t.Errorf("%d HTTPS points, want %d", len(r.HTTPS), 2*2*len(Quick.Levels))
	}
	for _, p := range r.HTTPS {
		if p.TPS <= 0 || p.Requests == 0 || p.Errors != 0 || p.PairedRatio <= 0 {
			t.Errorf("HTTPS point %+v", p)
		}
		if abErr == nil && p.ABTPS <= 0 {
			t.Errorf("no ab cross-check for %+v", p)
		}
	}
	if len(r.SSH) != 2 || r.SSH[0].MedianMs <= 0 || r.SSH[1].MedianMs <= 0 {
		t.Errorf("SSH %+v", r.SSH)
	}
	if len(r.UTPM) != 5 {
		t.Errorf("µTPM ops %+v", r.UTPM)
	}
	for _, o := range r.UTPM {
		if o.UTPMUs <= 0 || o.SWTPMUs <= 0 {
			t.Errorf("µTPM op %+v", o)
		}
	}
	if len(r.Lifecycle) < 2 {
		t.Errorf("lifecycle %+v", r.Lifecycle)
	}
	f, err := os.Open(filepath.Join(out, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart.png: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 300 {
		t.Errorf("chart.png is %v", b)
	}
}
