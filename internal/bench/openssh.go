package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/palisade-project/palisade/integrations/pam"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// pamWrapperLib is libpam_wrapper (Debian libpam-wrapper): preloaded into sshd it makes libpam
// read the service files of PAM_WRAPPER_SERVICE_DIR, so the benchmark never touches /etc/pam.d.
const pamWrapperLib = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so"

// benchOpenSSH times password logins with the real OpenSSH (docs/ssh.md): sshpass + ssh, a new
// connection each, against two sshd with UsePAM yes, one whose PAM stack is pam_permit (no
// password check: the baseline) and one with pam_palisade checking in the wasm PAL
// (pam.DefaultParams), alternating so both see the same load; the native Argon2id time with
// the same parameters is measured in the same run. It needs root, sshd, ssh, sshpass,
// ssh-keygen, make, a C compiler, libpam0g-dev, libpam-wrapper and the source tree (for
// pam_palisade.so); without them it records why it did not run.
func benchOpenSSH(ctx context.Context, d *apps.Daemon, cfg Config, p *progress, r *benchReport) error {
	if why := openSSHMissing(); why != "" {
		r.Notes = append(r.Notes, "OpenSSH logins not measured: "+why)
		return nil
	}
	root, err := apps.SourceRoot()
	if err != nil {
		r.Notes = append(r.Notes, "OpenSSH logins not measured: "+err.Error())
		return nil
	}
	dir, err := os.MkdirTemp("", "palisade-bench-openssh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p.note("SSH: building pam_palisade.so")
	if out, err := exec.CommandContext(ctx, "make", "-C", filepath.Join(root, "integrations", "pam", "module"), "BUILD="+dir).CombinedOutput(); err != nil {
		return fmt.Errorf("make pam_palisade.so: %v\n%s", err, out)
	}
	const user, pw = "root", "correct horse battery staple"
	c, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	st := pam.State{Dir: filepath.Join(dir, "state")}
	k, err := st.Ensure(ctx, c, nil, "wasm")
	if err != nil {
		return err
	}
	db, err := k.Enrol(ctx, nil, user, []byte(pw), pam.DefaultParams, 1<<20)
	if err != nil {
		return err
	}
	if err := st.Write("passwd.db", db); err != nil {
		return err
	}
	permit := "/lib/x86_64-linux-gnu/security/pam_permit.so"
	rest := "account required " + permit + "\nsession required " + permit + "\n"
	stacks := []struct{ name, auth string }{
		{"pam_permit (no check)", "auth required " + permit},
		{"pam_palisade (wasm PAL)", fmt.Sprintf("auth required %s socket=%s dir=%s daemon_uid=%d nodelay",
			filepath.Join(dir, "pam_palisade.so"), filepath.Join(d.Dir, "run", "lean.sock"), st.Dir, os.Getuid())},
	}
	hostKey := filepath.Join(dir, "host_key")
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		return fmt.Errorf("ssh-keygen: %v\n%s", err, out)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // sshd's privilege-separation directory
		return err
	}
	type target struct {
		name  string
		port  int
		times []float64
	}
	var targets []*target
	var known strings.Builder
	for i, s := range stacks {
		svc := filepath.Join(dir, fmt.Sprintf("pam.d-%d", i))
		if err := os.MkdirAll(svc, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(svc, "sshd"), []byte(s.auth+"\n"+rest), 0o644); err != nil {
			return err
		}
		port, stop, err := startBenchSSHD(ctx, dir, hostKey, svc)
		if err != nil {
			return err
		}
		defer stop()
		targets = append(targets, &target{name: s.name, port: port})
		fmt.Fprintf(&known, "[127.0.0.1]:%d %s\n", port, strings.Join(strings.Fields(string(hostPub))[:2], " "))
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(known.String()), 0o600); err != nil {
		return err
	}
	p.note("SSH: OpenSSH logins")
	warm := max(cfg.SSHLogins/10, 1)
	for i := 0; i < cfg.SSHLogins+warm; i++ {
		for _, t := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cmd := exec.CommandContext(ctx, "sshpass", "-e", "ssh", "-F", "/dev/null", "-p", fmt.Sprint(t.port),
				"-o", "UserKnownHostsFile="+knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
				"-o", "StrictHostKeyChecking=yes", "-o", "PreferredAuthentications=password",
				"-o", "PubkeyAuthentication=no", "-o", "LogLevel=ERROR", user+"@127.0.0.1", "true")
			cmd.Env = append(os.Environ(), "SSHPASS="+pw)
			t0 := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s login: %v\n%s", t.name, err, out)
			}
			if i >= warm {
				t.times = append(t.times, float64(time.Since(t0).Microseconds())/1e3)
			}
		}
	}
	var native []float64
	dp := pam.DefaultParams
	for i := 0; i < cfg.SSHLogins; i++ {
		t0 := time.Now()
		argon2.IDKey([]byte(pw), []byte("0123456789abcdef"), dp.Time, dp.Memory, uint8(dp.Threads), 32)
		native = append(native, float64(time.Since(t0).Microseconds())/1e3)
	}
	for _, t := range targets {
		r.OpenSSH = append(r.OpenSSH, sshResult{Mode: t.name, Logins: len(t.times), MedianMs: median(t.times), P90Ms: quantile(t.times, 0.9)})
	}
	r.OpenSSHNativeArgon2Ms = median(native)
	p.step("SSH: OpenSSH")
	return nil
}

// openSSHMissing names what the OpenSSH measurement lacks on this machine, or returns "".
func openSSHMissing() string {
	if os.Geteuid() != 0 {
		return "sshd needs root"
	}
	for _, tool := range []string{"/usr/sbin/sshd", "ssh", "sshpass", "ssh-keygen", "make", "cc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (scripts/setup.sh)"
		}
	}
	for _, f := range []string{pamWrapperLib, "/usr/include/security/pam_modules.h"} {
		if _, err := os.Stat(f); err != nil {
			return f + " is missing (scripts/setup.sh: libpam-wrapper, libpam0g-dev)"
		}
	}
	return ""
}

// startBenchSSHD starts sshd in the foreground on a free loopback port with UsePAM yes and
// password authentication, its PAM stack read from svcDir through pam_wrapper.
func startBenchSSHD(ctx context.Context, dir, hostKey, svcDir string) (port int, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, fmt.Sprintf("sshd_config.%d", port))
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nPidFile none\nHostKey %s\n"+
		"UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\nPermitRootLogin yes\n", port, hostKey)), 0o600); err != nil {
		return 0, nil, err
	}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", conf)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+pamWrapperLib, "PAM_WRAPPER=1", "PAM_WRAPPER_SERVICE_DIR="+svcDir)
	stderr := &strings.Builder{}
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return stderr.Write(b)
	})
	logs := func() string {
		mu.Lock()
		defer mu.Unlock()
		return stderr.String()
	}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return port, stop, nil
		}
		select {
		case err := <-exited:
			exited <- err
			return 0, nil, fmt.Errorf("sshd exited: %v\n%s", err, logs())
		case <-ctx.Done():
			stop()
			return 0, nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return 0, nil, errors.New("sshd did not listen within 10 s\n" + logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
