package main

// The end-to-end tests run real palisaded processes (built once per test binary) and drive
// them through the palisade CLI and the client SDK. The PAL is testdata/testpal.c, compiled
// with clang for wasm32.

import (
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

	"github.com/palisade-project/palisade/internal/proctest"

	"github.com/palisade-project/palisade/client"
)

var (
	buildOnce sync.Once
	buildErr  error
	binDir    string // holds palisaded, palisade and testpal.wasm; readable by every uid
)

func TestMain(m *testing.M) {
	if path := os.Getenv("PALISADE_TEST_ECHO_SOCKET"); path != "" {
		echoServer(path) // BenchmarkSocketRoundTrip's other process
		return
	}
	code := m.Run()
	if binDir != "" && os.Getenv("PALISADE_E2E_BIN") == "" { // the caller's binaries stay
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// artifacts builds the binaries and the test PAL once per test binary.
func artifacts(t testing.TB) (daemon, cli, pal string) {
	t.Helper()
	buildOnce.Do(func() {
		// Binaries built beforehand, for a run where building here is too slow (the kvm
		// engine's tests under emulation: internal/engine/kvm/testdata/qemu/run-tests.sh).
		if dir := os.Getenv("PALISADE_E2E_BIN"); dir != "" {
			binDir = dir
			return
		}
		dir, err := os.MkdirTemp("", "palisaded-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		// Other uids run the CLI and read the PAL from here.
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		for _, c := range [][]string{
			{"go", "build", "-o", filepath.Join(dir, "palisaded"), "."},
			{"go", "build", "-o", filepath.Join(dir, "palisade"), "../palisade"},
			{"clang", "--target=wasm32", "-O2", "-nostdlib", "-fno-builtin", "-Wl,--no-entry",
				"-o", filepath.Join(dir, "testpal.wasm"), "testdata/testpal.c"},
		} {
			out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
				return
			}
		}
		os.Chmod(filepath.Join(dir, "testpal.wasm"), 0o644)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "palisaded"), filepath.Join(binDir, "palisade"), filepath.Join(binDir, "testpal.wasm")
}

func testPAL(t testing.TB) []byte {
	_, _, p := artifacts(t)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// daemon is a running palisaded.
type daemon struct {
	t       testing.TB
	dir     string // root of its files: state/, run/, config.json
	socket  string
	metrics string // host:port, if enabled
	cmd     *exec.Cmd
	stderr  *proctest.SyncBuffer
	exited  chan struct{}
	exitErr error
	cfg     Config
}

// newDaemonDir makes a directory for a daemon's files that other uids can traverse.
func newDaemonDir(t testing.TB) string {
	dir := t.TempDir()
	// t.TempDir makes 0700 directories; the two-uid test needs the socket reachable.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startDaemon starts palisaded with cfg (state dir, socket and rot filled in) in dir.
func startDaemon(t testing.TB, dir string, cfg Config, withMetrics bool) *daemon {
	t.Helper()
	bin, _, _ := artifacts(t)
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Socket = filepath.Join(dir, "run", "palisade.sock")
	if cfg.Rot == "" {
		cfg.Rot = "none"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "debug"
	}
	if cfg.ShutdownTimeout == "" {
		cfg.ShutdownTimeout = "5s"
	}
	d := &daemon{t: t, dir: dir, socket: cfg.Socket, stderr: &proctest.SyncBuffer{}, exited: make(chan struct{}), cfg: cfg}
	if withMetrics {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		d.metrics = l.Addr().String()
		l.Close()
		cfg.Metrics = d.metrics
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, "--config", cfgPath)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.exitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("palisaded log:\n%s", d.stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := client.Dial(context.Background(), d.socket)
		if err == nil {
			_, err = c.Health(context.Background())
			c.Close()
			if err == nil {
				return d
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("palisaded exited at start: %v\n%s", d.exitErr, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("palisaded did not come up: %v\n%s", err, d.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		d.t.Fatalf("palisaded did not exit 30s after SIGTERM\n%s", d.stderr.String())
	}
	if d.exitErr != nil {
		d.t.Fatalf("palisaded exited with %v\n%s", d.exitErr, d.stderr.String())
	}
}

func (d *daemon) dial() *client.Client {
	d.t.Helper()
	c, err := client.Dial(context.Background(), d.socket)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// auditEvents reads the daemon's audit log.
func (d *daemon) auditEvents() []map[string]any {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, "state", "audit.log"))
	if err != nil {
		d.t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var e map[string]any
		if err := json.Unmarshal(line, &e); err != nil {
			d.t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// cliResult is the outcome of one palisade CLI run.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs the palisade CLI against d, as uid (gid the same) when uid >= 0.
func (d *daemon) runCLI(uid int, stdin []byte, args ...string) cliResult {
	d.t.Helper()
	_, cli, _ := artifacts(d.t)
	cmd := exec.Command(cli, args...)
	cmd.Env = append(os.Environ(), "PALISADE_SOCKET="+d.socket)
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("palisade %v: %v", args, err)
	}
	return cliResult{out.String(), errb.String(), code}
}
