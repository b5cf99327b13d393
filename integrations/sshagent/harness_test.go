package sshagent_test

// The tests run the real programs: palisaded and the palisade CLI (built once per test
// binary), OpenSSH's ssh, ssh-add, ssh-agent and sshd (openssh-server, started by the test on
// a loopback port with its own sshd_config; the system's sshd service is never touched).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

var (
	buildOnce sync.Once
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// bins builds palisaded and palisade once.
func bins(t testing.TB) (daemon, cli string) {
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

// needTools skips the test if an OpenSSH program it drives is missing (scripts/setup.sh
// installs them), or if it cannot run sshd as root.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh)", tool)
		}
	}
}

// syncBuffer is an io.Writer for a child's stderr read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a child process the test stops at cleanup.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error
}

func start(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.stderr.String())
		}
	})
	return p
}

// stop sends SIGTERM, then SIGKILL after 10 s.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// env is a test's world: a palisaded, the CLI, a work directory.
type env struct {
	t      *testing.T
	dir    string
	socket string
	cli    string
	daemon *proc
}

// newEnv starts palisaded (development root of trust) in a temporary directory.
func newEnv(t *testing.T) *env {
	t.Helper()
	bin, cli := bins(t)
	dir := t.TempDir()
	e := &env{t: t, dir: dir, socket: filepath.Join(dir, "run", "palisade.sock"), cli: cli}
	e.startDaemon(bin)
	return e
}

func (e *env) startDaemon(bin string) {
	t := e.t
	cfg := map[string]any{
		"state_dir": filepath.Join(e.dir, "state"), "socket": e.socket, "rot": "none",
		"log_level": "debug", "shutdown_timeout": "5s", "engines": []string{"wasm"},
	}
	raw, _ := json.Marshal(cfg)
	path := filepath.Join(e.dir, "palisaded.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	e.daemon = start(t, "palisaded", exec.Command(bin, "--config", path))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := client.Dial(context.Background(), e.socket)
		if err == nil {
			_, err = c.Health(context.Background())
			c.Close()
			if err == nil {
				return
			}
		}
		select {
		case <-e.daemon.exited:
			t.Fatalf("palisaded exited at start: %v\n%s", e.daemon.err, e.daemon.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("palisaded did not come up: %v\n%s", err, e.daemon.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run runs a program with the test's environment plus extra, and returns its stdout, stderr
// and exit status; a program that cannot start fails the test.
func (e *env) run(extra []string, stdin string, name string, args ...string) (string, string, int) {
	e.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), append([]string{"PALISADE_SOCKET=" + e.socket}, extra...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), errb.String(), code
}

// palisade runs the CLI and fails the test unless it exits 0.
func (e *env) palisade(args ...string) string {
	e.t.Helper()
	out, errs, code := e.run(nil, "", e.cli, args...)
	if code != 0 {
		e.t.Fatalf("palisade %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

// agent starts `palisade ssh-agent` with args on a socket in the work directory.
func (e *env) agent(name string, args ...string) (sock string, p *proc) {
	e.t.Helper()
	sock = filepath.Join(e.dir, name+".sock")
	cmd := exec.Command(e.cli, append([]string{"ssh-agent", "-a", sock, "--socket", e.socket, "--log-level", "debug"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	p = start(e.t, "palisade ssh-agent "+name, cmd)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if want := "SSH_AUTH_SOCK=" + sock + "; export SSH_AUTH_SOCK;\n"; err != nil || line != want {
		p.stop()
		e.t.Fatalf("ssh-agent printed %q (%v), want %q\n%s", line, err, want, p.stderr.String())
	}
	return sock, p
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// sshd starts OpenSSH's sshd in the foreground (-D -e) with config (Port and ListenAddress
// are added) and waits until it accepts connections. It needs root.
func (e *env) sshd(config string) (port int) {
	e.t.Helper()
	if os.Geteuid() != 0 {
		e.t.Skip("sshd needs root")
	}
	// sshd refuses to start without its privilege-separation directory, which Debian's
	// service unit makes at boot (RuntimeDirectory=sshd).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		e.t.Fatal(err)
	}
	port = freePort(e.t)
	path := filepath.Join(e.dir, fmt.Sprintf("sshd_config.%d", port))
	config = fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nPidFile none\n", port) + config
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if out, errs, code := e.run(nil, "", "/usr/sbin/sshd", "-t", "-f", path); code != 0 {
		e.t.Fatalf("sshd -t: %d\n%s%s\n%s", code, out, errs, config)
	}
	p := start(e.t, "sshd", exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", path))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return port
		}
		select {
		case <-p.exited:
			e.t.Fatalf("sshd exited: %v\n%s", p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("sshd did not listen: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ssh runs OpenSSH's ssh to root@127.0.0.1:port with no user configuration, the known_hosts
// file given and the extra options, and returns its output and exit status.
func (e *env) ssh(port int, knownHosts string, extraEnv []string, opts []string, command string) (string, string, int) {
	e.t.Helper()
	args := []string{"-F", "/dev/null", "-p", fmt.Sprint(port),
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
		"-o", "LogLevel=ERROR"}
	args = append(args, opts...)
	args = append(args, "root@127.0.0.1", command)
	return e.run(extraEnv, "", "ssh", args...)
}
