package pam_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/examples/sshpass"
	"github.com/palisade-project/palisade/integrations/internal/ossh"
	"github.com/palisade-project/palisade/internal/proctest"
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
	s.writeService(t)
	return s
}

// pamtesterSetup gives a test driving pamtester a real palisaded and the module set up for
// service "palisade-test"; it skips the test when pamtester or libpam-wrapper is missing.
func pamtesterSetup(t *testing.T) (*ossh.Env, *pamSetup) {
	ossh.NeedTools(t, "pamtester")
	if _, err := os.Stat(pamWrapper); err != nil {
		t.Skip("libpam-wrapper not installed (scripts/setup.sh)")
	}
	e := ossh.NewEnv(t)
	return e, newPAMSetup(t, e, "palisade-test")
}

// writeService writes the PAM service file for the current state directory.
func (s *pamSetup) writeService(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.svcDir, s.service), []byte(s.authLine()+"\naccount required /lib/x86_64-linux-gnu/security/pam_permit.so\nsession required /lib/x86_64-linux-gnu/security/pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
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
	e, s := pamtesterSetup(t)
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
	e, s := pamtesterSetup(t)
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

// TestDamagedState: a state directory whose database is damaged makes pam_palisade.so answer
// PAM_AUTHINFO_UNAVAIL with a log line saying what is wrong, and `palisade passwd` refuse with
// the same reason, rather than the module calling every user's password wrong and passwd
// starting a new database over the damaged one (the PAL takes an empty database for a new
// one); once the file is restored, logins work again.
func TestDamagedState(t *testing.T) {
	e, s := pamtesterSetup(t)
	s.passwd(t, "alice", "correct horse")
	dbPath := filepath.Join(s.state, "passwd.db")
	good, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		damage func() error
		passwd []string // the palisade passwd run, refused
		why    string   // in the module's log and passwd's error
	}{
		{"empty database", func() error { return os.WriteFile(dbPath, nil, 0o600) }, []string{"bob"}, "passwd.db is empty"},
		{"truncated database", func() error { return os.WriteFile(dbPath, good[:len(good)/2], 0o600) }, []string{"bob"}, "does not unseal"},
		{"no database", func() error { return os.Remove(dbPath) }, []string{"alice", "--unlock"}, "no password database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.damage(); err != nil {
				t.Fatal(err)
			}
			out, errs, code := e.Run(s.env(), "correct horse\n", "pamtester", "-v", s.service, "alice", "authenticate")
			if code == 0 || !strings.Contains(out+errs, "cannot retrieve authentication info") || !strings.Contains(errs, tc.why) {
				t.Errorf("pamtester: exit %d, want PAM_AUTHINFO_UNAVAIL and a log line with %q:\n%s%s", code, tc.why, out, errs)
			}
			args := append([]string{"passwd", "--dir", s.state}, tc.passwd...)
			if out, errs, code := e.Run(nil, "bobs password\n", e.CLI, args...); code != 1 || !strings.Contains(errs, tc.why) {
				t.Errorf("palisade %v: exit %d, want 1 and %q:\n%s%s", args, code, tc.why, out, errs)
			}
			if err := os.WriteFile(dbPath, good, 0o600); err != nil {
				t.Fatal(err)
			}
			if !s.pamtester(t, "alice", "correct horse") {
				t.Error("alice refused once the database was restored")
			}
		})
	}
}

// TestStuckLogin: with palisaded stopped (SIGSTOP, as a hung daemon), or the state's lock held
// by a stuck process (a palisade passwd waiting on that daemon, or stopped with ^Z), a login
// fails with PAM_AUTHINFO_UNAVAIL once the module's timeout passes, saying why, rather than
// holding pamtester (su, login, sudo) forever; once the cause is gone, the login works.
func TestStuckLogin(t *testing.T) {
	e, s := pamtesterSetup(t)
	s.passwd(t, "alice", "correct horse")
	pid := e.Daemon.Cmd.Process.Pid
	t.Cleanup(func() { proctest.Thaw(pid) })
	const moduleTimeout = 15 * time.Second // CALL_TIMEOUT_MS and LOCK_TIMEOUT_MS in pam_palisade.c
	for _, tc := range []struct {
		name  string
		stick func() (unstick func() error, err error)
		log   string
	}{
		{"palisaded stopped", func() (func() error, error) {
			return func() error { return proctest.Thaw(pid) }, proctest.Freeze(pid)
		}, "no answer from palisaded"},
		{"the state's lock held", func() (func() error, error) {
			d, err := os.Open(s.state)
			if err != nil {
				return nil, err
			}
			return d.Close, syscall.Flock(int(d.Fd()), syscall.LOCK_EX)
		}, "stayed locked for 15 s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unstick, err := tc.stick()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), moduleTimeout+15*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "pamtester", "-v", s.service, "alice", "authenticate")
			cmd.Env = append(os.Environ(), s.env()...)
			cmd.Stdin = strings.NewReader("correct horse\n")
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			if uerr := unstick(); uerr != nil {
				t.Fatal(uerr)
			}
			if ctx.Err() != nil {
				t.Fatalf("pamtester still waiting after %v:\n%s", took, out)
			}
			if err == nil || !strings.Contains(string(out), "cannot retrieve authentication info") || !strings.Contains(string(out), tc.log) {
				t.Errorf("pamtester (%v): %v, want PAM_AUTHINFO_UNAVAIL and a log line with %q:\n%s", took, err, tc.log, out)
			}
			if took < moduleTimeout {
				t.Errorf("pamtester gave up after %v, before the module's timeout of %v", took, moduleTimeout)
			}
			if !s.pamtester(t, "alice", "correct horse") {
				t.Error("alice refused once the cause was gone")
			}
		})
	}
}
