package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
)

// TestMeasureVisor: `palisade measure --kind visor palisaded [--visor-config FILE]` computes,
// offline, the visor measurement a real palisaded started from that executable and
// configuration reports (and puts in evidence), with and without a configuration file.
func TestMeasureVisor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts palisaded")
	}
	dir, err := os.MkdirTemp("", "pmv") // short: the socket path is limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe := filepath.Join(dir, "palisaded")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/palisade-project/palisade/cmd/palisaded").CombinedOutput(); err != nil {
		t.Fatalf("build palisaded: %v\n%s", err, out)
	}
	for i, withConfig := range []bool{false, true} {
		state, socket := filepath.Join(dir, fmt.Sprint("state", i)), filepath.Join(dir, fmt.Sprint("run", i), "p.sock")
		args := []string{"--rot", "none", "--state-dir", state, "--socket", socket, "--lean-socket", "none"}
		measureArgs := []string{"measure", "--kind", "visor", exe, "-q"}
		if withConfig {
			cfg := filepath.Join(dir, "palisaded.json")
			if err := os.WriteFile(cfg, []byte(`{"log_level": "warn"}`+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--config", cfg)
			measureArgs = append(measureArgs, "--visor-config", cfg)
		}
		code, out, errOut := capture(t, measureArgs...)
		if code != 0 {
			t.Fatalf("palisade %s: status %d\n%s", strings.Join(measureArgs, " "), code, errOut)
		}
		want, err := hex.DecodeString(strings.TrimSpace(out))
		if err != nil || len(want) != 32 {
			t.Fatalf("palisade %s printed %q, want 64 hex digits", strings.Join(measureArgs, " "), out)
		}

		d := exec.Command(exe, args...)
		d.Stderr = os.Stderr
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var c *client.Client
		for c == nil {
			if c, err = client.Dial(ctx, socket); err != nil {
				if ctx.Err() != nil {
					t.Fatalf("palisaded did not come up: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		h, err := c.Health(ctx)
		c.Close()
		cancel()
		d.Process.Signal(os.Interrupt)
		d.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if string(h.VisorMeasurement[:]) != string(want) {
			t.Errorf("config %v: palisaded reports visor %x, palisade measure --kind visor says %x", withConfig, h.VisorMeasurement, want)
		}
	}
	// Misuse is bad usage, and a missing configuration file a failure naming it.
	for _, tt := range []struct {
		args    []string
		code    int
		contain string
	}{
		{[]string{"measure", exe, "--visor-config", exe}, exitUsage, "--kind visor"},
		{[]string{"measure", "--kind", "visor", exe, "--visor-config", filepath.Join(dir, "nope.json")}, exitFailure, "nope.json"},
		{[]string{"measure", "--kind", "visor", dir}, exitFailure, "not a regular file"},
	} {
		if code, out, errOut := capture(t, tt.args...); code != tt.code || !strings.Contains(out+errOut, tt.contain) {
			t.Errorf("palisade %s: status %d, want %d and %q:\n%s%s", strings.Join(tt.args, " "), code, tt.code, tt.contain, out, errOut)
		}
	}
}
