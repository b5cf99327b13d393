package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

func TestParseSubject(t *testing.T) {
	for _, tc := range []struct {
		in      string
		cn      string
		org     []string
		wantErr string
	}{
		{in: "CN=www.example.com", cn: "www.example.com"},
		{in: "cn = a , O=Example\\, Inc., O=Second", cn: "a", org: []string{"Example, Inc.", "Second"}},
		{in: "", wantErr: "empty subject"},
		{in: "CN=a,CN=b", wantErr: "CN given twice"},
		{in: "CN", wantErr: "KEY=VALUE"},
		{in: "CN=", wantErr: "KEY=VALUE"},
		{in: "XX=y", wantErr: "attribute"},
	} {
		n, err := parseSubject(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want an error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || n.CommonName != tc.cn || strings.Join(n.Organization, "|") != strings.Join(tc.org, "|") {
			t.Errorf("%q: %+v %v", tc.in, n, err)
		}
	}
}

func TestParseSANs(t *testing.T) {
	var (
		dns, emails []string
		ips         []net.IP
		uris        []*url.URL
	)
	if err := parseSANs("DNS:a.example, ip:127.0.0.1,IP:::1,EMAIL:x@y,URI:spiffe://t/w", &dns, &ips, &emails, &uris); err != nil {
		t.Fatal(err)
	}
	if len(dns) != 1 || len(ips) != 2 || len(emails) != 1 || len(uris) != 1 {
		t.Fatalf("%v %v %v %v", dns, ips, emails, uris)
	}
	for _, bad := range []string{"a.example", "IP:999.1.1.1", "URI:relative", "FOO:bar", "DNS:"} {
		if err := parseSANs(bad, &dns, &ips, &emails, &uris); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"CN=a,O=b", "CN=a\\,b", "\\", "=,=", "C=DE,ST=Berlin,L=B,OU=x,SERIALNUMBER=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSubject(s)
		if err == nil && n.CommonName == "" && len(n.Organization)+len(n.OrganizationalUnit)+len(n.Country)+
			len(n.Locality)+len(n.Province) == 0 && n.SerialNumber == "" {
			t.Fatalf("%q accepted as an empty name", s)
		}
	})
}

func FuzzParseSANs(f *testing.F) {
	for _, s := range []string{"DNS:a,IP:1.2.3.4", "URI:https://x/y", "EMAIL:a@b", ":", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var (
			dns, emails []string
			ips         []net.IP
			uris        []*url.URL
		)
		_ = parseSANs(s, &dns, &ips, &emails, &uris)
	})
}

func FuzzPKCS8FromPEM(f *testing.F) {
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMA==\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = pkcs8FromPEM(b) })
}

