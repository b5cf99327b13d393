// Package p11web sets up nginx serving TLS with its private key in a file or behind a PKCS#11
// module (libpalisade-pkcs11.so with a real palisaded, SoftHSM2), and measures it with ab: the
// set-up the web-server section of `palisade bench` needs. The processes are real and local:
// palisaded on a Unix socket in the environment's directory, nginx on loopback ports, with its
// configuration in its own directory (the system's /etc/nginx is not read).
//
// nginx's workers run as nobody (uid Nobody), so Start needs root; the environment's directory
// and its parents are made world-searchable for them.
package p11web

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/palisade-project/palisade/internal/proctest"

	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// Nobody is the uid of nginx's workers.
const Nobody = 65534

// EngineSO is OpenSSL 3's pkcs11 engine (libengine-pkcs11-openssl), through which nginx loads a
// key given as a PKCS#11 URI.
const EngineSO = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"

// SoftHSMModule is SoftHSM2's PKCS#11 module (Debian softhsm2).
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// Missing names what Start needs and this machine lacks, or is "" when nothing is missing.
func Missing() string {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "root (nginx's workers run as nobody)")
	}
	for _, p := range []string{"nginx", "ab", "make", "cc"} {
		if _, err := exec.LookPath(p); err != nil {
			miss = append(miss, p)
		}
	}
	if _, err := os.Stat(EngineSO); err != nil {
		miss = append(miss, "libengine-pkcs11-openssl")
	}
	return strings.Join(miss, ", ")
}

// Env is a running palisaded with the PKCS#11 module built, in Dir.
type Env struct {
	Dir         string
	Bin         string // holds palisaded and palisade
	Module      string // libpalisade-pkcs11.so
	OpenSSLConf string // loads the pkcs11 engine with Module
	Socket      string // palisaded's API socket
	daemon      *exec.Cmd
	stderr      bytes.Buffer
	done        chan struct{}
}

// Start builds the module (its Makefile), palisaded and the palisade CLI into dir, starts
// palisaded with its state in dir and writes an OpenSSL configuration loading the module.
// Close stops palisaded; dir is the caller's.
func Start(ctx context.Context, dir string) (e *Env, err error) {
	root, err := apps.SourceRoot()
	if err != nil {
		return nil, err
	}
	for p := dir; p != "/" && p != "."; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil { // workers as nobody reach the socket and module
			return nil, err
		}
	}
	e = &Env{Dir: dir, Bin: filepath.Join(dir, "bin"), done: make(chan struct{})}
	e.Module = filepath.Join(e.Bin, "build", "libpalisade-pkcs11.so")
	for _, c := range []struct {
		dir  string
		args []string
	}{
		{filepath.Join(root, "integrations", "pkcs11"), []string{"make", "-s", "BUILD=" + filepath.Join(e.Bin, "build")}},
		{root, []string{"go", "build", "-o", e.Bin + "/", "./cmd/palisaded", "./cmd/palisade"}},
	} {
		cmd := exec.CommandContext(ctx, c.args[0], c.args[1:]...)
		cmd.Dir = c.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
	}
	e.Socket = filepath.Join(dir, "run", "palisade.sock")
	raw, _ := json.Marshal(map[string]any{
		"state_dir": filepath.Join(dir, "state"), "socket": e.Socket, "rot": "none",
		"socket_mode": "0666", "log_level": "warn", "shutdown_timeout": "5s",
	})
	cfgPath := filepath.Join(dir, "palisaded.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		return nil, err
	}
	e.daemon = exec.Command(filepath.Join(e.Bin, "palisaded"), "--config", cfgPath)
	e.daemon.Stderr = &e.stderr
	if err := e.daemon.Start(); err != nil {
		return nil, err
	}
	go func() { e.daemon.Wait(); close(e.done) }()
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if err := waitDial("unix", filepath.Join(dir, "run", "lean.sock")); err != nil {
		return nil, fmt.Errorf("palisaded: %v\n%s", err, e.stderr.String())
	}
	e.OpenSSLConf = filepath.Join(dir, "openssl.cnf")
	if err := os.WriteFile(e.OpenSSLConf, []byte(OpenSSLConf(e.Module)), 0o644); err != nil {
		return nil, err
	}
	return e, nil
}

// OpenSSLConf is an OpenSSL configuration loading OpenSSL's pkcs11 engine with module (and an
// empty [req] distinguished name, so that openssl req takes -subj alone).
func OpenSSLConf(module string) string {
	return fmt.Sprintf(`openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = %s
MODULE_PATH = %s
init = 1
[req]
distinguished_name = dn
[dn]
`, EngineSO, module)
}

