// Package swtpmtest starts a private swtpm (a software TPM 2.0) for one test: a Unix socket in
// the test's temp dir, no TCP port, killed and removed when the test ends.
//
// swtpm serves one connection at a time: while a rot/tpm Root holds its connection, another
// client blocks until the Root is closed.
//
// Tests that need it call Start; when the swtpm binary is absent they are skipped with a reason
// (CI installs the Debian packages swtpm, swtpm-tools and tpm2-tools).
package swtpmtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TPM is one running swtpm.
type TPM struct {
	Dir    string // state directory (also holds the sockets)
	Socket string // the TPM command socket

	// With EK certificates (WithEKCert), the PEM files of the local CA that issued them:
	// RootCAPEM is the self-signed root, IssuerPEM the intermediate that signed the EK cert.
	RootCAPEM, IssuerPEM []byte

	cmd  *exec.Cmd
	done chan error
}

type options struct {
	ekCert bool
	dir    string
}

// Option configures Start.
type Option func(*options)

// WithEKCert manufactures the TPM with swtpm_setup first: an RSA and an ECC endorsement key,
// their certificates (and a platform certificate) in NV, issued by a local CA created in the
// temp dir. Costs about one second.
func WithEKCert() Option { return func(o *options) { o.ekCert = true } }

// WithStateDir starts swtpm on an existing state directory (to restart "the same TPM", as
// after a reboot: PCRs are reset, NV and seeds are kept).
func WithStateDir(dir string) Option { return func(o *options) { o.dir = dir } }

// Device is the device string rot/tpm.Config understands for this instance.
func (s *TPM) Device() string { return "swtpm:" + s.Socket }

// Start starts swtpm and stops it in t.Cleanup.
func Start(t testing.TB, opts ...Option) *TPM {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Skip("swtpm not installed (apt-get install swtpm swtpm-tools): ", err)
	}
	s := &TPM{Dir: o.dir}
	if s.Dir == "" {
		// Not t.TempDir() directly: Unix socket paths are limited to 108 bytes and test
		// temp dirs are long.
		s.Dir = shortTempDir(t)
	}
	if o.ekCert {
		s.manufacture(t)
	}
	s.Socket = filepath.Join(s.Dir, "sock")
	ctrl := filepath.Join(s.Dir, "ctrl")
	os.Remove(s.Socket)
	os.Remove(ctrl)
	var stderr bytes.Buffer
	s.cmd = exec.Command(bin, "socket", "--tpm2",
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+ctrl,
		"--tpmstate", "dir="+s.Dir,
		"--flags", "not-need-init,startup-clear")
	// If the test binary dies without running Cleanup, swtpm dies with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.cmd.Stdout = &stderr
	s.cmd.Stderr = &stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket file exists from bind(); only a successful dial says swtpm listens.
		if c, err := net.Dial("unix", s.Socket); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-s.done:
			t.Fatalf("swtpm exited at start: %v: %s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm socket %s did not appear: %s", s.Socket, stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

// Stop stops the instance now (Cleanup would later); its state directory stays, so a new
// Start WithStateDir(s.Dir) is a reboot of the same TPM.
func (s *TPM) Stop() { s.stop() }

func (s *TPM) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

func shortTempDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// manufacture runs swtpm_setup with a private local CA so nothing outside the temp dir is
// read or written (the system config points at /var/lib/swtpm-localca).
func (s *TPM) manufacture(t testing.TB) {
	t.Helper()
	setup, err := exec.LookPath("swtpm_setup")
	if err != nil {
		t.Skip("swtpm_setup not installed (apt-get install swtpm-tools): ", err)
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		t.Skip("swtpm_localca not installed (apt-get install swtpm-tools): ", err)
	}
	ca := filepath.Join(s.Dir, "ca")
	if err := os.MkdirAll(ca, 0o700); err != nil {
		t.Fatal(err)
	}
	caConf := filepath.Join(s.Dir, "localca.conf")
	caOpts := filepath.Join(s.Dir, "localca.options")
	setupConf := filepath.Join(s.Dir, "setup.conf")
	write := func(path string, lines ...string) {
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(caConf,
		"statedir = "+ca,
		"signingkey = "+filepath.Join(ca, "signkey.pem"),
		"issuercert = "+filepath.Join(ca, "issuercert.pem"),
		"certserial = "+filepath.Join(ca, "certserial"))
	write(caOpts, "--platform-manufacturer Palisade", "--platform-version 2.1", "--platform-model swtpmtest")
	write(setupConf,
		"create_certs_tool = "+localca,
		"create_certs_tool_config = "+caConf,
		"create_certs_tool_options = "+caOpts,
		"active_pcr_banks = sha256")
	cmd := exec.Command(setup, "--tpm2", "--tpmstate", s.Dir, "--config", setupConf,
		"--create-ek-cert", "--create-platform-cert", "--ecc", "--overwrite")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	s.RootCAPEM = readFile(t, filepath.Join(ca, "swtpm-localca-rootca-cert.pem"))
	s.IssuerPEM = readFile(t, filepath.Join(ca, "issuercert.pem"))
}

func readFile(t testing.TB, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("swtpmtest: %v", fmt.Errorf("read %s: %w", path, err))
	}
	return b
}
