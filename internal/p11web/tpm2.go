package p11web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TPM2Module is tpm2-pkcs11's PKCS#11 module (Debian libtpm2-pkcs11-1).
const TPM2Module = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"

// TPM2Missing names what TPM2 needs and this machine lacks, or is "" when nothing is missing.
func TPM2Missing() string {
	var miss []string
	for _, f := range []string{TPM2Module, "/usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0", "/usr/lib/x86_64-linux-gnu/libtss2-tcti-swtpm.so.0"} {
		if _, err := os.Stat(f); err != nil {
			miss = append(miss, f)
		}
	}
	for _, p := range []string{"swtpm", "tpm2-abrmd", "tpm2_ptool", "dbus-daemon"} {
		if _, err := exec.LookPath(p); err != nil {
			miss = append(miss, p)
		}
	}
	return strings.Join(miss, ", ")
}

// TPM2 is tpm2-pkcs11 on a software TPM: swtpm, a private D-Bus bus and tpm2-abrmd on it, and a
// tpm2-pkcs11 store with a token "bench" (user PIN 1234).
//
// tpm2-abrmd, not swtpm's TCTI straight: without a resource manager the transient objects
// tpm2_ptool loads stay in the TPM's three slots, and addtoken fails with TPM_RC_OBJECT_MEMORY
// (0x902); the resource manager also gives each connection its own context. It is reached over
// D-Bus, so a private session bus (dbus-daemon, open to every uid) stands in for the system one.
type TPM2 struct {
	Env []string // what a process using the module needs (TPM2_PKCS11_*, the bus's address)
	// Nginx is the configuration nginx needs to serve with the module through OpenSSL's
	// pkcs11 engine: one worker and no ssl_engine (NginxOptions says why not). One worker
	// because tpm2-pkcs11 does not survive fork: nginx's master loads the key (C_Initialize,
	// C_Login: a tpm2-abrmd connection and a salted HMAC session), each worker inherits them,
	// libp11's C_Initialize after fork gets CKR_CRYPTOKI_ALREADY_INITIALIZED and its C_Login
	// CKR_USER_ALREADY_LOGGED_IN, so every worker drives the master's one session; the first
	// worker to sign moves the session's nonces on, the other's next command fails its HMAC
	// check (TPM_RC_AUTH_FAIL, 0x98e), which counts towards the TPM's dictionary-attack lockout,
	// and the handshake ends in a TLS internal-error alert.
	Nginx NginxOptions
	procs []*exec.Cmd
	abrmd *exec.Cmd
}

// DaemonPIDs are the processes whose CPU a signature costs besides nginx's: tpm2-abrmd (swtpm
// stands for the TPM chip and is not counted).
func (t *TPM2) DaemonPIDs() []int { return []int{t.abrmd.Process.Pid} }

