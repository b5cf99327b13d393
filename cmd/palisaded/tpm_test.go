package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestTPMRootEKChain: swtpm's EK certificate is issued by its local CA's intermediate. With
// ek_chain naming that intermediate, evidence carries it and palisade verify --ek-roots needs
// only the root; without it the root alone does not verify; a chain that did not issue the EK
// certificate stops the daemon at start.
func TestTPMRootEKChain(t *testing.T) {
	// verify runs a daemon with cfg on a fresh swtpm with EK certificates (the NV counter
	// anchors one state per TPM) and verifies its evidence with the local CA's root only.
	verify := func(withChain bool) cliResult {
		sw := swtpmtest.Start(t, swtpmtest.WithEKCert())
		files := t.TempDir()
		chain, roots := filepath.Join(files, "chain.pem"), filepath.Join(files, "roots.pem")
		if err := os.WriteFile(chain, sw.IssuerPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(roots, sw.RootCAPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Rot: sw.Device()}
		if withChain {
			out := daemonMustFail(t, newDaemonDir(t), Config{Rot: sw.Device(), EKChain: roots})
			if !strings.Contains(out, "did not issue the EK certificate") {
				t.Fatalf("wrong chain: %s", out)
			}
			cfg.EKChain = chain
		}
		d := startDaemon(t, newDaemonDir(t), cfg, false)
		defer d.stop()
		c := d.dial()
		ctx := context.Background()
		h, err := c.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ev := filepath.Join(t.TempDir(), "ev.cbor")
		if r := d.runCLI(-1, nil, "attest", info.Handle, "--nonce", "cafe", "-o", ev); r.code != 0 {
			t.Fatalf("attest: %d %s", r.code, r.stderr)
		}
		return d.runCLI(-1, nil, "verify", ev, "--nonce", "cafe", "--ek-roots", roots,
			"--pal", hex.EncodeToString(info.Measurement[:]), "--visor", hex.EncodeToString(h.VisorMeasurement[:]))
	}
	if r := verify(false); r.code == 0 || !strings.Contains(r.stderr, "check ek-certificate failed") {
		t.Fatalf("verify without a chain: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := verify(true)
	if r.code != 0 || !strings.Contains(r.stdout, "EK certificate chains to --ek-roots") {
		t.Fatalf("verify with the chain: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Log(r.stdout)
}

// TestTPMKill9 kills palisaded with SIGKILL three times in a row on swtpm's socket, a TPM
// without a resource manager: whatever the dead daemon left loaded in the TPM (its attestation
// key, at least) must not stop the next start, and the µTPM counter it had anchored in the
// TPM never goes back.
func TestTPMKill9(t *testing.T) {
	sw := swtpmtest.Start(t)
	dir := newDaemonDir(t)
	cfg := Config{Rot: sw.Device()}
	ctx := context.Background()
	counter := func(c *client.Client, handle, op string) uint64 {
		t.Helper()
		res, err := c.Call(ctx, handle, []byte(op))
		if err != nil || res.Status != 0 || len(res.Output) != 8 {
			t.Fatalf("counter %s: %+v %v", op, res, err)
		}
		return binary.LittleEndian.Uint64(res.Output)
	}
	d := startDaemon(t, dir, cfg, false)
	info, err := d.dial().Register(ctx, testPAL(t), client.RegisterOptions{Name: "counted"})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := 1; i <= 3; i++ {
		c := d.dial()
		if v := counter(c, info.Handle, "r"); v != last {
			t.Fatalf("start %d: counter reads %d, last returned %d", i, v, last)
		}
		if last = counter(c, info.Handle, "i"); last != uint64(i) {
			t.Fatalf("start %d: increment returned %d", i, last)
		}
		// The daemon has quoted with its AK (held in the TPM) and anchored the counter.
		ev := filepath.Join(t.TempDir(), "ev.cbor")
		if r := d.runCLI(-1, nil, "attest", info.Handle, "--nonce", "00", "-o", ev); r.code != 0 {
			t.Fatalf("start %d: attest: %d %s", i, r.code, r.stderr)
		}
		c.Close()
		if err := d.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-d.exited
		d = startDaemon(t, dir, cfg, false)
		waitFor(t, 5*time.Second, func() bool { return strings.Contains(d.stderr.String(), "flushed objects and sessions") })
	}
	if v := counter(d.dial(), info.Handle, "r"); v != last {
		t.Fatalf("after three kills: counter reads %d, last returned %d", v, last)
	}
	d.stop()
}

// TestTPMLost: the TPM goes away under a running daemon (swtpm killed: the socket breaks).
// Every TPM operation fails from then on and a restarted swtpm is not reconnected (the
// visor's measurement in its PCR is gone with the TPM's state), so the daemon exits with
// an error that says so, for its supervisor to restart it (dist/palisaded.service:
// Restart=on-failure). It used to stay up, answering every counter, quote and key with an
// internal error and logging nothing.
func TestTPMLost(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	sw := swtpmtest.Start(t)
	d := startDaemon(t, newDaemonDir(t), Config{Rot: sw.Device()}, false)
	c := d.dial()
	ctx := context.Background()
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Call(ctx, info.Handle, []byte("i")); err != nil || res.Status != 0 {
		t.Fatalf("increment with the TPM: %+v %v", res, err)
	}
	sw.Stop()
	// The first operation that needs the TPM finds it gone.
	c.Call(ctx, info.Handle, []byte("i"))
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("palisaded still runs 20 s after its TPM went away\n%s", d.stderr.String())
	}
	if d.exitErr == nil {
		t.Fatalf("palisaded exited with status 0 after losing its TPM\n%s", d.stderr.String())
	}
	if out := d.stderr.String(); !strings.Contains(out, "TPM connection lost") {
		t.Fatalf("palisaded's error does not say the TPM was lost:\n%s", out)
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after the exit: %v", err)
	}
}
