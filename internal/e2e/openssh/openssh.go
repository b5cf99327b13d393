// Package openssh runs the real OpenSSH programs for the OpenSSH integrations' tests
// (integrations/internal/ossh wraps it for *testing.T) and for `palisade bench`'s SSH section:
// sshd (openssh-server) in the foreground on a loopback port with its own sshd_config (the
// system's sshd service is never touched), password logins with ssh driven by sshpass (the
// password in the environment, never in argv), and temporary system users for pam_unix.
package openssh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/palisade-project/palisade/internal/proctest"
)

// SSHDPath is where Debian's openssh-server installs sshd.
const SSHDPath = "/usr/sbin/sshd"

// PAMWrapper is libpam_wrapper (Debian libpam-wrapper): preloaded into a program, it makes
// libpam read the service files of PAM_WRAPPER_SERVICE_DIR, so nothing touches /etc/pam.d.
const PAMWrapper = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so"

// PAMWrapperEnv is the environment that makes libpam read its service files from svcDir.
func PAMWrapperEnv(svcDir string) []string {
	return []string{"LD_PRELOAD=" + PAMWrapper, "PAM_WRAPPER=1", "PAM_WRAPPER_SERVICE_DIR=" + svcDir}
}

// SSHD is a running sshd.
type SSHD struct {
	Port int
	Cmd  *exec.Cmd
	Log  *proctest.SyncBuffer // sshd's stderr (-e)
	// Exited is closed when sshd has exited; Err is then its exit error.
	Exited chan struct{}
	Err    error
}

// StartSSHD writes an sshd_config into dir (Port, ListenAddress 127.0.0.1 and PidFile none,
// then config), checks it with sshd -t, starts sshd -D -e with the environment plus env, and
// waits until it accepts connections (10 s at most). It needs root. The caller stops it.
func StartSSHD(ctx context.Context, dir string, env []string, config string) (*SSHD, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sshd needs root")
	}
	// sshd refuses to start without its privilege-separation directory, which Debian's
	// service unit makes at boot (RuntimeDirectory=sshd).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	port, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("sshd_config.%d", port))
	config = fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nPidFile none\n", port) + config
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, SSHDPath, "-t", "-f", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sshd -t: %v\n%s\n%s", err, out, config)
	}
	s := &SSHD{Port: port, Log: &proctest.SyncBuffer{}, Exited: make(chan struct{})}
	s.Cmd = exec.Command(SSHDPath, "-D", "-e", "-f", path)
	s.Cmd.Env = append(os.Environ(), env...)
	s.Cmd.Stdout, s.Cmd.Stderr = s.Log, s.Log
	// A root sshd must not outlive its starter: if the caller dies without Stop (SIGKILL, a
	// crash), the kernel kills sshd (Pdeathsig). Setpgid keeps the terminal's Ctrl-C for the
	// caller, which stops sshd in order.
	s.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked sshd exits, not the process
		// (golang/go#27505): the fork happens on this locked thread, which lives until sshd
		// has exited, so no runtime thread exit kills sshd early.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := s.Cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.Err = s.Cmd.Wait()
		close(s.Exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.Exited:
			return nil, fmt.Errorf("sshd exited: %v\n%s", s.Err, s.Log.String())
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("sshd did not listen within 10 s: %v\n%s", err, s.Log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends SIGTERM, then SIGKILL after 10 s, and waits for sshd to exit.
func (s *SSHD) Stop() {
	select {
	case <-s.Exited:
		return
	default:
	}
	s.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.Exited:
	case <-time.After(10 * time.Second):
		s.Cmd.Process.Kill()
		<-s.Exited
	}
}

// HostKey makes an ed25519 host key at path (ssh-keygen) and returns the known_hosts line
// for 127.0.0.1:port.
func HostKey(ctx context.Context, path string) (pub string, err error) {
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ssh-keygen: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path + ".pub")
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return "", fmt.Errorf("ssh-keygen wrote %q", b)
	}
	return f[0] + " " + f[1], nil
}

// KnownHostsLine is the known_hosts line of pub (as HostKey returns it) at 127.0.0.1:port.
func KnownHostsLine(port int, pub string) string {
	return fmt.Sprintf("[127.0.0.1]:%d %s\n", port, pub)
}

