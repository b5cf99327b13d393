package pkcs11_test

import (
	"context"
	"crypto/sha1"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/csdk"
	"github.com/palisade-project/palisade/internal/p11web"
)

// TestRotatedKeyHandles runs test/rotate.c: a key deleted and created again under its name
// gets new object handles, and the old ones (held, say, by a web server that loaded the key
// at start) answer CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID instead of naming the
// new key.
func TestRotatedKeyHandles(t *testing.T) {
	e := setup(t)
	prog := filepath.Join(t.TempDir(), "rotate")
	if out, err := exec.Command("cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
		"-o", prog, "test/rotate.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	const name = "rotated"
	e.cli(t, "key", "create", name, "--alg", "ecdsa-p256")
	cli := filepath.Join(e.bin, "palisade")
	rotate := fmt.Sprintf("%s key delete %s && %s key create %s --alg ecdsa-p256 >/dev/null", cli, name, cli, name)
	if out, err := e.try([]string{"PALISADE_PKCS11_KEYS=" + name}, prog, e.module, name, rotate); err != nil {
		t.Fatalf("rotate: %v\n%s\nmodule log:\n%s", err, out, e.logText(t))
	}
}

// TestWrongPINLogsOut runs test/pin.c: a PIN the signing PAL finds incorrect is forgotten, so
// further signatures ask for a login (CKR_USER_NOT_LOGGED_IN) instead of each costing one of
// the key's tries; with two tries, the key still signs with the right PIN afterwards.
func TestWrongPINLogsOut(t *testing.T) {
	e := setup(t)
	prog := filepath.Join(t.TempDir(), "pin")
	if out, err := exec.Command("cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
		"-o", prog, "test/pin.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	const name, right = "two-tries", "2468"
	pinFile := e.path(name + ".pin")
	if err := os.WriteFile(pinFile, []byte(right), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cli(t, "key", "create", name, "--alg", "ecdsa-p256", "--pin-file", pinFile, "--max-tries", "2")
	if out, err := e.try([]string{"PALISADE_PKCS11_KEYS=" + name}, prog, e.module, name, right, "1357"); err != nil {
		t.Fatalf("pin: %v\n%s\nmodule log:\n%s", err, out, e.logText(t))
	}
}

// TestRefusedBySigningPAL: a key bound to a signing PAL of the user's own whose policy signs
// SHA-384 digests only (internal/keys/testdata/sha384only.c): what the policy refuses is
// CKR_FUNCTION_REJECTED, a SHA-1 hash (sent with hash none) included; what it allows signs.
func TestRefusedBySigningPAL(t *testing.T) {
	e := setup(t)
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	pal := filepath.Join(t.TempDir(), "sha384only.wasm")
	if err := csdk.BuildWasm(context.Background(), pal, nil, "../../internal/keys/testdata/sha384only.c"); err != nil {
		t.Fatal(err)
	}
	const name = "p384only"
	e.cli(t, "key", "create", name, "--alg", "ecdsa-p256", "--signer", pal)
	h1 := sha1.Sum([]byte("m"))
	for file, b := range map[string][]byte{"m": []byte("m"), "m.sha1": h1[:]} {
		if err := os.WriteFile(e.path(file), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		mech, in, want string // want: "" to sign
	}{
		{"ECDSA-SHA384", "m", ""},
		{"ECDSA-SHA256", "m", "(0x200)"}, // CKR_FUNCTION_REJECTED, which pkcs11-tool 0.23 does not name
		{"ECDSA", "m.sha1", "(0x200)"},
	} {
		out, err := e.try([]string{"PALISADE_PKCS11_KEYS=" + name}, "pkcs11-tool", "--module", e.module, "--sign",
			"--id", fmt.Sprintf("%x", name), "-m", c.mech, "-i", e.path(c.in), "-o", e.path("sig-p384only"))
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(out, c.want)) {
			t.Errorf("%s of %s: %v, want %q\n%s", c.mech, c.in, err, c.want, out)
		}
	}
}

// TestReloadAfterRotation: nginx and Apache serve a key held by palisaded; the key is rotated
// (deleted, created again under its name, a new certificate written over the old one) and the
// server reloaded (nginx: SIGHUP; Apache: SIGUSR1, graceful): the new workers, whose module
// reads the key list afresh, serve the new key and certificate. Before rotated keys got new
// object handles, nginx's reload failed: the master's libp11 matched the old handle to the
// public key it had read for it, so nginx refused the new certificate ("key values mismatch")
// and kept serving the old one.
func TestReloadAfterRotation(t *testing.T) {
	e := setup(t)
	for _, srv := range []struct {
		name, bin string
		reload    syscall.Signal
	}{
		{"nginx", "nginx", syscall.SIGHUP},
		{"apache", "apache2", syscall.SIGUSR1},
	} {
		t.Run(srv.name, func(t *testing.T) {
			need(t, srv.bin)
			name := "tls-rotated-" + srv.name // the web servers' token shows the keys named tls-*
			cert := e.path(name + ".crt")
			create := func() {
				e.cli(t, "key", "create", name, "--alg", "ecdsa-p256", "--allow-user", fmt.Sprint(nobody))
				e.cli(t, "key", "selfsign", name, "--subject", "CN=localhost", "--san", "DNS:localhost,IP:127.0.0.1", "-o", cert)
			}
			create()
			hosts := []p11web.VHost{{Port: freePort(t), Cert: cert, Key: "pkcs11:token=palisade;object=" + name + ";type=private"}}
			w := startWebServer(t, e, srv.name+"-rotation", hosts)
			serves(t, hosts, w)

			e.cli(t, "key", "delete", name)
			create()
			if err := w.cmd.Process.Signal(srv.reload); err != nil {
				t.Fatal(err)
			}
			// The reload is done when a handshake verifies with the new certificate.
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				if out, err := curl(hosts[0].Port, cert, "1.3"); err == nil && out == "palisade\n" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s does not serve the rotated key after its reload\n%s\nmodule log:\n%s", srv.name, w, e.logText(t))
				}
			}
			serves(t, hosts, w)
		})
	}
}