// StartTPM2 starts swtpm, the bus and tpm2-abrmd in the directory name, makes the store and
// imports keyFile's key (PKCS#8 PEM; alg "rsa-2048" or "ecdsa-p256") labelled "k". The bus
// accepts every uid, and the store belongs to nginx's workers' uid. Stop ends the processes.
func (e *Env) StartTPM2(ctx context.Context, name, keyFile, alg string) (_ *TPM2, err error) {
	dir := e.Path(name)
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o755); err != nil {
		return nil, err
	}
	t := &TPM2{}
	defer func() {
		if err != nil {
			t.Stop()
		}
	}()
	start := func(args ...string) (*exec.Cmd, error) {
		cmd := exec.Command(args[0], args[1:]...)
		log, err := os.Create(filepath.Join(dir, filepath.Base(args[0])+".log"))
		if err != nil {
			return nil, err
		}
		defer log.Close()
		cmd.Stdout, cmd.Stderr, cmd.Env = log, log, t.Env
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		t.procs = append(t.procs, cmd)
		return cmd, nil
	}
	// The swtpm TCTI finds the control channel on the next port, so both must be free.
	port, ctrl, err := freePortPair()
	if err != nil {
		return nil, err
	}
	if _, err := start("swtpm", "socket", "--tpm2", "--server", "type=tcp,bindaddr=127.0.0.1,port="+port,
		"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+ctrl, "--tpmstate", "dir="+dir, "--flags", "not-need-init,startup-clear"); err != nil {
		return nil, err
	}
	if err := waitDial("tcp", "127.0.0.1:"+port); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
		return nil, fmt.Errorf("swtpm: %w\n%s", err, log)
	}
	bus := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "dbus.conf")
	if err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=`+bus+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o644); err != nil {
		return nil, err
	}
	if _, err := start("dbus-daemon", "--config-file="+conf, "--nofork"); err != nil {
		return nil, err
	}
	if err := waitDial("unix", bus); err != nil {
		return nil, fmt.Errorf("dbus-daemon: %w", err)
	}
	if err := os.Chmod(bus, 0o777); err != nil { // nginx's workers connect as nobody
		return nil, err
	}
	store := filepath.Join(dir, "store")
	t.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS=unix:path="+bus, "TPM2_PKCS11_TCTI=tabrmd:bus_type=session",
		"TPM2TOOLS_TCTI=tabrmd:bus_type=session", "TPM2_PKCS11_STORE="+store, "TPM2_PKCS11_LOG_LEVEL=0")
	if t.abrmd, err = start("tpm2-abrmd", "--session", "--allow-root", "--tcti=swtpm:host=127.0.0.1,port="+port); err != nil {
		return nil, err
	}
	ptool := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "tpm2_ptool", args...)
		cmd.Env = t.Env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tpm2_ptool %s: %v\n%s", args[0], err, out)
		}
		return nil
	}
	// tpm2-abrmd takes a moment to claim its name on the bus.
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for ictx.Err() == nil {
		cmd := exec.CommandContext(ictx, "tpm2_getrandom", "4")
		cmd.Env = t.Env
		if err = cmd.Run(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "tpm2-abrmd.log"))
		return nil, fmt.Errorf("tpm2-abrmd does not answer: %v\n%s", err, log)
	}
	if err := ptool("init", "--path="+store); err != nil {
		return nil, err
	}
	kind := map[string]string{"rsa-2048": "rsa", "ecdsa-p256": "ecc"}[alg]
	if err := ptool("addtoken", "--pid=1", "--label=bench", "--userpin=1234", "--sopin=1234", "--path="+store); err != nil {
		return nil, err
	}
	if err := ptool("import", "--label=bench", "--key-label=k", "--userpin=1234", "--privkey="+keyFile, "--algorithm="+kind, "--path="+store); err != nil {
		return nil, err
	}
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", Nobody, Nobody), store).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chown: %v\n%s", err, out)
	}
	sslConf := filepath.Join(dir, "openssl.cnf")
	if err := os.WriteFile(sslConf, []byte(OpenSSLConf(TPM2Module)), 0o644); err != nil {
		return nil, err
	}
	t.Env = []string{"DBUS_SESSION_BUS_ADDRESS=unix:path=" + bus, "TPM2_PKCS11_TCTI=tabrmd:bus_type=session",
		"TPM2_PKCS11_STORE=" + store, "TPM2_PKCS11_LOG_LEVEL=0", "OPENSSL_CONF=" + sslConf}
	t.Nginx = NginxOptions{Workers: 1, NoSSLEngine: true}
	return t, nil
}

// freePortPair is two consecutive loopback TCP ports, both free at the time of the call.
func freePortPair() (port, next string, err error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return strconv.Itoa(p), strconv.Itoa(p + 1), nil
		}
	}
	return "", "", errors.New("no two consecutive free loopback ports in 50 tries")
}

// Stop ends tpm2-abrmd, the bus and swtpm, in that order.
func (t *TPM2) Stop() {
	for i := len(t.procs) - 1; i >= 0; i-- {
		p := t.procs[i]
		p.Process.Kill()
		p.Wait()
	}
	t.procs = nil
}
