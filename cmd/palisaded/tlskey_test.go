package main

import (
	"context"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/proctest"

	"github.com/palisade-project/palisade/examples/tlskey"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// TestTLSKeyServerSurvivesRestart runs the HTTPS example against a real palisaded and
// restarts the daemon under it: the server must go on serving curl (its client reconnects,
// its signing PALs get their key again) and log what happened; when the daemon's state is
// wiped, so that the key is gone for good, the failure must be logged too.
func TestTLSKeyServerSurvivesRestart(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skipf("curl not installed (scripts/setup.sh installs it): %v", err)
	}
	ctx := context.Background()
	var img tlskey.Images
	var err error
	if img.Keygen, err = apps.BuildGoPAL(ctx, "examples/tlskey/keygen"); err != nil {
		t.Fatal(err)
	}
	if img.Signer, err = apps.BuildGoPAL(ctx, "examples/tlskey/signer"); err != nil {
		t.Fatal(err)
	}
	dir := newDaemonDir(t)
	d := startDaemon(t, dir, Config{}, false)
	c := d.dial()
	logs := &proctest.SyncBuffer{}
	k, err := tlskey.Setup(ctx, c, img, tlskey.Options{Alg: tlskey.ECDSAP256, Signers: 2,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := tlskey.Serve(l, tlskey.ServerConfig(k.Cert), tlskey.Handler())
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	curl := func() (string, error) {
		out, err := exec.Command("curl", "-sS", "--max-time", "30", "--cacert", ca, "--resolve",
			"localhost:"+port+":127.0.0.1", "https://localhost:"+port+"/").CombinedOutput()
		return string(out), err
	}
	fetch := func(when string) {
		t.Helper()
		// Two signing PALs: four handshakes reach both whichever takes each request.
		for i := 0; i < 4; i++ {
			if out, err := curl(); err != nil || out != tlskey.Page {
				t.Fatalf("curl %s: %v\n%s\nserver log:\n%s", when, err, out, logs.String())
			}
		}
	}
	fetch("before the restart")

	d.stop()
	d = startDaemon(t, dir, Config{}, false)
	fetch("after the restart")
	if n := strings.Count(logs.String(), "installing it again"); n != 2 {
		t.Errorf("server logged %d key reinstalls, want one per signing PAL (2):\n%s", n, logs.String())
	}

	// A daemon whose state was wiped has lost the master secret the key blob is sealed under:
	// the key is gone, and the server must say so where an operator looks.
	d.stop()
	if err := os.RemoveAll(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, dir, Config{}, false)
	if out, err := curl(); err == nil {
		t.Fatalf("curl after the state was wiped succeeded: %s", out)
	}
	if s := logs.String(); !strings.Contains(s, "registering it again") || !strings.Contains(s, "E_FOREIGN") {
		t.Errorf("server log does not report the lost key:\n%s", s)
	}
	k.Close(ctx)
}
