package pkcs11_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/p11web"
)

// webServer is a local, unprivileged-style nginx or Apache instance with its configuration
// in its own directory (the system's /etc/nginx and /etc/apache2 are not read).
type webServer struct {
	name string
	cmd  *exec.Cmd
	out  bytes.Buffer
	dir  string
	done chan struct{} // closed when the master has exited: stop may be called again
}

func (w *webServer) String() string {
	b, _ := os.ReadFile(filepath.Join(w.dir, "error.log"))
	return w.out.String() + string(b)
}

// apacheConf: mod_ssl with SSLCryptoDevice pkcs11 and a pkcs11 URI as the key file; the
// event MPM's children run as nobody.
func apacheConf(dir string, hosts []p11web.VHost) string {
	var b strings.Builder
	m := "/usr/lib/apache2/modules/"
	fmt.Fprintf(&b, `ServerRoot %[1]s
PidFile %[1]s/httpd.pid
ErrorLog %[1]s/error.log
LogLevel info
User nobody
Group nogroup
LoadModule mpm_event_module %[2]smod_mpm_event.so
LoadModule authz_core_module %[2]smod_authz_core.so
LoadModule socache_shmcb_module %[2]smod_socache_shmcb.so
LoadModule ssl_module %[2]smod_ssl.so
Mutex file:%[1]s default
DefaultRuntimeDir %[1]s
ServerName localhost
DocumentRoot %[1]s/htdocs
StartServers 2
SSLCryptoDevice pkcs11
SSLSessionCache none
`, dir, m)
	for _, h := range hosts {
		fmt.Fprintf(&b, `Listen 127.0.0.1:%[1]s
<VirtualHost 127.0.0.1:%[1]s>
  SSLEngine on
  SSLCertificateFile %[2]s
  SSLCertificateKeyFile "%[3]s"
</VirtualHost>
`, h.Port, h.Cert, h.Key)
	}
	return b.String()
}