// SSHArgs are ssh's arguments for USER@127.0.0.1:port with no user configuration, the
// known_hosts file given (checked strictly), then opts and the remote command last.
func SSHArgs(port int, knownHosts, user string, optsAndCommand ...string) []string {
	args := []string{"-F", "/dev/null", "-p", fmt.Sprint(port),
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"}
	n := len(optsAndCommand)
	args = append(args, optsAndCommand[:n-1]...)
	return append(args, user+"@127.0.0.1", optsAndCommand[n-1])
}

// PasswordLogin logs in to 127.0.0.1:port as user with OpenSSH's ssh driven by sshpass (the
// password in SSHPASS, never in argv; one password prompt, no public keys), runs command and
// returns its standard output; a refused login or a failed command is an error that quotes
// ssh's standard error.
func PasswordLogin(ctx context.Context, port int, knownHosts, user, password, command string) (string, error) {
	args := SSHArgs(port, knownHosts, user, "-o", "BatchMode=no", "-o", "PreferredAuthentications=password",
		"-o", "NumberOfPasswordPrompts=1", "-o", "PubkeyAuthentication=no", command)
	cmd := exec.CommandContext(ctx, "sshpass", append([]string{"-e", "ssh"}, args...)...)
	cmd.Env = append(os.Environ(), "SSHPASS="+password)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ssh %s@127.0.0.1:%d: %w: %s", user, port, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// User is a temporary system user (TempUser).
type User struct {
	Name string
	// Hash is the method and parameters of its /etc/shadow hash, without salt or hash:
	// "$y$j9T$" (yescrypt), "$6$" (SHA-512 crypt).
	Hash string
}

// markerFormat is the comment (GECOS field) of every temporary user: it names the process
// that created the user, so that removal touches only users this process created, and a sweep
// only users whose creator has died (SweepTempUsers). No comma: GECOS splits on commas.
const markerFormat = "palisade temporary user of pid %d (removed by its creator)"

// Marker is the comment TempUser gives the users the process pid creates.
func Marker(pid int) string { return fmt.Sprintf(markerFormat, pid) }

// markerPID is the creator's pid of a temporary user's comment, false if gecos is not exactly
// a Marker.
func markerPID(gecos string) (int, bool) {
	var pid int
	if n, err := fmt.Sscanf(gecos, markerFormat, &pid); n != 1 || err != nil || pid <= 0 || Marker(pid) != gecos {
		return 0, false
	}
	return pid, true
}

// PasswdEntry is the name and comment (GECOS) of one /etc/passwd line.
type PasswdEntry struct{ Name, Comment string }

// ParsePasswd returns the entries of an /etc/passwd file (name:password:uid:gid:gecos:home:
// shell); lines without the 7 fields (blank, NIS "+" lines, damage) are skipped.
func ParsePasswd(data string) []PasswdEntry {
	var out []PasswdEntry
	for _, line := range strings.Split(data, "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] == "" {
			continue
		}
		out = append(out, PasswdEntry{Name: f[0], Comment: f[4]})
	}
	return out
}

// passwdEntry looks name up in /etc/passwd, where useradd writes (not NSS: a temporary user is
// always a local one).
func passwdEntry(name string) (PasswdEntry, bool, error) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return PasswdEntry{}, false, err
	}
	for _, e := range ParsePasswd(string(b)) {
		if e.Name == name {
			return e, true, nil
		}
	}
	return PasswdEntry{}, false, nil
}

// Leftovers are the users of passwd (an /etc/passwd file) whose name starts with prefix AND
// whose comment is a Marker of a process for which alive is false: temporary users a process
// created and did not remove (it was killed, or crashed). A user lacking the marker is never
// one, whatever its name.
func Leftovers(passwd, prefix string, alive func(pid int) bool) []string {
	var out []string
	for _, e := range ParsePasswd(passwd) {
		if !strings.HasPrefix(e.Name, prefix) {
			continue
		}
		if pid, ok := markerPID(e.Comment); ok && !alive(pid) {
			out = append(out, e.Name)
		}
	}
	return out
}

