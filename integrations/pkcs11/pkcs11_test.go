// Package pkcs11_test builds libpalisade-pkcs11.so and drives it with real, unmodified
// programs from Debian against a real palisaded: pkcs11-tool (opensc), p11tool (gnutls-bin),
// OpenSSL 3 through libengine-pkcs11-openssl (req, s_server), nginx and Apache httpd serving
// curl and openssl s_client across a restart of palisaded, and a search of the web servers'
// memory for the private key. docs/pkcs11.md gives the same steps for a user.
package pkcs11_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/p11web"
	"github.com/palisade-project/palisade/internal/proctest"
)

// Keys the tests make. The token the web servers see is scoped to the "tls-" prefix
// (PALISADE_PKCS11_KEYS): libp11 0.4.12 stops enumerating a token at an Ed25519 key.
const (
	keyEC    = "tls-ec"  // ECDSA P-256
	keyRSA   = "tls-rsa" // RSA-2048
	keyEd    = "ed"      // Ed25519
	keyPIN   = "pinned"  // ECDSA P-256 with the PIN pinValue
	pinValue = "4321"
	nobody   = p11web.Nobody // the uid of the web servers' workers
)

type env struct {
	dir, bin, module, opensslConf string
	d                             *daemon
	top                           *testing.T // owns the daemon, which subtests restart
}

var (
	buildOnce sync.Once
	buildErr  error
	built     struct{ bin, module string }
)

func need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh installs it)", p)
		}
	}
}

// TestMain removes what build made (binaries shared by the tests of this package).
func TestMain(m *testing.M) {
	code := m.Run()
	if built.bin != "" {
		os.RemoveAll(built.bin)
	}
	os.Exit(code)
}

// build compiles the module (its Makefile) and palisaded and the palisade CLI, once.
func build(t *testing.T) (bin, module string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "palisade-pkcs11-")
		if err != nil {
			buildErr = err
			return
		}
		built.bin = dir                              // removed by TestMain, even if a build step fails
		if err := os.Chmod(dir, 0o755); err != nil { // the web servers' workers load the module
			buildErr = err
			return
		}
		for _, c := range [][]string{
			{"make", "-s", "BUILD=" + filepath.Join(dir, "build")},
			{"go", "build", "-o", dir, "../../cmd/palisaded", "../../cmd/palisade"},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
				return
			}
		}
		built.bin, built.module = dir, filepath.Join(dir, "build", "libpalisade-pkcs11.so")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built.bin, built.module
}

// daemon is a palisaded process with its state in dir.
type daemon struct {
	t       *testing.T
	bin     string
	dir     string
	socket  string
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	done    chan struct{} // closed when the process has exited; waitErr is then set
	waitErr error
}

func startDaemon(t *testing.T, bin, dir string) *daemon {
	t.Helper()
	d := &daemon{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "run", "palisade.sock"), done: make(chan struct{})}
	cfg := map[string]any{
		"state_dir": filepath.Join(dir, "state"), "socket": d.socket, "rot": "none",
		"socket_mode": "0666", "log_level": "info", "shutdown_timeout": "5s",
	}
	raw, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "palisaded.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(filepath.Join(bin, "palisaded"), "--config", cfgPath)
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
	})
	lean := filepath.Join(dir, "run", "lean.sock")
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("unix", lean); err == nil {
			c.Close()
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("palisaded did not serve %s\n%s", lean, d.stderr.String())
	return nil
}

func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.waitErr != nil {
			d.t.Fatalf("palisaded: %v\n%s", d.waitErr, d.stderr.String())
		}
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		d.t.Fatal("palisaded did not stop")
	}
}