func startWebServer(t *testing.T, e *env, name string, hosts []p11web.VHost, extraEnv ...string) *webServer {
	t.Helper()
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(filepath.Join(dir, "htdocs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htdocs", "index.html"), []byte("palisade\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := &webServer{name: name, dir: dir, done: make(chan struct{})}
	var conf string
	switch {
	case strings.HasPrefix(name, "nginx"):
		conf = filepath.Join(dir, "nginx.conf")
		w.cmd = exec.Command("nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
		if err := os.WriteFile(conf, []byte(p11web.NginxConf(dir, hosts)), 0o644); err != nil {
			t.Fatal(err)
		}
	default:
		conf = filepath.Join(dir, "httpd.conf")
		w.cmd = exec.Command("apache2", "-f", conf, "-DFOREGROUND")
		if err := os.WriteFile(conf, []byte(apacheConf(dir, hosts)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w.cmd.Env = e.environ(append([]string{"PALISADE_PKCS11_KEYS=tls-"}, extraEnv...)...)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.cmd.Wait(); close(w.done) }()
	t.Cleanup(w.stop)
	for _, h := range hosts {
		waitPort(t, h.Port, w)
	}
	return w
}

// stop stops the server (SIGTERM, then SIGKILL after 10 s); it may be called again.
func (w *webServer) stop() { p11web.Terminate(w.cmd.Process, w.done) }

// pids are the server's master and its children.
func (w *webServer) pids(t *testing.T) []int {
	t.Helper()
	pids, err := p11web.ProcessTree(w.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) < 2 {
		t.Fatalf("%s: no worker processes", w.name)
	}
	return pids
}

func (e *env) tlsHosts(t *testing.T) []p11web.VHost {
	return []p11web.VHost{
		{Port: freePort(t), Cert: e.path(keyEC + ".crt"), Key: "pkcs11:token=palisade;object=" + keyEC + ";type=private"},
		{Port: freePort(t), Cert: e.path(keyRSA + ".crt"), Key: "pkcs11:token=palisade;object=" + keyRSA + ";type=private"},
	}
}

// serves checks that every host answers curl (TLS 1.2 and 1.3) and openssl s_client.
func serves(t *testing.T, hosts []p11web.VHost, w fmt.Stringer) {
	t.Helper()
	for _, h := range hosts {
		for _, v := range []string{"1.2", "1.3"} {
			if out, err := curl(h.Port, h.Cert, v); err != nil || out != "palisade\n" {
				t.Fatalf("curl TLS %s on %s: %v %q\n%s", v, h.Port, err, out, w)
			}
		}
		out := sClient(t, h.Port, h.Cert)
		if !strings.Contains(out, "Verification: OK") || !strings.Contains(out, "Protocol version: TLSv1.3") {
			t.Fatalf("openssl s_client on %s:\n%s", h.Port, out)
		}
	}
}

// testWebServer runs nginx or Apache with its keys in Palisade: HTTPS to curl and
// s_client, again after palisaded restarts, and no private key in the processes' memory.
func testWebServer(t *testing.T, e *env, name string) {
	bin := map[string]string{"nginx": "nginx", "apache": "apache2"}[name]
	need(t, bin)
	hosts := e.tlsHosts(t)
	w := startWebServer(t, e, name, hosts)
	serves(t, hosts, w)

	e.d.stop()
	e.d = startDaemon(e.top, e.bin, e.dir)
	serves(t, hosts, w)

	// The workers signed as themselves (uid 65534), on connections of their own, not on
	// the connection the root master opened to load the keys.
	pids := w.pids(t)
	for _, k := range []string{keyEC, keyRSA} {
		if n := e.signaturesBy(t, k, nobody, pids[1:]); n == 0 {
			t.Errorf("no signature with %s by a %s worker as uid %d in the audit log", k, name, nobody)
		}
	}

	rsaN := e.publicKey(t, keyRSA).(*rsa.PublicKey).N
	for _, pid := range pids {
		if where, err := findPrime(pid, rsaN); err != nil {
			t.Fatal(err)
		} else if where != "" {
			t.Errorf("%s process %d holds a prime factor of %s's modulus (%s)", name, pid, keyRSA, where)
		}
		if where, err := findKeyDER(pid); err != nil {
			t.Fatal(err)
		} else if where != "" {
			t.Errorf("%s process %d holds a DER private key (%s)", name, pid, where)
		}
	}
}

// signaturesBy counts the audited signatures with key by uid from one of pids.
func (e *env) signaturesBy(t *testing.T, key string, uid int, pids []int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "state", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var ev struct {
			Event string `json:"event"`
			UID   int    `json:"uid"`
			PID   int    `json:"pid"`
			Key   string `json:"key"`
			OK    bool   `json:"ok"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if ev.Event == "key_sign" && ev.OK && ev.Key == key && ev.UID == uid && slices.Contains(pids, ev.PID) {
			n++
		}
	}
	return n
}

// testMemorySearchControl is the positive control of the memory search: the same nginx with
// an RSA key in a file holds its primes, and findPrime finds them.
func testMemorySearchControl(t *testing.T, e *env) {
	need(t, "nginx")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := e.path("control.key")
	pemKey(t, keyFile, key)
	certFile := selfSigned(t, e, key)
	hosts := []p11web.VHost{{Port: freePort(t), Cert: certFile, Key: keyFile}}
	w := startWebServer(t, e, "nginx-control", hosts)
	if out, err := curl(hosts[0].Port, certFile, "1.3"); err != nil || out != "palisade\n" {
		t.Fatalf("control server: %v %q\n%s", err, out, w)
	}
	found := false
	for _, pid := range w.pids(t) {
		where, err := findPrime(pid, key.N)
		if err != nil {
			t.Fatal(err)
		}
		if where != "" {
			t.Logf("control: process %d holds a prime of the file key (%s)", pid, where)
			found = true
		}
	}
	if !found {
		t.Fatal("the memory search does not find the primes of a key nginx loaded from a file")
	}
}

// findPrime searches the readable memory of pid for a factor of n (an RSA prime), as
// big-endian bytes at any offset (DER, raw) or as little-endian 64-bit words at 8-byte
// aligned offsets (OpenSSL's BIGNUM). It returns where it found one, or "".
func findPrime(pid int, n *big.Int) (string, error) {
	plen := (n.BitLen() + 15) / 16 // bytes of a prime of half the modulus' size
	p, r := new(big.Int), new(big.Int)
	rev := make([]byte, plen)
	return scanMemory(pid, func(b []byte, base uint64) string {
		for i := 0; i+plen <= len(b); i++ {
			// A prime of an RSA key is odd and has its top bit set.
			if b[i] >= 0x80 && b[i+plen-1]&1 == 1 {
				if r.Mod(n, p.SetBytes(b[i:i+plen])).Sign() == 0 && p.Cmp(n) != 0 {
					return fmt.Sprintf("big-endian at %#x", base+uint64(i))
				}
			}
			if i%8 == 0 && b[i]&1 == 1 && b[i+plen-1] >= 0x80 {
				for j := range rev {
					rev[j] = b[i+plen-1-j]
				}
				if r.Mod(n, p.SetBytes(rev)).Sign() == 0 && p.Cmp(n) != 0 {
					return fmt.Sprintf("little-endian words at %#x", base+uint64(i))
				}
			}
		}
		return ""
	})
}

// DER headers of private keys: PKCS#1 RSAPrivateKey (version 0, then a 2048- or 3072-bit
// modulus) and SEC1 ECPrivateKey of P-256 (version 1, a 32-byte scalar, the curve's OID).
var derKeyHeaders = [][]byte{
	{0x02, 0x01, 0x00, 0x02, 0x82, 0x01, 0x01, 0x00},
	{0x02, 0x01, 0x00, 0x02, 0x82, 0x01, 0x81, 0x00},
}

var sec1P256Tail = []byte{0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

func findKeyDER(pid int) (string, error) {
	return scanMemory(pid, func(b []byte, base uint64) string {
		for _, h := range derKeyHeaders {
			if i := bytes.Index(b, h); i >= 0 {
				return fmt.Sprintf("RSAPrivateKey at %#x", base+uint64(i))
			}
		}
		for off := 0; ; {
			i := bytes.Index(b[off:], []byte{0x02, 0x01, 0x01, 0x04, 0x20})
			if i < 0 {
				break
			}
			j := off + i + 5 + 32
			if j+len(sec1P256Tail) <= len(b) && bytes.Equal(b[j:j+len(sec1P256Tail)], sec1P256Tail) {
				return fmt.Sprintf("ECPrivateKey at %#x", base+uint64(off+i))
			}
			off += i + 1
		}
		return ""
	})
}

// scanMemory calls match with each readable, private or anonymous mapping of pid (not the
// files mapped from disk: program text and libraries) until it reports a find.
func scanMemory(pid int, match func(b []byte, base uint64) string) (string, error) {
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return "", err
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return "", err
	}
	defer mem.Close()
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[1][0] != 'r' || f[1][1] != 'w' {
			continue // read-only mappings are file contents
		}
		if len(f) > 5 && (f[5] == "[vvar]" || f[5] == "[vsyscall]") {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err != nil {
			return "", err
		}
		b := make([]byte, hi-lo)
		n, _ := mem.ReadAt(b, int64(lo))
		if where := match(b[:n], lo); where != "" {
			return where, nil
		}
	}
	return "", sc.Err()
}