// DaemonPID is palisaded's process id (its CPU time is part of a request's cost).
func (e *Env) DaemonPID() int { return e.daemon.Process.Pid }

// Close stops palisaded.
func (e *Env) Close() {
	if e.daemon == nil || e.daemon.Process == nil {
		return
	}
	e.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		e.daemon.Process.Kill()
		<-e.done
	}
}

// Path is name in the environment's directory.
func (e *Env) Path(name string) string { return filepath.Join(e.Dir, name) }

// Environ is the process environment with palisaded's socket and the OpenSSL configuration
// loading the module, then extra (later entries win).
func (e *Env) Environ(extra ...string) []string {
	return append(append(os.Environ(), "PALISADE_SOCKET="+e.Socket, "PALISADE_LEAN_SOCKET=",
		"OPENSSL_CONF="+e.OpenSSLConf), extra...)
}

// Run runs prog with Environ(extraEnv...) in the environment's directory and returns its
// combined output.
func (e *Env) Run(ctx context.Context, extraEnv []string, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = e.Environ(extraEnv...)
	cmd.Dir = e.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", filepath.Base(prog), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// CLI runs the palisade command against the environment's palisaded.
func (e *Env) CLI(ctx context.Context, args ...string) (string, error) {
	return e.Run(ctx, nil, filepath.Join(e.Bin, "palisade"), args...)
}

// CreateKey makes a key named name ("ecdsa-p256", "rsa-2048") in palisaded that nginx's workers
// may use, with a self-signed certificate for localhost written to name.crt.
func (e *Env) CreateKey(ctx context.Context, name, alg string) (cert string, err error) {
	if _, err := e.CLI(ctx, "key", "create", name, "--alg", alg, "--allow-user", strconv.Itoa(Nobody)); err != nil {
		return "", err
	}
	cert = e.Path(name + ".crt")
	_, err = e.CLI(ctx, "key", "selfsign", name, "--subject", "CN=localhost", "--san", "DNS:localhost,IP:127.0.0.1",
		"--store", "-o", cert)
	return cert, err
}

// FileKey makes a key of alg ("ecdsa-p256", "rsa-2048") in memory and writes it to name.key
// (PKCS#8 PEM) with a self-signed certificate name.crt, in the environment's directory.
func (e *Env) FileKey(name, alg string) (keyFile, cert string, err error) {
	return FileKey(e.Dir, name, alg)
}

// FileKey makes a key of alg ("ecdsa-p256", "rsa-2048") in memory and writes it to
// dir/name.key (PKCS#8 PEM, readable by all: nginx's workers) with a self-signed certificate
// for localhost and 127.0.0.1, dir/name.crt.
func FileKey(dir, name, alg string) (keyFile, cert string, err error) {
	var k crypto.Signer
	if alg == "rsa-2048" {
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", "", err
	}
	keyFile, cert = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	cd, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return "", "", err
	}
	return keyFile, cert, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cd}), 0o644)
}

// SoftHSM makes a SoftHSM2 token "bench" (user PIN 1234) holding keyFile's key (PKCS#8 PEM)
// labelled "k", and returns the environment nginx needs to use it through OpenSSL's engine. The
// token's files belong to the workers' uid: SoftHSM2 reads them again in each forked worker.
func (e *Env) SoftHSM(ctx context.Context, name, keyFile string) ([]string, error) {
	return SoftHSM(e.Path("softhsm-"+name), keyFile, func(env []string, prog string, args ...string) error {
		_, err := e.Run(ctx, env, prog, args...)
		return err
	})
}

// SoftHSM is Env.SoftHSM with the token's files in dir, running softhsm2-util with run, which
// adds env (the token's configuration) to the environment of its choice.
func SoftHSM(dir, keyFile string, run func(env []string, prog string, args ...string) error) ([]string, error) {
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o644); err != nil {
		return nil, err
	}
	env := []string{"SOFTHSM2_CONF=" + conf}
	if err := run(env, "softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1234", "--so-pin", "1234"); err != nil {
		return nil, err
	}
	if err := run(env, "softhsm2-util", "--import", keyFile, "--token", "bench", "--label", "k", "--id", "01", "--pin", "1234"); err != nil {
		return nil, err
	}
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", Nobody, Nobody), tokens).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chown: %v\n%s", err, out)
	}
	sslConf := filepath.Join(dir, "openssl.cnf")
	if err := os.WriteFile(sslConf, []byte(OpenSSLConf(SoftHSMModule)), 0o644); err != nil {
		return nil, err
	}
	return append(env, "OPENSSL_CONF="+sslConf), nil
}

