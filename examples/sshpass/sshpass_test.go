package sshpass_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/examples/sshpass"
	"github.com/palisade-project/palisade/examples/tlskey"
	"github.com/palisade-project/palisade/integrations/pam"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

var (
	setupOnce sync.Once
	setupErr  error
	daemon    *apps.Daemon
)

var (
	keyOnce sync.Once
	keyErr  error
	keyImgs tlskey.Images
)

func TestMain(m *testing.M) {
	code := m.Run()
	if daemon != nil {
		daemon.Close(context.Background())
	}
	os.Exit(code)
}

func env(t *testing.T) *client.Client {
	t.Helper()
	ctx := context.Background()
	setupOnce.Do(func() {
		daemon, setupErr = apps.StartDaemon(ctx, apps.DaemonOptions{Engines: []string{"wasm"}})
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	c, err := daemon.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// maxFailures is the tests' lockout threshold: the third failure in a row locks.
const maxFailures = 3

// openDB opens (registering the shipped checking PAL if dir has none) the state directory dir.
func openDB(t *testing.T, dir string) *sshpass.PassDB {
	t.Helper()
	p, err := sshpass.OpenPassDB(context.Background(), env(t), dir, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// newChecker enrols users in a new state directory, with the default Argon2id parameters.
func newChecker(t *testing.T, users map[string]string) *sshpass.PassDB {
	p := openDB(t, t.TempDir())
	for u, pw := range users {
		if err := p.Enrol(context.Background(), u, []byte(pw), pam.Params{}, maxFailures); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func startServer(t *testing.T, check sshpass.Checker) string {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return startServerWithKey(t, check, hk)
}

func startServerWithKey(t *testing.T, check sshpass.Checker, hk ssh.Signer) string {
	srv := sshpass.NewServer(hk, check)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// openssh runs the OpenSSH client through sshpass with password pw, not checking the host key.
func openssh(t *testing.T, addr, user, pw, command string) (string, error) {
	return opensshOpts(t, addr, user, pw, command, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
}

func opensshOpts(t *testing.T, addr, user, pw, command string, opts ...string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	args := append([]string{"-e", "ssh", "-p", port}, opts...)
	cmd := exec.Command("sshpass", append(args, "-o", "LogLevel=ERROR",
		"-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
		"-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10",
		user+"@"+host, command)...)
	cmd.Env = append(os.Environ(), "SSHPASS="+pw)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestOpenSSHClient(t *testing.T) {
	for _, tool := range []string{"ssh", "sshpass"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh installs it)", tool)
		}
	}
	dir := t.TempDir()
	p := openDB(t, dir)
	for u, pw := range map[string]string{"alice": "correct horse", "bob": "battery staple"} {
		if err := p.Enrol(context.Background(), u, []byte(pw), pam.Params{}, maxFailures); err != nil {
			t.Fatal(err)
		}
	}
	addr := startServer(t, p)

	out, err := openssh(t, addr, "alice", "correct horse", "whoami")
	if err != nil || out != "alice\n" {
		t.Fatalf("correct password: %v\n%s", err, out)
	}
	out, err = openssh(t, addr, "bob", "battery staple", "echo hi there")
	if err != nil || out != "hi there\n" {
		t.Fatalf("echo: %v\n%s", err, out)
	}
	out, err = openssh(t, addr, "bob", "battery staple", "cat /etc/shadow")
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 127 || !strings.Contains(out, "not available") {
		t.Fatalf("a real command ran or failed otherwise: %v\n%s", err, out)
	}
	for _, tt := range []struct{ user, pw string }{{"alice", "Correct horse"}, {"mallory", "correct horse"}, {"alice", ""}} {
		out, err = openssh(t, addr, tt.user, tt.pw, "whoami")
		if err == nil || strings.Contains(out, tt.user+"\n") {
			t.Fatalf("%s with a wrong password got in: %s", tt.user, out)
		}
	}

	// Repeated failures lock the user out in the PAL: even the right password is refused until
	// the lockout is lifted. bob's failures do not lock alice out.
	for i := 0; i < maxFailures; i++ {
		openssh(t, addr, "bob", "guess", "whoami")
	}
	if out, err := openssh(t, addr, "bob", "battery staple", "whoami"); err == nil {
		t.Fatalf("right password accepted during the lockout: %s", out)
	}
	ctx := context.Background()
	if err := p.Check(ctx, "bob", []byte("battery staple")); !errors.Is(err, sshpass.ErrLocked) {
		t.Fatalf("check during lockout: %v, want ErrLocked", err)
	}
	if out, err := openssh(t, addr, "alice", "correct horse", "whoami"); err != nil {
		t.Fatalf("alice locked out by bob's failures: %v %s", err, out)
	}

	// The lockout is in the µTPM's counter and the sealed database in the state directory: a
	// new server on the same directory (a new PassDB, as after a restart) still refuses bob.
	q := openDB(t, dir)
	if err := q.Check(ctx, "bob", []byte("battery staple")); !errors.Is(err, sshpass.ErrLocked) {
		t.Fatalf("check during lockout, reopened state: %v, want ErrLocked", err)
	}
	// Unlocking (what `palisade passwd bob --unlock` does) lets the right password in again.
	if err := q.Unlock(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	addr = startServer(t, q)
	if out, err := openssh(t, addr, "bob", "battery staple", "whoami"); err != nil || out != "bob\n" {
		t.Fatalf("after the unlock: %v %s", err, out)
	}
}

// TestSealedDatabase shows that the server holds only a sealed blob: it has no verifier in the
// clear, a tampered blob is refused, and another PAL cannot unseal it.
func TestSealedDatabase(t *testing.T) {
	p := newChecker(t, map[string]string{"alice": "correct horse"})
	db, err := p.SealedDB()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(db), "alice") {
		t.Fatal("the sealed database contains a user name in the clear")
	}
	ctx := context.Background()
	set := func(p *sshpass.PassDB, db []byte) {
		t.Helper()
		if err := p.SetSealedDB(db); err != nil {
			t.Fatal(err)
		}
	}
	bad := append([]byte(nil), db...)
	bad[len(bad)/2] ^= 1
	set(p, bad)
	if err := p.Check(ctx, "alice", []byte("correct horse")); err == nil || errors.Is(err, sshpass.ErrWrongPassword) {
		t.Fatalf("tampered database: %v, want an unseal error", err)
	}
	set(p, db)
	if err := p.Check(ctx, "alice", []byte("correct horse")); err != nil {
		t.Fatal(err)
	}
	// A second registration of the same image (same measurement) can use it, as after a
	// daemon restart.
	q := newChecker(t, nil)
	set(q, db)
	if err := q.Check(ctx, "alice", []byte("correct horse")); err != nil {
		t.Fatal(err)
	}
	if err := q.Check(ctx, "alice", []byte("wrong")); !errors.Is(err, sshpass.ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
}

// TestMalformedInput sends the checking PAL hostile inputs: each is refused, none kills it
// (integrations/pam's FuzzCheckerRequest covers the request parser at large).
func TestMalformedInput(t *testing.T) {
	c := env(t)
	p := newChecker(t, map[string]string{"alice": "pw"})
	ctx := context.Background()
	for _, in := range [][]byte{nil, {'C'}, {'C', 0xff, 0xff, 0xff, 0xff, 1}, {'C', 0, 0, 0, 0, 0}, {'C', 0, 0, 0, 0, 9, 'a'}, {'X', 0, 0, 0, 0, 1, 'a'}, {'C', 3, 0, 0, 0, 1, 2, 3, 1, 'a'}} {
		res, err := c.Call(ctx, p.Handle(), in)
		if err != nil || res.Status == 0 {
			t.Errorf("input %x: status %d, err %v", in, res.Status, err)
		}
	}
	if err := p.Check(ctx, "alice", []byte("pw")); err != nil {
		t.Fatal(err)
	}
}

func TestPlainChecker(t *testing.T) {
	var p sshpass.Plain
	p.Enrol("alice", []byte("pw"))
	ctx := context.Background()
	if err := p.Check(ctx, "alice", []byte("pw")); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx, "alice", []byte("px")); !errors.Is(err, sshpass.ErrWrongPassword) {
		t.Fatal(err)
	}
	if err := p.Check(ctx, "bob", []byte("pw")); !errors.Is(err, sshpass.ErrWrongPassword) {
		t.Fatal(err)
	}
}

// TestPALHostKey runs the server with its host key held by the HTTPS example's PALs (an ECDSA
// P-256 µTPM key object; an SSH host signature is an ECDSA/SHA-256 signature, a shape the
// signing PAL accepts). OpenSSH checks the host key strictly against a known_hosts entry, so
// the login proves that the PAL's signature over the key exchange verifies.
func TestPALHostKey(t *testing.T) {
	for _, tool := range []string{"ssh", "sshpass"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	c := env(t)
	ctx := context.Background()
	keyOnce.Do(func() {
		if keyImgs.Keygen, keyErr = apps.BuildGoPAL(ctx, "examples/tlskey/keygen"); keyErr == nil {
			keyImgs.Signer, keyErr = apps.BuildGoPAL(ctx, "examples/tlskey/signer")
		}
	})
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	k, err := tlskey.Setup(ctx, c, keyImgs, tlskey.Options{Alg: tlskey.ECDSAP256, Signers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close(context.Background())
	hk, err := ssh.NewSignerFromSigner(k.Signer())
	if err != nil {
		t.Fatal(err)
	}
	addr := startServerWithKey(t, newChecker(t, map[string]string{"alice": "pw"}), hk)
	host, port, _ := net.SplitHostPort(addr)
	known := filepath.Join(t.TempDir(), "known_hosts")
	line := fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(hk.PublicKey()))
	if err := os.WriteFile(known, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	strict := []string{"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + known, "-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256"}
	if out, err := opensshOpts(t, addr, "alice", "pw", "whoami", strict...); err != nil || out != "alice\n" {
		t.Fatalf("login with the PAL host key: %v\n%s", err, out)
	}
	// A different pinned key is refused by the client: the check is real.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	os2, _ := ssh.NewSignerFromSigner(other)
	os.WriteFile(known, []byte(fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(os2.PublicKey()))), 0o600)
	if out, err := opensshOpts(t, addr, "alice", "pw", "whoami", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+known); err == nil {
		t.Fatalf("login with a wrong pinned host key succeeded: %s", out)
	}
}