// processAlive tells whether pid names a process (a zombie counts as gone: it will not remove
// anything any more).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// SweepTempUsers removes the temporary users whose name starts with prefix that a process
// that has since died left behind (Leftovers), and returns their names. Users of a live
// process (another run going on) and users lacking the marker are left alone. prefix must be
// at least 4 characters. It needs root.
func SweepTempUsers(prefix string) ([]string, error) {
	if len(prefix) < 4 {
		return nil, fmt.Errorf("temporary user prefix %q: at least 4 characters", prefix)
	}
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range Leftovers(string(b), prefix, processAlive) {
		// removeMarked checks the marker again just before userdel.
		if err := removeMarked(name, func(c string) bool { pid, ok := markerPID(c); return ok && !processAlive(pid) }); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// removeMarked deletes the user name if its /etc/passwd comment satisfies ours, and checks it
// is gone; a user that does not exist is not an error, one whose comment fails ours is (and is
// not touched).
func removeMarked(name string, ours func(comment string) bool) error {
	e, ok, err := passwdEntry(name)
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	if !ours(e.Comment) {
		return fmt.Errorf("user %s: comment %q is not the temporary-user marker of its creator: not removed", name, e.Comment)
	}
	// -f: an sshd session may still be closing. Not ctx: removal must happen even when the run
	// was cancelled.
	if out, err := exec.Command("userdel", "-f", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "does not exist") {
		return fmt.Errorf("userdel %s: %v %s", name, err, out)
	}
	if _, ok, err := passwdEntry(name); err != nil || ok {
		return fmt.Errorf("temporary user %s still exists after userdel (%v)", name, err)
	}
	return nil
}

// useraddNameInUse is useradd's exit status for a user or group name already in use
// (useradd(8)).
const useraddNameInUse = 9

// TempUser creates a system user whose name is prefix and 10 random hex digits (no home,
// shell /bin/sh, comment Marker(os.Getpid())) with password pw, hashed by chpasswd
// --crypt-method method (YESCRYPT, SHA512, ...; the password on stdin, never in argv). The
// caller must call the returned remove, which deletes the user, only if it still carries this
// process's marker, and checks it is gone; on error the user is already removed. It needs root
// and useradd, chpasswd and userdel (Debian's passwd package).
func TempUser(ctx context.Context, prefix, pw, method string) (u User, remove func() error, err error) {
	var r [5]byte
	if _, err := rand.Read(r[:]); err != nil {
		return User{}, nil, err
	}
	return tempUser(ctx, prefix+hex.EncodeToString(r[:]), pw, method)
}

// tempUser is TempUser for the user name.
func tempUser(ctx context.Context, name, pw, method string) (u User, remove func() error, err error) {
	if os.Geteuid() != 0 {
		return User{}, nil, errors.New("creating a system user needs root")
	}
	for _, tool := range []string{"useradd", "chpasswd", "userdel", "getent"} {
		if _, err := exec.LookPath(tool); err != nil {
			return User{}, nil, fmt.Errorf("%s is not installed", tool)
		}
	}
	u.Name = name
	marker := Marker(os.Getpid())
	remove = func() error { return removeMarked(u.Name, func(c string) bool { return c == marker }) }
	fail := func(err error) (User, func() error, error) {
		return User{}, nil, errors.Join(err, remove())
	}
	if out, err := exec.CommandContext(ctx, "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
		"--shell", "/bin/sh", "--comment", marker, u.Name).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		inUse := errors.As(err, &ee) && ee.ExitCode() == useraddNameInUse
		err = fmt.Errorf("useradd %s: %v %s", u.Name, err, out)
		if inUse {
			// Someone else's user (or group): never ours to remove.
			return User{}, nil, err
		}
		// useradd may have written part of the user before failing: remove removes it only if
		// it carries this process's marker.
		return fail(err)
	}
	cmd := exec.CommandContext(ctx, "chpasswd", "--crypt-method", method)
	cmd.Stdin = strings.NewReader(u.Name + ":" + pw + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("chpasswd --crypt-method %s: %v %s", method, err, out))
	}
	shadow, err := exec.CommandContext(ctx, "getent", "shadow", u.Name).Output()
	if err != nil {
		return fail(fmt.Errorf("getent shadow %s: %v", u.Name, err))
	}
	if u.Hash, err = HashMethod(string(shadow)); err != nil {
		return fail(err)
	}
	return u, remove, nil
}

// RandomPassword is a password for this run's temporary users: 128 bits from crypto/rand,
// base64url (22 characters, no ':' for chpasswd).
func RandomPassword() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashMethod returns the method and parameters of the password hash in an /etc/shadow line
// ("$id$salt$hash" gives "$id$", "$id$params$salt$hash" gives "$id$params$"), never the salt
// or the hash.
func HashMethod(shadowLine string) (string, error) {
	f := strings.Split(shadowLine, ":")
	if len(f) < 2 || !strings.HasPrefix(f[1], "$") {
		return "", errors.New("shadow entry without a crypt(3) hash")
	}
	p := strings.Split(f[1], "$")
	switch len(p) {
	case 4: // "", id, salt, hash
		return "$" + p[1] + "$", nil
	case 5: // "", id, params, salt, hash
		return "$" + p[1] + "$" + p[2] + "$", nil
	}
	return "", fmt.Errorf("shadow hash with %d $-separated fields, want 3 or 4", len(p)-1)
}