// VHost is one HTTPS server of nginx: a port, a certificate and a key, given as nginx's
// configuration wants it (a file, or a PKCS#11 URI).
type VHost struct {
	Port, Cert, Key string
}

// NginxOptions are the changes to nginx's configuration a module needs (TPM2.Nginx); the zero
// value is the configuration every other backend runs with.
type NginxOptions struct {
	// Workers is worker_processes; 0 means 2.
	Workers int
	// NoSSLEngine leaves out ssl_engine pkcs11. That directive makes the engine OpenSSL's default
	// for every method it has, pkey methods included: every RSA or EC EVP_PKEY_CTX the process
	// makes afterwards goes to the engine's legacy methods, where EVP_PKEY_fromdata is not
	// supported. A module that itself uses OpenSSL for RSA or EC (tpm2-pkcs11, through tss2-esys,
	// for the salt of its TPM session) then fails. The engine is initialised by the OpenSSL
	// configuration (init = 1), which is all nginx's engine: key needs.
	NoSSLEngine bool
}

// WorkerProcesses is the worker_processes nginx runs with under o (Workers, or 2 for 0).
func (o NginxOptions) WorkerProcesses() int {
	if o.Workers == 0 {
		return 2
	}
	return o.Workers
}

// NginxConf is nginx's configuration serving hosts from dir with the zero NginxOptions.
func NginxConf(dir string, hosts []VHost) string { return NginxConfWith(dir, hosts, NginxOptions{}) }

// NginxConfWith is nginx's configuration serving hosts from dir: workers run as nobody;
// ssl_engine initialises the OpenSSL engine when a key is a PKCS#11 URI (unless o.NoSSLEngine);
// the variables the PKCS#11 modules read are passed to the workers with env (nginx clears the
// environment).
func NginxConfWith(dir string, hosts []VHost, o NginxOptions) string {
	var b strings.Builder
	engine := ""
	for _, h := range hosts {
		if strings.HasPrefix(h.Key, "pkcs11:") && !o.NoSSLEngine {
			engine = "ssl_engine pkcs11;"
		}
	}
	workers := o.WorkerProcesses()
	fmt.Fprintf(&b, `daemon off;
master_process on;
worker_processes %[3]d;
user nobody nogroup;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
%[2]s
env PALISADE_SOCKET;
env PALISADE_PKCS11_KEYS;
env PALISADE_PKCS11_LOG;
env SOFTHSM2_CONF;
env TPM2_PKCS11_STORE;
env TPM2_PKCS11_TCTI;
env TPM2_PKCS11_LOG_LEVEL;
env DBUS_SESSION_BUS_ADDRESS;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
`, dir, engine, workers)
	for _, h := range hosts {
		key := h.Key
		if strings.HasPrefix(key, "pkcs11:") {
			key = "engine:pkcs11:" + key
		}
		fmt.Fprintf(&b, `  server {
    listen 127.0.0.1:%s ssl;
    server_name localhost;
    ssl_certificate %s;
    ssl_certificate_key "%s";
    ssl_protocols TLSv1.2 TLSv1.3; # nginx 1.22 offers no TLS 1.3 by default
    location / { return 200 "palisade\n"; }
  }
`, h.Port, h.Cert, key)
	}
	b.WriteString("}\n")
	return b.String()
}

// Nginx is a running nginx.
type Nginx struct {
	Name string
	Dir  string
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{} // closed when the master has exited
}

// Log is nginx's output and error log, for error messages.
func (w *Nginx) Log() string {
	b, _ := os.ReadFile(filepath.Join(w.Dir, "error.log"))
	return w.out.String() + string(b)
}

// StartNginx starts nginx serving hosts, its configuration in the directory name, with
// Environ(extraEnv...) (the module's PALISADE_PKCS11_KEYS scoped to "tls-" first), and waits
// until every host's port accepts connections.
func (e *Env) StartNginx(name string, hosts []VHost, extraEnv ...string) (*Nginx, error) {
	return e.StartNginxWith(name, hosts, NginxOptions{}, extraEnv...)
}

