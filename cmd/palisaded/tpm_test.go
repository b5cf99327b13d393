package main

import (
	"context"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/swtpmtest"
)

// TestTPMRoot runs the daemon on a real TPM 2.0 (swtpm): evidence from palisade attest is
// rooted and verifies without --allow-unrooted, and a restart unseals the same master secret
// and brings the registrations back.
func TestTPMRoot(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	sw := swtpmtest.Start(t)
	dir := newDaemonDir(t)
	cfg := Config{Rot: sw.Device()}
	d := startDaemon(t, dir, cfg, false)
	c := d.dial()
	ctx := context.Background()
	h, err := c.Health(ctx)
	if err != nil || h.RotMode != "tpm" {
		t.Fatalf("health: %+v %v", h, err)
	}
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "rooted"})
	if err != nil {
		t.Fatal(err)
	}
	ev := filepath.Join(t.TempDir(), "ev.cbor")
	if r := d.runCLI(-1, nil, "attest", info.Handle, "--nonce", "cafe", "-o", ev); r.code != 0 {
		t.Fatalf("attest: %d %s", r.code, r.stderr)
	}
	r := d.runCLI(-1, nil, "verify", ev, "--nonce", "cafe",
		"--pal", hex.EncodeToString(info.Measurement[:]), "--visor", hex.EncodeToString(h.VisorMeasurement[:]))
	if r.code != 0 || !strings.Contains(r.stdout, "rooted in a TPM") {
		t.Fatalf("verify: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	c.Close()
	d.stop()

	d = startDaemon(t, dir, cfg, false)
	list, err := d.dial().List(ctx)
	if err != nil || len(list) != 1 || list[0].Handle != info.Handle {
		t.Fatalf("after restart on the TPM: %+v %v", list, err)
	}
	d.stop()
}
