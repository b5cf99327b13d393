package pam_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/examples/sshpass"
	"github.com/palisade-project/palisade/integrations/internal/ossh"
	"github.com/palisade-project/palisade/integrations/pam"
)

func TestMain(m *testing.M) { ossh.Main(m) }

// pamWrapper is libpam_wrapper (Debian libpam-wrapper): preloaded, it makes libpam read service
// files from PAM_WRAPPER_SERVICE_DIR, so tests never touch /etc/pam.d.
const pamWrapper = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so"

// buildModule builds pam_palisade.so with its Makefile into a temporary directory.
func buildModule(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	if _, err := os.Stat("/usr/include/security/pam_modules.h"); err != nil {
		t.Skip("libpam0g-dev not installed (scripts/setup.sh)")
	}
	dir := t.TempDir()
	cmd := exec.Command("make", "-C", "module", "BUILD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	return filepath.Join(dir, "pam_palisade.so")
}

// pamSetup enrols users in a fresh state directory and writes a PAM service file for
// pam_palisade with it; it returns the service directory and the module line's arguments.
type pamSetup struct {
	e       *ossh.Env
	module  string
	state   string // pam_palisade's dir=
	svcDir  string // for PAM_WRAPPER_SERVICE_DIR
	service string
}

func newPAMSetup(t *testing.T, e *ossh.Env, service string) *pamSetup {
	s := &pamSetup{e: e, module: buildModule(t), state: filepath.Join(e.Dir, "pam-state"),
		svcDir: filepath.Join(e.Dir, "pam.d"), service: service}
	if err := os.MkdirAll(s.svcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.svcDir, service), []byte(s.authLine()+"\naccount required /lib/x86_64-linux-gnu/security/pam_permit.so\nsession required /lib/x86_64-linux-gnu/security/pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// authLine is the pam.d line, as docs/ssh.md gives it (with this test's paths).
func (s *pamSetup) authLine() string {
	return fmt.Sprintf("auth required %s socket=%s dir=%s daemon_uid=%d nodelay", s.module,
		filepath.Join(filepath.Dir(s.e.Socket), "lean.sock"), s.state, os.Getuid())
}

func (s *pamSetup) env() []string {
	return []string{"LD_PRELOAD=" + pamWrapper, "PAM_WRAPPER=1", "PAM_WRAPPER_SERVICE_DIR=" + s.svcDir}
}

// passwd runs `palisade passwd` with the password on stdin.
func (s *pamSetup) passwd(t *testing.T, user, pw string, args ...string) {
	t.Helper()
	out, errs, code := s.e.Run(nil, pw+"\n", s.e.CLI, append([]string{"passwd", user, "--dir", s.state}, args...)...)
	if code != 0 {
		t.Fatalf("palisade passwd %s %v: exit %d\n%s%s", user, args, code, out, errs)
	}
}

// pamtester runs pamtester's authenticate for user with password pw and reports success.
func (s *pamSetup) pamtester(t *testing.T, user, pw string) bool {
	t.Helper()
	out, errs, code := s.e.Run(s.env(), pw+"\n", "pamtester", "-v", s.service, user, "authenticate")
	ok := code == 0 && strings.Contains(out+errs, "successfully authenticated")
	if code == 0 && !ok {
		t.Fatalf("pamtester exit 0 without success:\n%s%s", out, errs)
	}
	return ok
}

// TestPamtester drives pam_palisade.so through the real libpam (pam_wrapper) with pamtester:
// the right password passes, a wrong one and an unknown user fail, the lockout after
// --max-failures holds against the right password and across a palisaded restart, and
// `palisade passwd --unlock` lifts it.
func TestPamtester(t *testing.T) {
	ossh.NeedTools(t, "pamtester")
	if _, err := os.Stat(pamWrapper); err != nil {
		t.Skip("libpam-wrapper not installed (scripts/setup.sh)")
	}
	e := ossh.NewEnv(t)
	s := newPAMSetup(t, e, "palisade-test")
	s.passwd(t, "alice", "correct horse", "--max-failures", "3")
	s.passwd(t, "bob", "bobs password")
	// Argument, not stdin: refused (passwords never travel in argv).
	if _, errs, code := e.Run(nil, "", e.CLI, "passwd", "alice", "hunter2", "--dir", s.state); code != 2 || !strings.Contains(errs, "never from arguments") {
		t.Errorf("palisade passwd with the password as an argument: exit %d %s", code, errs)
	}

	for _, tc := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "correct horse", true},
		{"bob", "bobs password", true},
		{"alice", "bobs password", false},
		{"carol", "correct horse", false}, // unknown
		{"-alice", "correct horse", false},
		{"alice", "correct horse", true},
	} {
		if got := s.pamtester(t, tc.user, tc.pw); got != tc.want {
			t.Fatalf("pamtester %s / %q: %v, want %v", tc.user, tc.pw, got, tc.want)
		}
	}
	for i := 0; i < 3; i++ {
		if s.pamtester(t, "alice", "guess") {
			t.Fatal("a wrong password passed")
		}
	}
	if s.pamtester(t, "alice", "correct horse") {
		t.Fatal("the right password passed after 3 failures (max-failures 3)")
	}
	e.StopDaemon()
	e.StartDaemon()
	if s.pamtester(t, "alice", "correct horse") {
		t.Fatal("the lockout did not survive a palisaded restart")
	}
	if !s.pamtester(t, "bob", "bobs password") {
		t.Fatal("bob refused after the restart")
	}
	s.passwd(t, "alice", "", "--unlock")
	if !s.pamtester(t, "alice", "correct horse") {
		t.Fatal("the right password refused after --unlock")
	}

	// A daemon running as another uid than daemon_uid= is not asked: the right password fails.
	other := strings.Replace(s.authLine(), fmt.Sprintf("daemon_uid=%d", os.Getuid()), fmt.Sprintf("daemon_uid=%d", os.Getuid()+4242), 1)
	if err := os.WriteFile(filepath.Join(s.svcDir, "palisade-other-uid"), []byte(other+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := e.Run(s.env(), "correct horse\n", "pamtester", "palisade-other-uid", "alice", "authenticate"); code == 0 {
		t.Fatalf("pam_palisade asked a daemon of an unexpected uid:\n%s%s", out, errs)
	}
}

// TestSSHDPassword logs in to the real sshd (UsePAM yes, its PAM stack pam_palisade through
// pam_wrapper) with OpenSSH's ssh driven by sshpass: the right password logs in, a wrong one
// is refused, and after --max-failures failures the lockout holds across a palisaded restart.
func TestSSHDPassword(t *testing.T) {
	ossh.NeedTools(t, "ssh", "sshpass", "ssh-keygen", "/usr/sbin/sshd")
	if _, err := os.Stat(pamWrapper); err != nil {
		t.Skip("libpam-wrapper not installed (scripts/setup.sh)")
	}
	e := ossh.NewEnv(t)
	s := newPAMSetup(t, e, "sshd")
	s.passwd(t, "root", "root's palisade password", "--max-failures", "2")
	hostKey := filepath.Join(e.Dir, "ssh_host_ed25519_key")
	if out, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey); code != 0 {
		t.Fatalf("ssh-keygen: %s%s", out, errs)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	port := e.SSHDWithEnv(s.env(), fmt.Sprintf(`HostKey %s
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
PermitRootLogin yes
`, hostKey))
	knownHosts := filepath.Join(e.Dir, "known_hosts")
	kh := fmt.Sprintf("[127.0.0.1]:%d %s", port, strings.Join(strings.Fields(string(hostPub))[:2], " "))
	if err := os.WriteFile(knownHosts, []byte(kh+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	login := func(pw string) (string, int) {
		out, _, code := e.Run([]string{"SSHPASS=" + pw}, "", "sshpass", append([]string{"-e", "ssh"}, ossh.SSHArgs(port, knownHosts,
			"-o", "BatchMode=no", "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1",
			"-o", "PubkeyAuthentication=no", "echo in")...)...)
		return out, code
	}
	if out, code := login("root's palisade password"); code != 0 || out != "in\n" {
		t.Fatalf("ssh with the right password: exit %d %q", code, out)
	}
	for i := 0; i < 2; i++ {
		if _, code := login("wrong"); code == 0 {
			t.Fatal("ssh with a wrong password logged in")
		}
	}
	if _, code := login("root's palisade password"); code == 0 {
		t.Fatal("the right password logged in after 2 failures (max-failures 2)")
	}
	e.StopDaemon()
	e.StartDaemon()
	if _, code := login("root's palisade password"); code == 0 {
		t.Fatal("the lockout did not survive a palisaded restart")
	}
	s.passwd(t, "root", "", "--unlock")
	if out, code := login("root's palisade password"); code != 0 || out != "in\n" {
		t.Fatalf("ssh after --unlock: exit %d %q", code, out)
	}
}

// TestDemoSharesPasswdState: the demo server's checker (examples/sshpass.PassDB) and
// pam_palisade.so use one state directory written by `palisade passwd`: the demo checks the
// password passwd enrolled, its failures lock the user for pam_palisade too (one µTPM counter),
// and passwd's --unlock applies to the demo at once.
func TestDemoSharesPasswdState(t *testing.T) {
	ossh.NeedTools(t, "pamtester")
	if _, err := os.Stat(pamWrapper); err != nil {
		t.Skip("libpam-wrapper not installed (scripts/setup.sh)")
	}
	e := ossh.NewEnv(t)
	s := newPAMSetup(t, e, "palisade-test")
	s.passwd(t, "alice", "correct horse", "--max-failures", "2")
	ctx := context.Background()
	c, err := client.Dial(ctx, e.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	demo, err := sshpass.OpenPassDB(ctx, c, s.state, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer demo.Close(ctx)
	for _, step := range []struct {
		what string
		do   func() error
		want error
	}{
		{"demo, right password", func() error { return demo.Check(ctx, "alice", []byte("correct horse")) }, nil},
		{"demo, wrong password", func() error { return demo.Check(ctx, "alice", []byte("guess 1")) }, sshpass.ErrWrongPassword},
		{"demo, wrong password again", func() error { return demo.Check(ctx, "alice", []byte("guess 2")) }, sshpass.ErrWrongPassword},
		{"demo, right password, locked", func() error { return demo.Check(ctx, "alice", []byte("correct horse")) }, sshpass.ErrLocked},
		{"pam_palisade, right password, locked by the demo's failures", func() error {
			if s.pamtester(t, "alice", "correct horse") {
				return nil
			}
			return sshpass.ErrLocked
		}, sshpass.ErrLocked},
		{"palisade passwd --unlock", func() error { s.passwd(t, "alice", "", "--unlock"); return nil }, nil},
		{"demo, right password, unlocked", func() error { return demo.Check(ctx, "alice", []byte("correct horse")) }, nil},
		{"pam_palisade, right password", func() error {
			if s.pamtester(t, "alice", "correct horse") {
				return nil
			}
			return sshpass.ErrWrongPassword
		}, nil},
	} {
		if err := step.do(); !errors.Is(err, step.want) || (err == nil) != (step.want == nil) {
			t.Fatalf("%s: %v, want %v", step.what, err, step.want)
		}
	}
}

// tempUser creates a system user with a random name and password pw (set through chpasswd
// from stdin, hashed with crypt method method: YESCRYPT, SHA512, ...) for a measurement, and
// removes it in t.Cleanup, which runs even when the test fails. It skips unless root with
// useradd, chpasswd and userdel.
func tempUser(t *testing.T, pw, method string) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("creating a temporary system user needs root")
	}
	ossh.NeedTools(t, "useradd", "chpasswd", "userdel")
	var r [5]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	name := "pptest" + hex.EncodeToString(r[:])
	// Registered before useradd: a useradd that fails half-way still gets cleaned up.
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", "-f", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "does not exist") {
			t.Errorf("userdel %s: %v %s", name, err, out)
		}
		if _, err := user.Lookup(name); err == nil {
			t.Errorf("temporary user %s still exists after userdel", name)
		}
	})
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", "--comment", "palisade test, removed by the test", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	cmd := exec.Command("chpasswd", "--crypt-method", method)
	cmd.Stdin = strings.NewReader(name + ":" + pw + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v %s", err, out)
	}
	return name
}

// TestSSHDLoginCost measures OpenSSH password logins (new connections: sshpass + ssh against
// the real sshd, UsePAM yes) against three sshd whose PAM stacks differ only in the auth line:
// pam_permit (no check), pam_unix (the system's check: a temporary user in /etc/shadow, its
// password hashed with PALISADE_BENCH_SSH_CRYPT, default YESCRYPT, Debian 12's default for
// passwd) and pam_palisade (DefaultParams), alternating so all see the same load; then the same
// stacks under pamtester, and the native Argon2id time (x/crypto) in the same run. It logs the
// medians, the raw difference pam_palisade − pam_unix and the isolation cost
// pam_palisade − pam_unix − native Argon2id. It runs only with PALISADE_BENCH_SSH=N (N logins
// each), as root (it creates, and removes, a system user).
func TestSSHDLoginCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PALISADE_BENCH_SSH"))
	if n <= 0 {
		t.Skip("set PALISADE_BENCH_SSH=N to measure N logins per stack")
	}
	method := os.Getenv("PALISADE_BENCH_SSH_CRYPT")
	if method == "" {
		method = "YESCRYPT"
	}
	ossh.NeedTools(t, "ssh", "sshpass", "ssh-keygen", "/usr/sbin/sshd", "pamtester")
	const pw = "the measured user's password"
	name := tempUser(t, pw, method)
	shadow, err := exec.Command("getent", "shadow", name).Output()
	if err != nil {
		t.Fatalf("getent shadow %s: %v", name, err)
	}
	// The hash's method and parameters ("$y$j9T$": yescrypt; "$6$": SHA-512 crypt), not its
	// salt: "$id$salt$hash" or "$id$params$salt$hash".
	f := strings.Split(strings.Split(string(shadow), ":")[1], "$")
	hashPrefix := "$" + f[1] + "$"
	if len(f) >= 5 {
		hashPrefix += f[2] + "$"
	}
	e := ossh.NewEnv(t)
	s := newPAMSetup(t, e, "sshd")
	s.passwd(t, name, pw)
	const lib = "/lib/x86_64-linux-gnu/security/"
	stackDir := func(label, auth string) string {
		dir := filepath.Join(e.Dir, "pam.d-"+label)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		rest := "account required " + lib + "pam_permit.so\nsession required " + lib + "pam_permit.so\n"
		if err := os.WriteFile(filepath.Join(dir, "sshd"), []byte(auth+"\n"+rest), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	hostKey := filepath.Join(e.Dir, "ssh_host_ed25519_key")
	if out, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey); code != 0 {
		t.Fatalf("ssh-keygen: %s%s", out, errs)
	}
	hostPub, _ := os.ReadFile(hostKey + ".pub")
	cfg := fmt.Sprintf("HostKey %s\nUsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n", hostKey)
	type stack struct {
		name      string
		dir       string
		port      int
		ssh, pamt []float64
	}
	stacks := []*stack{
		{name: "pam_permit", dir: stackDir("permit", "auth required "+lib+"pam_permit.so")},
		// nodelay on both checking modules: the failure delay is not what is measured.
		{name: "pam_unix", dir: stackDir("unix", "auth required "+lib+"pam_unix.so nodelay")},
		{name: "pam_palisade", dir: s.svcDir},
	}
	knownHosts := filepath.Join(e.Dir, "known_hosts")
	var kh strings.Builder
	for _, st := range stacks {
		st.port = e.SSHDWithEnv([]string{"LD_PRELOAD=" + pamWrapper, "PAM_WRAPPER=1", "PAM_WRAPPER_SERVICE_DIR=" + st.dir}, cfg)
		fmt.Fprintf(&kh, "[127.0.0.1]:%d %s\n", st.port, strings.Join(strings.Fields(string(hostPub))[:2], " "))
	}
	if err := os.WriteFile(knownHosts, []byte(kh.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// A wrong password must fail on both checking stacks, or the measurement measures nothing.
	for _, st := range stacks[1:] {
		if _, _, code := e.Run([]string{"LD_PRELOAD=" + pamWrapper, "PAM_WRAPPER=1", "PAM_WRAPPER_SERVICE_DIR=" + st.dir}, "not "+pw+"\n", "pamtester", "sshd", name, "authenticate"); code == 0 {
			t.Fatalf("%s accepted a wrong password", st.name)
		}
	}
	s.passwd(t, name, "", "--unlock") // the failure above counts in pam_palisade's lockout
	for i := 0; i < n+2; i++ {        // two warm-up rounds
		for _, st := range stacks {
			start := time.Now()
			args := ossh.SSHArgs(st.port, knownHosts, "-o", "BatchMode=no", "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no", "true")
			args[len(args)-2] = name + "@127.0.0.1" // SSHArgs logs in as root
			out, errs, code := e.Run([]string{"SSHPASS=" + pw}, "", "sshpass", append([]string{"-e", "ssh"}, args...)...)
			if code != 0 {
				t.Fatalf("%s login: exit %d %s%s", st.name, code, out, errs)
			}
			if i >= 2 {
				st.ssh = append(st.ssh, float64(time.Since(start).Microseconds())/1000)
			}
		}
	}
	// The same stacks under pamtester (pam_authenticate alone, a new process each): the part of
	// a login that differs between them, without sshd's and ssh's own noise.
	for i := 0; i < n+2; i++ {
		for _, st := range stacks {
			start := time.Now()
			out, errs, code := e.Run([]string{"LD_PRELOAD=" + pamWrapper, "PAM_WRAPPER=1", "PAM_WRAPPER_SERVICE_DIR=" + st.dir}, pw+"\n", "pamtester", "sshd", name, "authenticate")
			if code != 0 {
				t.Fatalf("pamtester %s: %d %s%s", st.name, code, out, errs)
			}
			if i >= 2 {
				st.pamt = append(st.pamt, float64(time.Since(start).Microseconds())/1000)
			}
		}
	}
	var native []float64
	p := pam.DefaultParams
	for i := 0; i < n; i++ {
		start := time.Now()
		argon2.IDKey([]byte(pw), []byte("0123456789abcdef"), p.Time, p.Memory, uint8(p.Threads), 32)
		native = append(native, float64(time.Since(start).Microseconds())/1000)
	}
	nat := median(native)
	t.Logf("%d runs each; pam_unix hash %s… (%s); native Argon2id (m=%d KiB, t=%d, p=%d) median %.1f ms", n, hashPrefix, method, p.Memory, p.Time, p.Threads, nat)
	for _, m := range []struct {
		what string
		v    func(*stack) []float64
	}{{"ssh login (new connection)", func(s *stack) []float64 { return s.ssh }}, {"pamtester authenticate", func(s *stack) []float64 { return s.pamt }}} {
		permit, unix, pal := median(m.v(stacks[0])), median(m.v(stacks[1])), median(m.v(stacks[2]))
		t.Logf("%s medians: pam_permit %.1f ms, pam_unix %.1f ms, pam_palisade %.1f ms; palisade − unix = %.1f ms; palisade − unix − native Argon2id = %.1f ms; palisade − permit − native Argon2id = %.1f ms; unix − permit = %.1f ms",
			m.what, permit, unix, pal, pal-unix, pal-unix-nat, pal-permit-nat, unix-permit)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
