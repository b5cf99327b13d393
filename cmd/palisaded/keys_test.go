package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/swtpmtest"
)

// wwwData is the uid (and gid) of Debian's web server user, allowed to sign with the key.
const wwwData = 33

// TestKeysEndToEnd drives named keys through the real daemon, CLI and client: root creates a
// key that www-data may use, www-data makes a CSR (checked by openssl), root self-signs and
// stores a certificate, a crypto/tls server signs its handshakes with client.KeySigner and
// curl fetches from it, before and after a daemon restart (the signer reconnects by itself);
// a stranger is denied and the denial audited; key attestation verifies.
func TestKeysEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other uids")
	}
	for _, tool := range []string{"openssl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := newDaemonDir(t)
	cfg := Config{SocketMode: "0666"}
	d := startDaemon(t, dir, cfg, false)
	ctx := context.Background()
	work := t.TempDir()

	r := d.runCLI(-1, nil, "key", "create", "web", "--alg", "ecdsa-p256", "--allow-user", fmt.Sprint(wwwData))
	if r.code != 0 || !strings.Contains(r.stdout, "generated") {
		t.Fatalf("key create: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := d.runCLI(-1, nil, "key", "create", "web"); r.code != 7 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("second key create: %d %s", r.code, r.stderr)
	}

	// www-data makes a CSR with the key; openssl checks its signature.
	r = d.runCLI(wwwData, nil, "key", "csr", "web", "--subject", "CN=localhost,O=Palisade test", "--san", "DNS:localhost,IP:127.0.0.1")
	if r.code != 0 {
		t.Fatalf("key csr as www-data: %d %s", r.code, r.stderr)
	}
	csr := filepath.Join(work, "web.csr")
	if err := os.WriteFile(csr, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "req", "-verify", "-noout", "-text", "-in", csr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") || !strings.Contains(string(out), "DNS:localhost, IP Address:127.0.0.1") {
		t.Fatalf("openssl req -verify: %v\n%s", err, out)
	}

	// A stranger may neither see nor use it, and the denial is audited.
	if r := d.runCLI(nobody, nil, "key", "csr", "web", "--subject", "CN=x"); r.code != 7 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("key csr as nobody: %d %s", r.code, r.stderr)
	}
	denied := false
	for _, e := range d.auditEvents() {
		if e["event"] == "key_denied" && e["key"] == "web" && e["uid"] == float64(nobody) {
			denied = true
		}
	}
	if !denied {
		t.Error("no key_denied audit event for nobody")
	}

	// Root, the owner, self-signs a certificate and stores it with the key.
	r = d.runCLI(-1, nil, "key", "selfsign", "web", "--subject", "CN=localhost", "--san", "DNS:localhost,IP:127.0.0.1", "--store")
	if r.code != 0 {
		t.Fatalf("key selfsign: %d %s", r.code, r.stderr)
	}
	certPEM := filepath.Join(work, "web.pem")
	if err := os.WriteFile(certPEM, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode([]byte(r.stdout)); blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("selfsign output is not a PEM certificate:\n%s", r.stdout)
	}

	c, err := client.Dial(ctx, d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	signer, err := c.KeySigner(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(signer.Info().CertChain) != 1 {
		t.Fatalf("stored chain: %d certificates", len(signer.Info().CertChain))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from a PAL-held key") }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{
			Certificate: signer.Info().CertChain, PrivateKey: signer,
		}}},
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()
	url := "https://" + l.Addr().String() + "/"
	fetch := func(when string, extra ...string) {
		t.Helper()
		args := append([]string{"-sS", "--max-time", "30", "--cacert", certPEM}, extra...)
		out, err := exec.Command("curl", append(args, url)...).CombinedOutput()
		if err != nil || string(out) != "hello from a PAL-held key" {
			t.Fatalf("curl %s: %v\n%s", when, err, out)
		}
	}
	fetch("TLS 1.3")
	fetch("TLS 1.2", "--tls-max", "1.2")
	signs := 0
	for _, e := range d.auditEvents() {
		if e["event"] == "key_sign" && e["key"] == "web" && e["ok"] == true {
			signs++
		}
	}
	if signs < 4 { // the CSR, the certificate, two handshakes (written at once, fsync'd later)
		t.Errorf("%d key_sign audit records for web", signs)
	}

	// Restart: the key and its access rules come back, and the signer reconnects.
	d.stop()
	d = startDaemon(t, dir, cfg, false)
	fetch("after a daemon restart")
	if r := d.runCLI(wwwData, nil, "key", "list"); r.code != 0 || !strings.Contains(r.stdout, "web") || !strings.Contains(r.stdout, "generated") {
		t.Fatalf("key list as www-data after restart: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Key attestation.
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := filepath.Join(work, "web.keyattest")
	if r := d.runCLI(-1, nil, "key", "attest", "web", "--nonce", "c0ffee", "-o", ev); r.code != 0 {
		t.Fatalf("key attest: %d %s", r.code, r.stderr)
	}
	visor := hex.EncodeToString(h.VisorMeasurement[:])
	r = d.runCLI(-1, nil, "key", "verify", ev, "--nonce", "c0ffee", "--visor", visor, "--allow-unrooted")
	if r.code != 0 || !strings.Contains(r.stdout, "generated in key-generation PAL") {
		t.Fatalf("key verify: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// palisade verify recognises a key attestation and checks it the same way.
	r = d.runCLI(-1, nil, "verify", ev, "--nonce", "c0ffee", "--visor", visor, "--allow-unrooted")
	if r.code != 0 || !strings.Contains(r.stdout, "key attestation verified") {
		t.Fatalf("palisade verify of a key attestation: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := d.runCLI(-1, nil, "key", "verify", ev, "--nonce", "c0ffef", "--visor", visor, "--allow-unrooted"); r.code != 1 || !strings.Contains(r.stderr, "nonce") {
		t.Fatalf("key verify with another nonce: %d %s", r.code, r.stderr)
	}
	if r := d.runCLI(-1, nil, "key", "verify", ev, "--nonce", "c0ffee", "--visor", visor); r.code != 1 || !strings.Contains(r.stderr, "rooted") {
		t.Fatalf("key verify of unrooted evidence without --allow-unrooted: %d %s", r.code, r.stderr)
	}

	if r := d.runCLI(-1, nil, "key", "delete", "web"); r.code != 0 {
		t.Fatalf("key delete: %d %s", r.code, r.stderr)
	}
	if _, err := c.KeyGet(ctx, "web"); err == nil || !strings.Contains(err.Error(), "no such key") {
		t.Fatalf("KeyGet after delete: %v", err)
	}
}

// BenchmarkKeySign measures a signature with a named key through the daemon (gRPC over its
// socket, access check, audit, signing PAL, µTPM key object) next to the same signature with
// crypto/ecdsa in this process, in one run:
//
//	go test -run '^$' -bench KeySign -benchtime 3s ./cmd/palisaded
func BenchmarkKeySign(b *testing.B) {
	d := startDaemon(b, newDaemonDir(b), Config{}, false)
	ctx := context.Background()
	c := d.dial()
	for _, alg := range []string{client.AlgECDSAP256, client.AlgEd25519, client.AlgRSA2048} {
		if _, err := c.KeyCreate(ctx, client.KeyCreateOptions{Name: alg, Alg: alg}); err != nil {
			b.Fatal(err)
		}
	}
	digest := sha256.Sum256([]byte("handshake"))
	for _, alg := range []string{client.AlgECDSAP256, client.AlgEd25519, client.AlgRSA2048} {
		s, err := c.KeySigner(ctx, alg)
		if err != nil {
			b.Fatal(err)
		}
		var opts crypto.SignerOpts = crypto.SHA256
		msg := digest[:]
		if alg == client.AlgEd25519 {
			opts = crypto.Hash(0)
		}
		b.Run("daemon/"+alg, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Sign(nil, msg, opts); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		var mem crypto.Signer
		switch alg {
		case client.AlgECDSAP256:
			mem, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case client.AlgEd25519:
			_, mem, _ = ed25519.GenerateKey(rand.Reader)
		default:
			mem, _ = rsa.GenerateKey(rand.Reader, 2048)
		}
		b.Run("memory/"+alg, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := mem.Sign(rand.Reader, msg, opts); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestKeysTPMRoot runs keys on a real TPM 2.0 (swtpm): key attestation is rooted and verifies
// without --allow-unrooted, and a key locked by incorrect PINs stays locked across a restart
// (its failure counter is a µTPM monotonic counter anchored in the TPM).
func TestKeysTPMRoot(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	sw := swtpmtest.Start(t)
	dir := newDaemonDir(t)
	cfg := Config{Rot: sw.Device()}
	d := startDaemon(t, dir, cfg, false)
	ctx := context.Background()
	pin := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pin, []byte("2468\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := d.runCLI(-1, nil, "key", "create", "tpmkey", "--alg", "ed25519", "--pin-file", pin, "--max-tries", "2"); r.code != 0 {
		t.Fatalf("key create: %d %s", r.code, r.stderr)
	}
	c := d.dial()
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := filepath.Join(t.TempDir(), "ev")
	if r := d.runCLI(-1, nil, "key", "attest", "tpmkey", "--nonce", "0badc0de", "-o", ev); r.code != 0 {
		t.Fatalf("key attest: %d %s", r.code, r.stderr)
	}
	r := d.runCLI(-1, nil, "key", "verify", ev, "--nonce", "0badc0de", "--visor", hex.EncodeToString(h.VisorMeasurement[:]))
	if r.code != 0 || !strings.Contains(r.stdout, "rooted in a TPM") {
		t.Fatalf("key verify: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s, err := c.KeySigner(ctx, "tpmkey")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("message")
	for _, tc := range []struct {
		pin  string
		want error
	}{
		{"2468", nil}, {"", client.ErrPINRequired}, {"1111", client.ErrPINIncorrect},
		{"1111", client.ErrPINIncorrect}, {"2468", client.ErrLocked},
	} {
		s.PIN = []byte(tc.pin)
		if _, err := s.Sign(nil, msg, crypto.Hash(0)); !errors.Is(err, tc.want) {
			t.Fatalf("PIN %q: %v, want %v", tc.pin, err, tc.want)
		}
	}
	c.Close()
	d.stop()
	d = startDaemon(t, dir, cfg, false)
	s, err = d.dial().KeySigner(ctx, "tpmkey")
	if err != nil {
		t.Fatal(err)
	}
	s.PIN = []byte("2468")
	if _, err := s.Sign(nil, msg, crypto.Hash(0)); !errors.Is(err, client.ErrLocked) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("after a restart: %v, want locked", err)
	}
	d.stop()
}

// TestKeysImportCLI imports keys that openssl made (SEC 1, PKCS#8 RSA and Ed25519), checks
// that the daemon serves the same public keys and marks them imported, that an imported key
// signs a CSR openssl accepts, and drives `key access` by group name and `key pin`.
func TestKeysImportCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other uids")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	d := startDaemon(t, newDaemonDir(t), Config{SocketMode: "0666"}, false)
	work := t.TempDir()
	for _, tc := range []struct {
		name string
		gen  []string
	}{
		{"ec", []string{"ecparam", "-name", "prime256v1", "-genkey", "-noout"}},
		{"rsa", []string{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"}},
		{"ed", []string{"genpkey", "-algorithm", "ed25519"}},
	} {
		keyFile := filepath.Join(work, tc.name+".pem")
		if out, err := exec.Command("openssl", append(tc.gen, "-out", keyFile)...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", tc.gen, err, out)
		}
		if r := d.runCLI(-1, nil, "key", "import", tc.name, keyFile); r.code != 0 || !strings.Contains(r.stdout, "imported") {
			t.Fatalf("key import %s: %d\n%s%s", tc.name, r.code, r.stdout, r.stderr)
		}
		want, err := exec.Command("openssl", "pkey", "-in", keyFile, "-pubout").Output()
		if err != nil {
			t.Fatal(err)
		}
		if r := d.runCLI(-1, nil, "key", "public", tc.name); r.code != 0 || r.stdout != string(want) {
			t.Fatalf("key public %s:\n%s\nwant (openssl):\n%s", tc.name, r.stdout, want)
		}
	}
	r := d.runCLI(-1, nil, "key", "list")
	if r.code != 0 || strings.Count(r.stdout, "imported") != 3 {
		t.Fatalf("key list:\n%s%s", r.stdout, r.stderr)
	}

	// Access by group name: www-data's group may use "ec", nobody may not.
	if r := d.runCLI(-1, nil, "key", "access", "ec", "--allow-group", "www-data"); r.code != 0 {
		t.Fatalf("key access: %d %s", r.code, r.stderr)
	}
	if r := d.runCLI(wwwData, nil, "key", "show", "ec"); r.code != 0 || !strings.Contains(r.stdout, "allowed gids       33") {
		t.Fatalf("key show as www-data: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := d.runCLI(nobody, nil, "key", "show", "ec"); r.code != 7 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("key show as nobody: %d %s", r.code, r.stderr)
	}

	// A PIN: required by csr, given through --pin-file (here on stdin).
	pin := filepath.Join(work, "pin")
	if err := os.WriteFile(pin, []byte("0000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := d.runCLI(-1, nil, "key", "pin", "ec", "--new-pin-file", pin); r.code != 0 || !strings.Contains(r.stdout, "PIN                true") {
		t.Fatalf("key pin: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := d.runCLI(wwwData, nil, "key", "csr", "ec", "--subject", "CN=imported"); r.code != 7 || !strings.Contains(r.stderr, "needs a PIN") {
		t.Fatalf("csr without the PIN: %d %s", r.code, r.stderr)
	}
	r = d.runCLI(wwwData, []byte("0000\n"), "key", "csr", "ec", "--subject", "CN=imported", "--pin-file", "-")
	if r.code != 0 {
		t.Fatalf("csr with the PIN: %d %s", r.code, r.stderr)
	}
	csr := filepath.Join(work, "ec.csr")
	if err := os.WriteFile(csr, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "req", "-verify", "-noout", "-in", csr).CombinedOutput(); err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("openssl req -verify of the imported key's CSR: %v\n%s", err, out)
	}
}

// TestMaxKeysPerOwner: max_keys_per_owner bounds the keys one uid may own, and the refusal
// names the setting.
func TestMaxKeysPerOwner(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{MaxKeysPerOwner: 2}, false)
	c, ctx := d.dial(), context.Background()
	for _, name := range []string{"a", "b"} {
		if _, err := c.KeyCreate(ctx, client.KeyCreateOptions{Name: name, Alg: client.AlgEd25519}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.KeyCreate(ctx, client.KeyCreateOptions{Name: "c", Alg: client.AlgEd25519})
	if err == nil || !strings.Contains(err.Error(), "max_keys_per_owner") {
		t.Fatalf("third key: %v, want a refusal naming max_keys_per_owner", err)
	}
	if err := c.KeyDelete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KeyCreate(ctx, client.KeyCreateOptions{Name: "c", Alg: client.AlgEd25519}); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}
