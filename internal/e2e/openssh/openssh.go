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
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
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

// SyncBuffer is an io.Writer for a child's output read while it runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// SSHD is a running sshd.
type SSHD struct {
	Port int
	Cmd  *exec.Cmd
	Log  *SyncBuffer // sshd's stderr (-e)
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
	port, err := FreePort()
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
	s := &SSHD{Port: port, Log: &SyncBuffer{}, Exited: make(chan struct{})}
	s.Cmd = exec.Command(SSHDPath, "-D", "-e", "-f", path)
	s.Cmd.Env = append(os.Environ(), env...)
	s.Cmd.Stdout, s.Cmd.Stderr = s.Log, s.Log
	if err := s.Cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		s.Err = s.Cmd.Wait()
		close(s.Exited)
	}()
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

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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

// TempUser creates a system user whose name is prefix and 10 random hex digits (no home,
// shell /bin/sh) with password pw, hashed by chpasswd --crypt-method method (YESCRYPT,
// SHA512, ...; the password on stdin). The caller must call the returned remove, which
// deletes the user and checks it is gone; on error the user is already removed. It needs
// root and useradd, chpasswd and userdel (Debian's passwd package).
func TempUser(ctx context.Context, prefix, pw, method string) (u User, remove func() error, err error) {
	if os.Geteuid() != 0 {
		return User{}, nil, errors.New("creating a system user needs root")
	}
	for _, tool := range []string{"useradd", "chpasswd", "userdel", "getent"} {
		if _, err := exec.LookPath(tool); err != nil {
			return User{}, nil, fmt.Errorf("%s is not installed", tool)
		}
	}
	var r [5]byte
	if _, err := rand.Read(r[:]); err != nil {
		return User{}, nil, err
	}
	u.Name = prefix + hex.EncodeToString(r[:])
	remove = func() error {
		// Not ctx: removal must happen even when the run was cancelled.
		if out, err := exec.Command("userdel", "-f", u.Name).CombinedOutput(); err != nil && !strings.Contains(string(out), "does not exist") {
			return fmt.Errorf("userdel %s: %v %s", u.Name, err, out)
		}
		if _, err := user.Lookup(u.Name); err == nil {
			return fmt.Errorf("temporary user %s still exists after userdel", u.Name)
		}
		return nil
	}
	fail := func(err error) (User, func() error, error) {
		return User{}, nil, errors.Join(err, remove())
	}
	if out, err := exec.CommandContext(ctx, "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
		"--shell", "/bin/sh", "--comment", "palisade temporary user, removed by its creator", u.Name).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("useradd %s: %v %s", u.Name, err, out))
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
