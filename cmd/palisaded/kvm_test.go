package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/conformance"
	"github.com/palisade-project/palisade/internal/engine/kvm"
)

// needKVM skips where the kvm engine is not offered (no usable /dev/kvm). On such machines
// internal/engine/kvm/testdata/qemu/run-tests.sh runs this test under a real KVM in QEMU.
func needKVM(t *testing.T) {
	t.Helper()
	e, err := kvm.New(kvm.WithPoolSize(0))
	if errors.Is(err, engine.ErrNotSupported) {
		t.Skipf("kvm engine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	e.Close(context.Background())
}

// TestKVMThroughDaemon runs a native PAL on the kvm engine through the whole stack: the
// daemon's choice of engine by image kind, the CLI, hostile calls that must leave the daemon
// serving, sealing across a daemon restart (the registration is restored on the kvm engine
// under the same handle), attestation of the ELF's measurement, and `palisade run`.
func TestKVMThroughDaemon(t *testing.T) {
	needKVM(t)
	dir := newDaemonDir(t)
	elf := filepath.Join(dir, "conformance.elf")
	if err := os.WriteFile(elf, conformance.BuildCNative(t, "a"), 0o644); err != nil {
		t.Fatal(err)
	}
	input := func(b ...byte) string {
		p := filepath.Join(t.TempDir(), "in")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	d := startDaemon(t, dir, Config{}, false)

	// What the CLI measures is what the daemon registers and attests.
	r := d.runCLI(-1, nil, "measure", "-q", elf)
	if r.code != 0 {
		t.Fatalf("measure: %d %s", r.code, r.stderr)
	}
	measurement := strings.Fields(r.stdout)[0]

	// No --engine: an ELF goes to the kvm engine.
	r = d.runCLI(-1, nil, "pal", "register", elf, "--name", "native", "--timeout", "2s")
	if r.code != 0 {
		t.Fatalf("register: %d %s", r.code, r.stderr)
	}
	h := strings.TrimSpace(r.stdout)
	c := d.dial()
	defer c.Close()
	ctx := context.Background()
	infos, err := c.List(ctx)
	if err != nil || len(infos) != 1 || infos[0].Engine != "kvm" || hex.EncodeToString(infos[0].Measurement[:]) != measurement {
		t.Fatalf("List: %+v %v; want one kvm PAL with measurement %s", infos, err, measurement)
	}

	sum := sha256.Sum256([]byte("through the daemon"))
	if r = d.runCLI(-1, nil, "pal", "call", h, "--data", "hthrough the daemon", "--hex"); r.code != 0 || strings.TrimSpace(r.stdout) != hex.EncodeToString(sum[:]) {
		t.Fatalf("hash call: code %d stdout %q stderr %s", r.code, r.stdout, r.stderr)
	}

	// Hostile calls get typed errors; the PAL and the daemon serve the next call.
	for _, tc := range []struct {
		cmd  string
		want error
	}{
		{"L", client.ErrTimeout},
		{"T", client.ErrTrap},
		{"A", client.ErrTrap}, // natively, running off the end of memory is a page fault
	} {
		if _, err := c.Call(ctx, h, []byte(tc.cmd)); !errors.Is(err, tc.want) {
			t.Errorf("call %q: %v, want %v", tc.cmd, err, tc.want)
		}
		if res, err := c.Call(ctx, h, []byte("v")); err != nil || string(res.Output) != "a" {
			t.Fatalf("call after %q: %q %v", tc.cmd, res.Output, err)
		}
	}

	// Seal to this PAL (policy: own identity, no PCRs), restart, unseal.
	r = d.runCLI(-1, nil, "pal", "call", h, "--input", input(append([]byte{'s', 0, 0, 0}, "kvm secret"...)...))
	if r.code != 0 || len(r.stdout) < 32 {
		t.Fatalf("seal: code %d stderr %s", r.code, r.stderr)
	}
	blob := []byte(r.stdout)
	d.stop()
	d = startDaemon(t, dir, Config{}, false)
	r = d.runCLI(-1, nil, "pal", "call", h, "--input", input(append([]byte{'u'}, blob...)...))
	if r.code != 0 || !strings.HasSuffix(r.stdout, "kvm secret") {
		t.Fatalf("unseal after restart: code %d stdout %q stderr %s", r.code, r.stdout, r.stderr)
	}
	// A tampered blob is refused with the µTPM's error, as a status.
	bad := bytes.Clone(blob)
	bad[len(bad)-1] ^= 1
	if r = d.runCLI(-1, nil, "pal", "call", h, "--input", input(append([]byte{'u'}, bad...)...)); r.code == 0 {
		t.Fatalf("unseal of a tampered blob succeeded: %q", r.stdout)
	}

	ev := filepath.Join(t.TempDir(), "ev.cbor")
	if r = d.runCLI(-1, nil, "attest", h, "--nonce", "0badc0de", "-o", ev); r.code != 0 {
		t.Fatalf("attest: %d %s", r.code, r.stderr)
	}
	c2 := d.dial()
	defer c2.Close()
	health, err := c2.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r = d.runCLI(-1, nil, "verify", ev, "--nonce", "0badc0de", "--allow-unrooted", "--pal", measurement,
		"--visor", hex.EncodeToString(health.VisorMeasurement[:])); r.code != 0 {
		t.Fatalf("verify: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r = d.runCLI(-1, nil, "pal", "unregister", h); r.code != 0 {
		t.Fatalf("unregister: %d %s", r.code, r.stderr)
	}
	d.stop()

	// palisade run: an embedded visor, the same PAL, the same engine.
	t.Setenv("PALISADE_STATE_DIR", filepath.Join(dir, "embedded"))
	r = d.runCLI(-1, nil, "run", "--engine", "kvm", "--input", input('v'), elf)
	if r.code != 0 || r.stdout != "a" || !strings.Contains(r.stderr, "engine kvm, measurement "+measurement) {
		t.Fatalf("run --engine kvm: code %d stdout %q stderr %s", r.code, r.stdout, r.stderr)
	}
}