// setup starts palisaded and makes the keys, with self-signed certificates stored in the
// daemon, once per test binary run.
func setup(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the web servers' workers run as uid 65534: run as root")
	}
	need(t, "pkcs11-tool", "p11tool", "openssl", "curl")
	if _, err := os.Stat(p11web.EngineSO); err != nil {
		t.Skip("libengine-pkcs11-openssl not installed (scripts/setup.sh installs it)")
	}
	bin, module := build(t)
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil { // workers as uid 65534 reach the socket
			t.Fatal(err)
		}
	}
	e := &env{dir: dir, bin: bin, module: module, top: t}
	// The module's log, appended to by the web servers' workers (uid 65534) too.
	if err := os.WriteFile(e.path("pkcs11.log"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.path("pkcs11.log"), 0o666); err != nil {
		t.Fatal(err)
	}
	e.d = startDaemon(t, bin, dir)
	for _, k := range []struct{ name, alg string }{{keyEC, "ecdsa-p256"}, {keyRSA, "rsa-2048"}, {keyEd, "ed25519"}} {
		e.cli(t, "key", "create", k.name, "--alg", k.alg, "--allow-user", fmt.Sprint(nobody))
		if k.name != keyEd {
			e.cli(t, "key", "selfsign", k.name, "--subject", "CN=localhost", "--san", "DNS:localhost,IP:127.0.0.1",
				"--store", "-o", e.path(k.name+".crt"))
		}
		e.cli(t, "key", "public", k.name, "--der", "-o", e.path(k.name+".pub"))
	}
	if err := os.WriteFile(e.path("pin"), []byte(pinValue), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cli(t, "key", "create", keyPIN, "--alg", "ecdsa-p256", "--pin-file", e.path("pin"))
	e.cli(t, "key", "public", keyPIN, "--der", "-o", e.path(keyPIN+".pub"))
	e.opensslConf = e.path("openssl.cnf")
	if err := os.WriteFile(e.opensslConf, []byte(p11web.OpenSSLConf(module)), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

func (e *env) environ(extra ...string) []string {
	return append(append(os.Environ(), "PALISADE_SOCKET="+e.d.socket, "PALISADE_LEAN_SOCKET=",
		"PALISADE_PKCS11_LOG="+e.path("pkcs11.log"), "OPENSSL_CONF="+e.opensslConf), extra...)
}

// logText is the module's log so far (PALISADE_PKCS11_LOG).
func (e *env) logText(t *testing.T) string {
	b, err := os.ReadFile(e.path("pkcs11.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func (e *env) cli(t *testing.T, args ...string) string {
	t.Helper()
	return e.run(t, nil, filepath.Join(e.bin, "palisade"), args...)
}

// run runs a program with the daemon's socket in its environment and returns its output.
func (e *env) run(t *testing.T, extraEnv []string, prog string, args ...string) string {
	t.Helper()
	out, err := e.try(extraEnv, prog, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) try(extraEnv []string, prog string, args ...string) (string, error) {
	cmd := exec.Command(prog, args...)
	cmd.Env = e.environ(extraEnv...)
	cmd.Dir = e.dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *env) publicKey(t *testing.T, name string) crypto.PublicKey {
	t.Helper()
	der, err := os.ReadFile(e.path(name + ".pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestPKCS11 runs every program against one daemon and one set of keys.
func TestPKCS11(t *testing.T) {
	e := setup(t)
	t.Run("pkcs11-tool", func(t *testing.T) { testPKCS11Tool(t, e) })
	t.Run("p11tool", func(t *testing.T) { testP11Tool(t, e) })
	t.Run("openssl", func(t *testing.T) { testOpenSSLEngine(t, e) })
	t.Run("nginx", func(t *testing.T) { testWebServer(t, e, "nginx") })
	t.Run("apache", func(t *testing.T) { testWebServer(t, e, "apache") })
	t.Run("memory-search-control", func(t *testing.T) { testMemorySearchControl(t, e) })
}

func testPKCS11Tool(t *testing.T, e *env) {
	mod := []string{"--module", e.module}

	t.Run("list", func(t *testing.T) {
		out := e.run(t, nil, "pkcs11-tool", append(mod, "--list-objects")...)
		for _, want := range []string{
			"Private Key Object; EC", "label:      " + keyEC, "Public Key Object; EC  EC_POINT 256 bits",
			"Private Key Object; RSA", "Public Key Object; RSA 2048 bits", "Certificate Object; type = X.509 cert",
			"Private Key Object; EC_EDWARDS", "subject:    DN: CN=localhost",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("pkcs11-tool --list-objects lacks %q:\n%s", want, out)
			}
		}
	})

	// pkcs11-tool --test signs a SHA-1 DigestInfo with CKM_RSA_PKCS, multi-part and in one
	// call, with every RSA key it finds: the whole token passes, the key with a PIN too once
	// logged in (it is listed only then).
	t.Run("test", func(t *testing.T) {
		out, err := e.try(nil, "pkcs11-tool", append(mod, "--test", "--login", "--pin", pinValue)...)
		last := lastLine(out)
		if err != nil || last != "No errors" {
			t.Fatalf("pkcs11-tool --test: %v, summary %q\n%s", err, last, out)
		}
		for _, want := range []string{"Digests: not implemented", "RNG not available", "(" + keyEC + ")",
			"(" + keyPIN + ")", "all 4 signature functions seem to work", "RSA-PKCS: OK", "SHA256-RSA-PKCS: OK"} {
			if !strings.Contains(out, want) {
				t.Errorf("pkcs11-tool --test output lacks %q:\n%s", want, out)
			}
		}
	})

	// --test-fork forks, and the child calls C_Initialize and lists the slots: the fork
	// counter lets the child's C_Initialize succeed on the parent's initialised state.
	t.Run("test-fork", func(t *testing.T) {
		out, err := e.try([]string{"PALISADE_PKCS11_KEYS=" + keyEC}, "pkcs11-tool", append(mod, "--test-fork")...)
		if err != nil || !strings.Contains(out, "Calling C_Initialize in forked child process") ||
			!strings.Contains(out, "Using slot 0 with a present token") {
			t.Fatalf("pkcs11-tool --test-fork: %v\n%s", err, out)
		}
	})

	// "data" fits pkcs11-tool's buffer and goes through C_Sign; "big" (3000 bytes: above
	// its 1025-byte buffer, below the 4096 an EdDSA message may have) through C_SignUpdate
	// and C_SignFinal.
	inputs := map[string][]byte{"data": []byte("palisade pkcs11 test\n"), "big": bytes.Repeat([]byte("0123456789abcdef"), 3000/16)}
	for _, name := range []string{"data", "big"} {
		b := inputs[name]
		h := sha256.Sum256(b)
		inputs[name+".sha256"] = h[:]
		inputs[name+".sha256info"] = append(digestInfo(crypto.SHA256), h[:]...)
		h1 := sha1.Sum(b)
		inputs[name+".sha1info"] = append(digestInfo(crypto.SHA1), h1[:]...)
		inputs[name+".sha1"] = h1[:]
		inputs[name+".long"] = bytes.Repeat(h[:], 4)[:100] // CKM_ECDSA: longer than any hash
	}
	for name, b := range inputs {
		if err := os.WriteFile(e.path(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hashOf := func(h crypto.Hash, msg string) []byte {
		w := h.New()
		w.Write(inputs[msg])
		return w.Sum(nil)
	}
	pss := func(h crypto.Hash) verifier {
		return func(pub crypto.PublicKey, msg string, sig []byte) error {
			return rsa.VerifyPSS(pub.(*rsa.PublicKey), h, hashOf(h, msg), sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	}
	pkcs1 := func(h crypto.Hash) verifier {
		return func(pub crypto.PublicKey, msg string, sig []byte) error {
			return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), h, hashOf(h, msg), sig)
		}
	}
	ecdsaV := func(h crypto.Hash) verifier {
		return func(pub crypto.PublicKey, msg string, sig []byte) error {
			if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), hashOf(h, msg), sig) {
				return fmt.Errorf("ECDSA signature does not verify")
			}
			return nil
		}
	}
	// ecdsaOver verifies a CKM_ECDSA signature of the file signed itself (msg+suffix), as a
	// hash of its length: the verifier uses its leftmost 256 bits, as the signer must.
	ecdsaOver := func(suffix string) verifier {
		return func(pub crypto.PublicKey, msg string, sig []byte) error {
			if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), inputs[msg+suffix], sig) {
				return fmt.Errorf("ECDSA signature of %s does not verify", msg+suffix)
			}
			return nil
		}
	}
	eddsaV := func(pub crypto.PublicKey, msg string, sig []byte) error {
		if !ed25519.Verify(pub.(ed25519.PublicKey), inputs[msg], sig) {
			return fmt.Errorf("Ed25519 signature does not verify")
		}
		return nil
	}
	for _, c := range []struct {
		key, mech string
		args      []string
		input     string // the message
		suffix    string // the file signed is input+suffix: its SHA-256 or a DigestInfo for the raw mechanisms
		verify    verifier
	}{
		{keyEC, "ECDSA", nil, "data", ".sha256", ecdsaV(crypto.SHA256)},
		// CKM_ECDSA signs a hash of any length: SHA-1's, or longer than SHA-512's.
		{keyEC, "ECDSA", nil, "data", ".sha1", ecdsaOver(".sha1")},
		{keyEC, "ECDSA", nil, "data", ".long", ecdsaOver(".long")},
		{keyEC, "ECDSA-SHA256", nil, "data", "", ecdsaV(crypto.SHA256)},
		{keyEC, "ECDSA-SHA256", nil, "big", "", ecdsaV(crypto.SHA256)},
		{keyEC, "ECDSA-SHA384", nil, "data", "", ecdsaV(crypto.SHA384)},
		{keyEC, "ECDSA-SHA512", nil, "big", "", ecdsaV(crypto.SHA512)},
		// CKM_RSA_PKCS signs the input as given: a SHA-2 DigestInfo (TLS 1.2, OpenSSL's
		// engine) goes as its digest, any other (SHA-1's) raw.
		{keyRSA, "RSA-PKCS", nil, "data", ".sha256info", pkcs1(crypto.SHA256)},
		{keyRSA, "RSA-PKCS", nil, "data", ".sha1info", pkcs1(crypto.SHA1)},
		{keyRSA, "SHA256-RSA-PKCS", nil, "data", "", pkcs1(crypto.SHA256)},
		{keyRSA, "SHA384-RSA-PKCS", nil, "big", "", pkcs1(crypto.SHA384)},
		{keyRSA, "SHA512-RSA-PKCS", nil, "data", "", pkcs1(crypto.SHA512)},
		{keyRSA, "RSA-PKCS-PSS", []string{"--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256", "--salt-len=-1"}, "data", ".sha256", pss(crypto.SHA256)},
		{keyRSA, "SHA256-RSA-PKCS-PSS", []string{"--salt-len=-1"}, "data", "", pss(crypto.SHA256)},
		{keyRSA, "SHA384-RSA-PKCS-PSS", []string{"--salt-len=-1"}, "big", "", pss(crypto.SHA384)},
		{keyRSA, "SHA512-RSA-PKCS-PSS", []string{"--salt-len=-1"}, "data", "", pss(crypto.SHA512)},
		{keyEd, "EDDSA", nil, "data", "", eddsaV},
		{keyEd, "EDDSA", nil, "big", "", eddsaV},
	} {
		t.Run("sign/"+c.key+"/"+c.mech+"/"+c.input+c.suffix, func(t *testing.T) {
			in := c.input + c.suffix
			sigFile := e.path("sig-" + c.key + "-" + c.mech + "-" + in)
			args := append(append(append([]string{}, mod...), "--sign", "--id", fmt.Sprintf("%x", c.key),
				"-m", c.mech, "-i", e.path(in), "-o", sigFile, "--signature-format", "openssl"), c.args...)
			logBefore := e.logText(t)
			e.run(t, []string{"PALISADE_PKCS11_KEYS=" + c.key}, "pkcs11-tool", args...) // no login asked
			multi := strings.Contains(strings.TrimPrefix(e.logText(t), logBefore), "C_SignUpdate: multi-part")
			if multi != (c.input == "big") {
				t.Errorf("multi-part signature: %v, want %v (pkcs11-tool's buffer is 1025 bytes)", multi, c.input == "big")
			}
			sig, err := os.ReadFile(sigFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.verify(e.publicKey(t, c.key), c.input, sig); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A key with a PIN is a private object, signed with after C_Login with its PIN; the
	// signing PAL checks the PIN.
	t.Run("login", func(t *testing.T) {
		pinScope := []string{"PALISADE_PKCS11_KEYS=" + keyPIN}
		sign := func(login ...string) (string, error) {
			return e.try(pinScope, "pkcs11-tool", append(append(append([]string{}, mod...), login...), "--sign",
				"--id", fmt.Sprintf("%x", keyPIN), "-m", "ECDSA-SHA256", "-i", e.path("data"),
				"-o", e.path("sig-pinned"), "--signature-format", "openssl")...)
		}
		out := e.run(t, pinScope, "pkcs11-tool", append(mod, "--list-token-slots")...)
		if !strings.Contains(out, "login required") {
			t.Errorf("a token with a PIN key does not ask for a login:\n%s", out)
		}
		if out, err := sign(); err == nil {
			t.Errorf("signed with a PIN key without logging in:\n%s", out)
		}
		// A wrong PIN: pkcs11-tool signs again after C_Sign's CKR_PIN_INCORRECT (multi-part),
		// which the module, having forgotten the PIN, answers CKR_USER_NOT_LOGGED_IN: one try
		// spent, not two.
		logBefore := e.logText(t)
		if out, err := sign("--login", "--pin", "0000"); err == nil || !strings.Contains(out, "CKR_USER_NOT_LOGGED_IN") ||
			!strings.Contains(strings.TrimPrefix(e.logText(t), logBefore), "PIN incorrect for "+keyPIN+": logged out") {
			t.Errorf("wrong PIN: %v, want CKR_PIN_INCORRECT then CKR_USER_NOT_LOGGED_IN\n%s", err, out)
		}
		// The token says what a PIN may be (the key service's 1..64 bytes), and C_Login
		// refuses a longer one, rather than a C_Sign failing later for its data.
		if out := e.run(t, pinScope, "pkcs11-tool", append(mod, "--list-token-slots")...); !strings.Contains(out, "pin min/max        : 0/64") {
			t.Errorf("token's PIN lengths, want 0/64:\n%s", out)
		}
		if out, err := sign("--login", "--pin", strings.Repeat("1", 65)); err == nil || !strings.Contains(out, "C_Login") ||
			!strings.Contains(out, "CKR_PIN_LEN_RANGE") {
			t.Errorf("65-byte PIN: %v, want C_Login's CKR_PIN_LEN_RANGE\n%s", err, out)
		}
		os.Remove(e.path("sig-pinned"))
		if out, err := sign("--login", "--pin", pinValue); err != nil {
			t.Fatalf("right PIN: %v\n%s", err, out)
		}
		sig, err := os.ReadFile(e.path("sig-pinned"))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(inputs["data"])
		if !ecdsa.VerifyASN1(e.publicKey(t, keyPIN).(*ecdsa.PublicKey), h[:], sig) {
			t.Fatal("the PIN key's signature does not verify")
		}
	})
	t.Run("sign/refused", func(t *testing.T) {
		// A mechanism of another key type, and raw RSA, are refused at C_SignInit.
		for _, c := range []struct{ key, mech, want string }{
			{keyEC, "SHA256-RSA-PKCS", "CKR_KEY_TYPE_INCONSISTENT"},
			{keyRSA, "RSA-X-509", "CKR_MECHANISM_INVALID"},
		} {
			out, err := e.try([]string{"PALISADE_PKCS11_KEYS=" + c.key}, "pkcs11-tool", append(mod, "--sign", "--id", fmt.Sprintf("%x", c.key), "-m", c.mech,
				"-i", e.path("data.sha256"), "-o", e.path("sig-refused"))...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("%s with %s: %v, want %s\n%s", c.mech, c.key, err, c.want, out)
			}
		}
	})

	// A daemon that hangs (stopped with SIGSTOP, its sockets open): the module gives up after
	// the handle's timeout ($PALISADE_TIMEOUT_MS here; 30 s by default in the module) with
	// CKR_DEVICE_ERROR instead of hanging the caller, and works again once the daemon runs.
	t.Run("sign/hung-daemon", func(t *testing.T) {
		sign := func(timeout string) (string, error) {
			return e.try([]string{"PALISADE_PKCS11_KEYS=" + keyEC, "PALISADE_TIMEOUT_MS=" + timeout}, "pkcs11-tool",
				append(mod, "--sign", "--id", fmt.Sprintf("%x", keyEC), "-m", "ECDSA", "-i", e.path("data.sha256"), "-o", e.path("sig-hung"))...)
		}
		// pkcs11-tool looks the key up before it signs, so it is the lookup (C_FindObjectsInit)
		// that meets the stopped daemon first; both go through the same handle timeout.
		if err := proctest.Freeze(e.d.cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		defer e.d.cmd.Process.Signal(syscall.SIGCONT)
		done := make(chan struct{})
		var out string
		var err error
		go func() { out, err = sign("700"); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			e.d.cmd.Process.Signal(syscall.SIGCONT)
			<-done
			t.Fatal("pkcs11-tool still waiting for a stopped daemon after 60 s")
		}
		t.Logf("with the daemon stopped: %v\n%s", err, out)
		if err == nil || !strings.Contains(out, "CKR_DEVICE_ERROR") {
			t.Errorf("sign with the daemon stopped: %v\n%s", err, out)
		}
		e.d.cmd.Process.Signal(syscall.SIGCONT)
		if out, err := sign("5000"); err != nil {
			t.Errorf("sign after the daemon runs again: %v\n%s", err, out)
		}
	})
}

type verifier func(pub crypto.PublicKey, msg string, sig []byte) error

// digestInfo is the DER prefix of a DigestInfo of h (RFC 8017 §9.2 note 1), written out
// here rather than taken from the module under test.
func digestInfo(h crypto.Hash) []byte {
	switch h {
	case crypto.SHA1:
		return []byte{0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14}
	case crypto.SHA256:
		return []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
	}
	panic("digestInfo: no prefix for " + h.String())
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func testP11Tool(t *testing.T, e *env) {
	// The token holds a key with a PIN, so it asks for a login: p11tool reads the PIN from
	// GNUTLS_PIN and then lists that key's private object too.
	pin := []string{"GNUTLS_PIN=" + pinValue}
	out := e.run(t, pin, "p11tool", "--provider", e.module, "--login", "--list-all", "pkcs11:token=palisade")
	for _, want := range []string{"Type: Private key (EC/ECDSA-SECP256R1)", "Type: Private key (RSA-2048)",
		"Type: Public key (EdDSA (Ed25519))", "Type: X.509 Certificate (EC/ECDSA-SECP256R1)", "Label: " + keyRSA,
		"object=" + keyPIN + ";type=private"} {
		if !strings.Contains(out, want) {
			t.Errorf("p11tool --list-all lacks %q:\n%s", want, out)
		}
	}
	for _, k := range []string{keyEC, keyRSA} {
		out := e.run(t, pin, "p11tool", "--provider", e.module, "--login", "--test-sign",
			"pkcs11:token=palisade;object="+k+";type=private")
		for _, want := range []string{"Signing using", "Verifying against private key parameters... ok",
			"Verifying against public key in the token... ok"} {
			if !strings.Contains(out, want) {
				t.Errorf("p11tool --test-sign %s lacks %q:\n%s", k, want, out)
			}
		}
	}
}

func testOpenSSLEngine(t *testing.T, e *env) {
	scope := []string{"PALISADE_PKCS11_KEYS=tls-"}
	for _, k := range []string{keyEC, keyRSA} {
		t.Run("req/"+k, func(t *testing.T) {
			csrFile := e.path(k + ".csr")
			e.run(t, scope, "openssl", "req", "-new", "-engine", "pkcs11", "-keyform", "engine",
				"-key", "pkcs11:token=palisade;object="+k+";type=private", "-subj", "/CN=www.example.test",
				"-outform", "DER", "-out", csrFile)
			der, err := os.ReadFile(csrFile)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatalf("CSR signature: %v", err)
			}
			if !csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(e.publicKey(t, k)) {
				t.Fatal("the CSR is not for the key's public key")
			}
		})
	}
	// curl presents a client certificate whose key is in Palisade to a server that
	// requires one (s_server with -Verify, trusting only that certificate).
	t.Run("curl-client-certificate", func(t *testing.T) {
		srvKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pemKey(t, e.path("client-test-server.key"), srvKey)
		srvCert := selfSigned(t, e, srvKey)
		port := freePort(t)
		srv := exec.Command("openssl", "s_server", "-accept", "127.0.0.1:"+port, "-cert", srvCert,
			"-key", e.path("client-test-server.key"), "-Verify", "1", "-CAfile", e.path(keyEC+".crt"),
			"-verify_return_error", "-www")
		var log bytes.Buffer
		srv.Stdout, srv.Stderr = &log, &log
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { srv.Process.Kill(); srv.Wait() }()
		waitPort(t, port, &log)
		out := e.run(t, scope, "curl", "-sS", "--fail", "--engine", "pkcs11", "--key-type", "ENG",
			"--key", "pkcs11:token=palisade;object="+keyEC+";type=private", "--cert", e.path(keyEC+".crt"),
			"--cacert", srvCert, "--resolve", "localhost:"+port+":127.0.0.1", "https://localhost:"+port+"/")
		if !strings.Contains(out, "Client certificate") || !strings.Contains(log.String(), "verify return:1") {
			t.Fatalf("the server did not get and verify curl's certificate:\n%s\n%s", out, log.String())
		}
	})
	for _, k := range []string{keyEC, keyRSA} {
		t.Run("s_server/"+k, func(t *testing.T) {
			port := freePort(t)
			srv := exec.Command("openssl", "s_server", "-accept", "127.0.0.1:"+port, "-engine", "pkcs11",
				"-keyform", "engine", "-key", "pkcs11:token=palisade;object="+k+";type=private",
				"-cert", e.path(k+".crt"), "-www")
			srv.Env = e.environ(scope...)
			var log bytes.Buffer
			srv.Stdout, srv.Stderr = &log, &log
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { srv.Process.Kill(); srv.Wait() }()
			waitPort(t, port, &log)
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				state := handshake(t, port, e.path(k+".crt"), v)
				if !state.HandshakeComplete || state.Version != v {
					t.Fatalf("TLS %x: %+v", v, state)
				}
			}
		})
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	port, err := p11web.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func waitPort(t *testing.T, port string, log fmt.Stringer) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s\n%s", port, log.String())
}

// handshake makes a full TLS handshake of version v with the server on port, trusting only
// the certificate in certFile, and returns the connection's state.
func handshake(t *testing.T, port, certFile string, v uint16) tls.ConnectionState {
	t.Helper()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	c, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: v, MaxVersion: v})
	if err != nil {
		t.Fatalf("TLS %x handshake: %v", v, err)
	}
	defer c.Close()
	return c.ConnectionState()
}

// curl fetches https://localhost:port/ with curl over TLS version v ("1.2", "1.3").
func curl(port, certFile, v string) (string, error) {
	out, err := exec.Command("curl", "-sS", "--fail", "--cacert", certFile, "--tlsv"+v, "--tls-max", v,
		"--resolve", "localhost:"+port+":127.0.0.1", "https://localhost:"+port+"/index.html").CombinedOutput()
	return string(out), err
}

// sClient runs openssl s_client against port and returns its output.
func sClient(t *testing.T, port, certFile string) string {
	t.Helper()
	cmd := exec.Command("openssl", "s_client", "-connect", "127.0.0.1:"+port, "-servername", "localhost",
		"-CAfile", certFile, "-verify_return_error", "-brief")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	return string(out)
}

// pemKey writes a PKCS#8 PEM of key to path (the positive control's key-in-file server).
func pemKey(t *testing.T, path string, key crypto.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSigned writes a self-signed certificate for localhost and key, and returns its path.
func selfSigned(t *testing.T, e *env, key *rsa.PrivateKey) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := e.path(fmt.Sprintf("selfsigned-%x.crt", key.N.Bytes()[:4]))
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFuzzDERCorpus builds the libFuzzer target of the module's DER reader (under
// AddressSanitizer) and runs it over its seed corpus: the test keys' public keys and
// certificates and an ECDSA signature. Fuzz longer with
// make fuzz && build/fuzz_der -max_total_time=20 fuzz/corpus.
func TestFuzzDERCorpus(t *testing.T) {
	need(t, "clang")
	build := t.TempDir()
	if out, err := exec.Command("make", "-s", "BUILD="+build, "fuzz").CombinedOutput(); err != nil {
		t.Fatalf("make fuzz (needs libclang-rt-14-dev, scripts/setup.sh): %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(build, "fuzz_der"), "-runs=0", "fuzz/corpus").CombinedOutput()
	if err != nil {
		t.Fatalf("fuzz_der over the corpus: %v\n%s", err, out)
	}
}
