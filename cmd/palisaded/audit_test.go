package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/tmpfstest"
)

// TestAuditFullDiskFailsClosed runs palisaded on a state directory whose file system fills up:
// no key-object operation goes on without its audit record. A PAL's KEY_SIGN fails with
// E_AUDIT, a named key's signature and a registration fail with UNAVAILABLE naming the audit
// log, the daemon logs the failure once, shows it in its metrics and keeps serving; once space
// returns everything works again, and the refused registration does not come back at a restart.
func TestAuditFullDiskFailsClosed(t *testing.T) {
	dir := newDaemonDir(t)
	// The whole state directory (state.db, audit.log, wasm cache) on a small file system.
	if err := os.Symlink(tmpfstest.Mount(t, 32<<20), filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, Config{LogLevel: "info"}, true)
	c := d.dial()
	ctx := context.Background()
	pal, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "signer"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Call(ctx, pal.Handle, []byte{'c', 1}); err != nil || res.Status != 0 {
		t.Fatalf("key create: %+v %v", res, err)
	}
	if _, err := c.KeyCreate(ctx, client.KeyCreateOptions{Name: "k", Alg: client.AlgECDSAP256}); err != nil {
		t.Fatal(err)
	}
	ks, err := c.KeySigner(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("m"))
	palSign := append([]byte{0x18, 0x00, 0x0b, 0x00}, digest[:]...) // ECDSA, SHA-256
	audit := filepath.Join(dir, "state", "audit.log")
	// The signing PAL is registered (and its code cached) at the first signature: before the
	// disk fills, or the wasm cache, emptied when the disk cannot take it, would free space.
	if _, err := ks.Sign(nil, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}

	free := tmpfstest.Fill(t, filepath.Join(dir, "state"))
	// Records that fit the log's last page are still written; then the PAL's signature is
	// refused: status 200 + E_AUDIT.
	status := int32(0)
	for i := 0; i < 100 && status == 0; i++ {
		res, err := c.Call(ctx, pal.Handle, palSign)
		if err != nil {
			t.Fatal(err)
		}
		status = res.Status
	}
	if status != 200+engine.EAudit {
		t.Fatalf("PAL signature on a full disk: status %d, want %d (E_AUDIT)", status, 200+engine.EAudit)
	}
	if sig, err := ks.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, client.ErrUnavailable) ||
		!strings.Contains(err.Error(), "audit log "+audit) || sig != nil {
		t.Fatalf("named key signature on a full disk: %x %v, want UNAVAILABLE naming %s", sig, err, audit)
	}
	if _, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "refused"}); !errors.Is(err, client.ErrUnavailable) ||
		!strings.Contains(err.Error(), "audit log") {
		t.Fatalf("registration on a full disk: %v, want UNAVAILABLE naming the audit log", err)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("daemon not serving on a full disk: %v", err)
	}
	metrics := func() string {
		resp, err := http.Get("http://" + d.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if m := metrics(); !strings.Contains(m, "palisade_audit_failing 1\n") {
		t.Errorf("metrics on a full disk:\n%s", m)
	}
	if n := strings.Count(d.stderr.String(), "audit log cannot take records"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, d.stderr.String())
	}

	free()
	if res, err := c.Call(ctx, pal.Handle, palSign); err != nil || res.Status != 0 {
		t.Fatalf("PAL signature after space returned: %+v %v", res, err)
	}
	if _, err := ks.Sign(nil, digest[:], crypto.SHA256); err != nil {
		t.Fatalf("named key signature after space returned: %v", err)
	}
	if m := metrics(); !strings.Contains(m, "palisade_audit_failing 0\n") {
		t.Errorf("metrics after space returned:\n%s", m)
	}
	d.stop()
	d = startDaemon(t, dir, Config{LogLevel: "info"}, false)
	pals, err := d.dial().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pals) != 1 || pals[0].Handle != pal.Handle {
		t.Errorf("after a restart: %+v, want only %s", pals, pal.Handle)
	}
	noted := false
	for _, e := range d.auditEvents() { // every line parses
		noted = noted || e["event"] == "audit_failed" && e["op"] == "write"
	}
	if !noted {
		t.Error("no audit_failed record in the audit log")
	}
}