// TestKeyFlagValueExitStatus: a bad flag value of a key sub-command (or of ssh-agent, which
// shares the user lookup) exits with status 2, the usage error of docs/cli.md, with a message
// naming the flag and its rule, and changes nothing in the daemon. A user or group that does
// not exist exited 1, as a failure; --max-tries past 32 bits on key pin wrapped around (4294967297
// set 1 try); an unknown --alg and a nonce over 64 bytes went to the daemon and came back 7.
func TestKeyFlagValueExitStatus(t *testing.T) {
	e := newTestEnv(t) // for its directory; the key commands need palisaded's key service
	e.socket = keyDaemon(t)
	sock := []string{"--socket", e.socket}
	if code, out, errOut := capture(t, append([]string{"key", "create", "k", "--alg", "ed25519"}, sock...)...); code != 0 {
		t.Fatalf("key create: status %d\n%s%s", code, out, errOut)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := e.file(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	evidence := e.file(t, "evidence", []byte("not checked: the nonce is refused first"))
	zeros := strings.Repeat("0", 64)
	nonce65 := strings.Repeat("ab", 65)
	for _, tt := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"key", "create", "k2", "--allow-user", "nosuchuser"}, exitUsage, "--allow-user nosuchuser: no such user"},
		{[]string{"key", "create", "k2", "--allow-group", "nosuchgroup"}, exitUsage, "--allow-group nosuchgroup: no such group"},
		{[]string{"key", "create", "k2", "--allow-user", "root,nosuchuser"}, exitUsage, "--allow-user nosuchuser: no such user"},
		{[]string{"key", "create", "k2", "--allow-user", "4294967296"}, exitUsage, "--allow-user 4294967296: user id out of range"},
		{[]string{"key", "create", "k2", "--allow-group", "99999999999"}, exitUsage, "--allow-group 99999999999: group id out of range"},
		{[]string{"key", "create", "k2", "--alg", "dsa"}, exitUsage, `--alg "dsa": want ecdsa-p256, ed25519, rsa-2048 or rsa-3072`},
		{[]string{"key", "create", "k2", "--max-tries", "256"}, exitUsage, "--max-tries 256: want 1..255"},
		{[]string{"key", "create", "k2", "--max-tries", "many"}, exitUsage, "invalid value"},
		{[]string{"key", "import", "k2", keyPEM, "--allow-user", "nosuchuser"}, exitUsage, "--allow-user nosuchuser: no such user"},
		{[]string{"key", "import", "k2", keyPEM, "--allow-group", "nosuchgroup"}, exitUsage, "--allow-group nosuchgroup: no such group"},
		{[]string{"key", "import", "k2", keyPEM, "--max-tries", "300"}, exitUsage, "--max-tries 300: want 1..255"},
		{[]string{"key", "access", "k", "--allow-user", "nosuchuser"}, exitUsage, "--allow-user nosuchuser: no such user"},
		{[]string{"key", "access", "k", "--allow-group", "nosuchgroup"}, exitUsage, "--allow-group nosuchgroup: no such group"},
		{[]string{"key", "pin", "k", "--max-tries", "256"}, exitUsage, "--max-tries 256: want 1..255"},
		{[]string{"key", "pin", "k", "--max-tries", "4294967297"}, exitUsage, "--max-tries 4294967297: want 1..255"},
		{[]string{"key", "attest", "k", "--nonce", nonce65}, exitUsage, "want 1..64 bytes in hex"},
		{[]string{"key", "attest", "k", "--nonce", "xyz"}, exitUsage, "want 1..64 bytes in hex"},
		{[]string{"key", "verify", evidence, "--nonce", nonce65, "--visor", zeros}, exitUsage, "(1..64 bytes)"},
		{[]string{"key", "verify", evidence, "--nonce", "00", "--visor", "00"}, exitUsage, "--visor: want 64 hex digits"},
		{[]string{"key", "csr", "k", "--subject", "XX=y"}, exitUsage, "--subject"},
		{[]string{"key", "selfsign", "k", "--subject", "CN=a", "--days", "0"}, exitUsage, "--days 0"},
		{[]string{"key", "public", "k", "--der", "--ssh"}, exitUsage, "exclude each other"},
		{[]string{"ssh-agent", "-a", e.file(t, "unused", nil) + ".sock", "--allow-uid", "nosuchuser"}, exitUsage, "--allow-uid nosuchuser: no such user"},
		{[]string{"ssh-agent", "-a", e.file(t, "unused", nil) + ".sock", "--pin-cache", "-1s"}, exitUsage, "--pin-cache -1s"},
		// Good values pass: names and numbers, known to every system.
		{[]string{"key", "create", "k3", "--allow-user", "root,0", "--allow-group", "root", "--max-tries", "255"}, exitOK, ""},
		{[]string{"key", "access", "k3", "--allow-user", "1", "--allow-group", "0"}, exitOK, ""},
		{[]string{"key", "pin", "k3", "--max-tries", "255"}, exitOK, ""},
		{[]string{"key", "attest", "k3", "--nonce", strings.Repeat("ab", 64), "-o", e.file(t, "attestation", nil)}, exitOK, ""},
	} {
		args := tt.args
		if args[0] == "key" && args[1] != "verify" || args[0] == "ssh-agent" {
			args = append(append([]string{}, args...), sock...)
		}
		code, out, errOut := capture(t, args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("palisade %s: status %d, want %d and %q\n%s%s", strings.Join(tt.args, " "), code, tt.code, tt.want, out, errOut)
		}
	}
	// Nothing refused reached the daemon: k2 was not made, and k's access is as it was.
	_, out, _ := capture(t, append([]string{"key", "list"}, sock...)...)
	if strings.Contains(out, "k2 ") {
		t.Errorf("a refused key create or import made key k2:\n%s", out)
	}
	if _, out, _ := capture(t, append([]string{"key", "show", "k"}, sock...)...); !regexp.MustCompile(`(?m)^allowed uids +-$`).MatchString(out) {
		t.Errorf("a refused key access changed key k:\n%s", out)
	}
}

// keyDaemon builds and starts a real palisaded (development root of trust, wasm engine), which
// has the key service the test daemon of newTestEnv lacks, and returns its socket. It is
// stopped with SIGTERM at the test's end.
func keyDaemon(t *testing.T) string {
	t.Helper()
	root, err := apps.SourceRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/palisaded")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build palisaded: %v\n%s", err, out)
	}
	socket := filepath.Join(dir, "run", "palisade.sock")
	cfg, _ := json.Marshal(map[string]any{
		"state_dir": filepath.Join(dir, "state"), "socket": socket, "rot": "none", "engines": []string{"wasm"},
	})
	cfgPath := filepath.Join(dir, "palisaded.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(filepath.Join(dir, "palisaded"), "--config", cfgPath)
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("palisaded log:\n%s", log.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := client.Dial(context.Background(), socket)
		if err == nil {
			_, err = c.Health(context.Background())
			c.Close()
			if err == nil {
				return socket
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("palisaded exited: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("palisaded did not come up: %v\n%s", err, log.String())
		}
	}
}

// FuzzIDs: ids never panics; it resolves each non-empty field to one id or refuses the list;
// an all-digit field is taken as the id it spells, or refused as out of range, as a usage
// error, never looked up as a name.
func FuzzIDs(f *testing.F) {
	for _, s := range []string{"root", "0,1", " 0 , root ,", "4294967295", "4294967296", "nosuchuser", ",,", "-1", "1e3"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, list string, group bool) {
		out, err := ids("allow-user", list, group)
		var fields []string
		for _, fld := range strings.Split(list, ",") {
			if fld = strings.TrimSpace(fld); fld != "" {
				fields = append(fields, fld)
			}
		}
		if err != nil {
			if !strings.Contains(err.Error(), "--allow-user ") {
				t.Fatalf("%q: error %v does not name the flag", list, err)
			}
			return
		}
		if len(out) != len(fields) {
			t.Fatalf("%q: %d ids for %d fields", list, len(out), len(fields))
		}
		for i, fld := range fields {
			if strings.Trim(fld, "0123456789") != "" {
				continue
			}
			if n, err := strconv.ParseUint(fld, 10, 32); err != nil || uint32(n) != out[i] {
				t.Fatalf("%q: field %q gave id %d", list, fld, out[i])
			}
		}
	})
}
