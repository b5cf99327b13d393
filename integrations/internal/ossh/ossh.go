// Package ossh is the test harness of the OpenSSH integrations (integrations/sshagent,
// integrations/pam). Their tests run the real programs: palisaded and the palisade CLI (built
// once per test binary), OpenSSH's ssh, ssh-add, ssh-agent and sshd (openssh-server, started by
// the test on a loopback port with its own sshd_config through internal/e2e/openssh, which
// `palisade bench` shares; the system's sshd service is never touched), pamtester.
package ossh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/proctest"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/e2e/openssh"
)

var (
	buildOnce sync.Once
	buildErr  error
	binDir    string
)

// Main runs the tests of a package (call it from TestMain) and removes the built binaries.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Bins builds palisaded and palisade once per test binary.
func Bins(t testing.TB) (daemon, cli string) {
	t.Helper()
	buildOnce.Do(func() {
		root, err := apps.SourceRoot()
		if err != nil {
			buildErr = err
			return
		}
		if binDir, err = os.MkdirTemp("", "sshagent-test-"); err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/palisaded", "./cmd/palisade")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "palisaded"), filepath.Join(binDir, "palisade")
}

// NeedTools skips the test if an OpenSSH program it drives is missing (scripts/setup.sh
// installs them), or if it cannot run sshd as root.
func NeedTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh)", tool)
		}
	}
}

// SyncBuffer is an io.Writer for a child's stderr read while it runs.
type SyncBuffer = proctest.SyncBuffer

// Proc is a child process the test stops at cleanup.
type Proc struct {
	Cmd    *exec.Cmd
	Stderr *SyncBuffer
	Exited chan struct{}
	Err    error
}

func Start(t *testing.T, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Stderr: &SyncBuffer{}, Exited: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.Err = cmd.Wait()
		close(p.Exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.Stderr.String())
		}
	})
	return p
}

// Stop sends SIGTERM, then SIGKILL after 10 s.
func (p *Proc) Stop() {
	select {
	case <-p.Exited:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
	case <-time.After(10 * time.Second):
		p.Cmd.Process.Kill()
		<-p.Exited
	}
}

// Env is a test's world: a palisaded, the CLI, a work directory.
type Env struct {
	T      *testing.T
	Dir    string
	Socket string
	CLI    string
	Daemon *Proc
	bin    string
}

// NewEnv starts palisaded (development root of trust) in a temporary directory.
func NewEnv(t *testing.T) *Env {
	t.Helper()
	bin, cli := Bins(t)
	dir := t.TempDir()
	e := &Env{T: t, Dir: dir, Socket: filepath.Join(dir, "run", "palisade.sock"), CLI: cli, bin: bin}
	e.StartDaemon()
	return e
}

// StartDaemon starts palisaded on the environment's state (again, after StopDaemon).
func (e *Env) StartDaemon() {
	t := e.T
	cfg := map[string]any{
		"state_dir": filepath.Join(e.Dir, "state"), "socket": e.Socket, "rot": "none",
		"log_level": "debug", "shutdown_timeout": "5s", "engines": []string{"wasm"},
	}
	raw, _ := json.Marshal(cfg)
	path := filepath.Join(e.Dir, "palisaded.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	e.Daemon = Start(t, "palisaded", exec.Command(e.bin, "--config", path))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := client.Dial(context.Background(), e.Socket)
		if err == nil {
			_, err = c.Health(context.Background())
			c.Close()
			if err == nil {
				return
			}
		}
		select {
		case <-e.Daemon.Exited:
			t.Fatalf("palisaded exited at start: %v\n%s", e.Daemon.Err, e.Daemon.Stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("palisaded did not come up: %v\n%s", err, e.Daemon.Stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Run runs a program with the test's environment plus extra, and returns its stdout, stderr
// and exit status; a program that cannot start fails the test.
func (e *Env) Run(extra []string, stdin string, name string, args ...string) (string, string, int) {
	e.T.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), append([]string{"PALISADE_SOCKET=" + e.Socket}, extra...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.T.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), errb.String(), code
}

// Palisade runs the CLI and fails the test unless it exits 0.
func (e *Env) Palisade(args ...string) string {
	e.T.Helper()
	out, errs, code := e.Run(nil, "", e.CLI, args...)
	if code != 0 {
		e.T.Fatalf("palisade %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

// Agent starts `palisade ssh-agent` with args on a socket in the work directory.
func (e *Env) Agent(name string, args ...string) (sock string, p *Proc) {
	e.T.Helper()
	sock = filepath.Join(e.Dir, name+".sock")
	cmd := exec.Command(e.CLI, append([]string{"ssh-agent", "-a", sock, "--socket", e.Socket, "--log-level", "debug"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.T.Fatal(err)
	}
	p = Start(e.T, "palisade ssh-agent "+name, cmd)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if want := "SSH_AUTH_SOCK=" + sock + "; export SSH_AUTH_SOCK;\n"; err != nil || line != want {
		p.Stop()
		e.T.Fatalf("ssh-agent printed %q (%v), want %q\n%s", line, err, want, p.Stderr.String())
	}
	return sock, p
}

// SSHD starts OpenSSH's sshd in the foreground (-D -e) with config (Port and ListenAddress
// are added) and waits until it accepts connections. It needs root.
func (e *Env) SSHD(config string) (port int) { return e.SSHDWithEnv(nil, config) }

// SSHDWithEnv is SSHD with extra environment variables (pam_wrapper's, for instance). It
// skips the test unless root; sshd is stopped at cleanup.
func (e *Env) SSHDWithEnv(env []string, config string) (port int) {
	e.T.Helper()
	if os.Geteuid() != 0 {
		e.T.Skip("sshd needs root")
	}
	s, err := openssh.StartSSHD(context.Background(), e.Dir, env, config)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() {
		s.Stop()
		if e.T.Failed() {
			e.T.Logf("sshd log:\n%s", s.Log.String())
		}
	})
	return s.Port
}

// SSHArgs are ssh's arguments for root@127.0.0.1:port with no user configuration, the
// known_hosts file given (checked strictly), then opts and the remote command.
func SSHArgs(port int, knownHosts string, optsAndCommand ...string) []string {
	return openssh.SSHArgs(port, knownHosts, "root", optsAndCommand...)
}

// SSH runs OpenSSH's ssh to root@127.0.0.1:port with no user configuration, the known_hosts
// file given and the extra options, and returns its output and exit status.
func (e *Env) SSH(port int, knownHosts string, extraEnv []string, opts []string, command string) (string, string, int) {
	e.T.Helper()
	args := SSHArgs(port, knownHosts, append(append([]string{"-o", "BatchMode=yes"}, opts...), command)...)
	return e.Run(extraEnv, "", "ssh", args...)
}

// StopDaemon stops palisaded with SIGTERM and waits for it.
func (e *Env) StopDaemon() { e.Daemon.Stop() }