// StartNginxWith is StartNginx with the configuration changed by o.
func (e *Env) StartNginxWith(name string, hosts []VHost, o NginxOptions, extraEnv ...string) (*Nginx, error) {
	dir := e.Path(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(NginxConfWith(dir, hosts, o)), 0o644); err != nil {
		return nil, err
	}
	w := &Nginx{Name: name, Dir: dir, done: make(chan struct{})}
	w.cmd = exec.Command("nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	w.cmd.Env = e.Environ(append([]string{"PALISADE_PKCS11_KEYS=tls-"}, extraEnv...)...)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { w.cmd.Wait(); close(w.done) }()
	for _, h := range hosts {
		if err := waitDialWhile("tcp", "127.0.0.1:"+h.Port, w.done); err != nil {
			w.Stop()
			return nil, fmt.Errorf("%s: %v\n%s", name, err, w.Log())
		}
	}
	return w, nil
}

// Stop stops nginx (SIGTERM, then SIGKILL after 10 s); it may be called again.
func (w *Nginx) Stop() { Terminate(w.cmd.Process, w.done) }

// Terminate sends p SIGTERM, then SIGKILL if it has not exited after 10 s, and returns once
// done (closed when p's Wait has returned) is closed. It does nothing if done already is, so
// it may be called again.
func Terminate(p *os.Process, done <-chan struct{}) {
	select {
	case <-done:
		return
	default:
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Kill()
		<-done
	}
}

// PIDs are nginx's master and its workers.
func (w *Nginx) PIDs() ([]int, error) {
	pids, err := ProcessTree(w.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	if len(pids) < 2 {
		return nil, fmt.Errorf("%s: no worker processes\n%s", w.Name, w.Log())
	}
	return pids, nil
}

// ProcessTree is master and its direct children (a web server's workers), master first.
func ProcessTree(master int) ([]int, error) {
	pids := []int{master}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(master) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// CPUOf is the user and system CPU time the processes pids have used.
func CPUOf(pids []int) (time.Duration, error) {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		for _, i := range []int{11, 12} { // utime, stime (fields 14 and 15 of stat)
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
	}
	return time.Duration(ticks) * (time.Second / 100), nil // USER_HZ
}

var (
	abRate   = regexp.MustCompile(`Requests per second:\s+([0-9.]+)`)
	abFailed = regexp.MustCompile(`Failed requests:\s+([0-9]+)`)
)

// AB runs ab with n requests at concurrency c against https://127.0.0.1:port/, each a full
// TLS 1.2 handshake (-f TLS1.2, a new connection per request, no session reuse), and returns
// its requests per second; every request must succeed.
func AB(ctx context.Context, port string, c, n int) (float64, error) {
	out, err := exec.CommandContext(ctx, "ab", "-q", "-f", "TLS1.2", "-n", strconv.Itoa(n), "-c", strconv.Itoa(c),
		"https://127.0.0.1:"+port+"/").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ab: %v\n%s", err, out)
	}
	if m := abFailed.FindSubmatch(out); m == nil || string(m[1]) != "0" {
		return 0, fmt.Errorf("ab: failed requests\n%s", out)
	}
	m := abRate.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ab: no rate in\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// FreePort is proctest.FreePort as the string VHost.Port takes.
func FreePort() (string, error) {
	port, err := proctest.FreePort()
	if err != nil {
		return "", err
	}
	return strconv.Itoa(port), nil
}

// SignLatency builds integrations/pkcs11/bench/sign_latency.c (once per Env) and times n
// signatures by the private key labelled label ("ecdsa" or "rsa" kind) of module, alone: no TLS,
// no web server. It returns the median and mean of one C_Sign in µs.
func (e *Env) SignLatency(ctx context.Context, env []string, module, label, kind string, n int, pin string) (median, mean float64, err error) {
	bin := filepath.Join(e.Bin, "sign_latency")
	if _, err := os.Stat(bin); err != nil {
		root, err := apps.SourceRoot()
		if err != nil {
			return 0, 0, err
		}
		if out, err := exec.CommandContext(ctx, "cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
			"-o", bin, filepath.Join(root, "integrations", "pkcs11", "bench", "sign_latency.c"), "-ldl").CombinedOutput(); err != nil {
			return 0, 0, fmt.Errorf("cc sign_latency: %v\n%s", err, out)
		}
	}
	args := []string{module, label, kind, strconv.Itoa(n)}
	if pin != "" {
		args = append(args, pin)
	}
	out, err := e.Run(ctx, env, bin, args...)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("sign_latency: %q", out)
	}
	if median, err = strconv.ParseFloat(f[0], 64); err == nil {
		mean, err = strconv.ParseFloat(f[1], 64)
	}
	return median, mean, err
}

// waitDial waits up to 10 s for addr to accept a connection.
func waitDial(network, addr string) error { return waitDialWhile(network, addr, nil) }

// waitDialWhile is waitDial giving up early once exited (the listening process's end) is closed.
func waitDialWhile(network, addr string, exited <-chan struct{}) error {
	var err error
	for i := 0; i < 200; i++ {
		var c net.Conn
		if c, err = net.Dial(network, addr); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("the server exited before accepting connections on %s", addr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.Join(fmt.Errorf("nothing accepts connections on %s", addr), err)
}
