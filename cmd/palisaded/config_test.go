package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/config"
)

func TestExampleConfig(t *testing.T) {
	c, raw, err := loadConfig("../../dist/palisaded.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) == 0 || c.Rot != "tpm:/dev/tpmrm0" || len(c.Access.Shares) != 1 || c.Access.Shares[0].Name != "tlskey" {
		t.Fatalf("example config: %+v", c)
	}
	if err := c.Access.Check(); err != nil {
		t.Fatal(err)
	}
	if m, err := c.socketMode(); err != nil || m != 0o660 {
		t.Fatalf("socket mode %v %v", m, err)
	}
	if d, err := c.shutdownTimeout(); err != nil || d != 10*time.Second {
		t.Fatalf("shutdown timeout %v %v", d, err)
	}
	if err := checkMetricsAddr(c.Metrics); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown field": `{"sokcet": "/tmp/x"}`,
		"bad json":      `{`,
		"unknown op":    `{"access": {"shares": [{"owner": 1, "name": "x", "uids": [2], "ops": ["sudo"]}]}}`,
	} {
		p := filepath.Join(dir, "c.json")
		os.WriteFile(p, []byte(body), 0o600)
		c, _, err := loadConfig(p)
		if err == nil {
			err = c.Access.Check()
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, a := range []string{"0.0.0.0:9464", "10.0.0.1:80", ":9464", "example.com:80", "nonsense"} {
		if checkMetricsAddr(a) == nil {
			t.Errorf("metrics address %q accepted", a)
		}
	}
	for _, a := range []string{"127.0.0.1:9464", "[::1]:9464", "localhost:1"} {
		if err := checkMetricsAddr(a); err != nil {
			t.Errorf("metrics address %q: %v", a, err)
		}
	}
	c := defaultConfig()
	for _, n := range []int{-1, maxKeysPerOwnerLimit + 1} {
		c.MaxKeysPerOwner = n
		if _, err := c.maxKeysPerOwner(); err == nil || !strings.Contains(err.Error(), "max_keys_per_owner") {
			t.Errorf("max_keys_per_owner %d: %v", n, err)
		}
	}
	c.MaxKeysPerOwner = 0
	for _, m := range []string{"999", "rw", "01777"} {
		c.SocketMode = m
		if _, err := c.socketMode(); err == nil {
			t.Errorf("socket mode %q accepted", m)
		}
	}
}

// TestConfigStrictJSON: what encoding/json takes silently is refused, naming the rule. A
// repeated key kept the last value without a word (`"admins": [1000], "admins": []` revoked
// an administrator), encoding/json matches keys case-insensitively (so "Access" repeats
// "access"), and a second document after the first was ignored although the file's bytes are
// what the visor measurement covers.
func TestConfigStrictJSON(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"repeated key", `{"state_dir": "/a", "state_dir": "/b"}`, `duplicate key "state_dir"`},
		{"repeated key in access", `{"access": {"admins": [1000], "admins": []}}`, `duplicate key "admins" in access`},
		{"repeated key in a share", `{"access": {"shares": [{"owner": 1, "name": "a", "name": "b"}]}}`, `duplicate key "name" in access.shares`},
		{"repeated key after unescaping", `{"rot": "none", "r\u006ft": "tpm:/dev/tpm0"}`, `duplicate key "rot"`},
		{"repeated key in another case", `{"access": {"admins": [1]}, "Access": {}}`, `duplicate key "Access"`},
		{"second document", `{"rot": "none"} {"rot": "tpm:/dev/tpm0"}`, "trailing data after the configuration"},
		{"trailing garbage", `{"rot": "none"} x`, "trailing data after the configuration"},
	} {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := loadConfig(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming %s and saying %q", tc.name, err, p, tc.want)
		}
	}
	// Whitespace after the document is not trailing data; the same key in two objects is not
	// a repetition.
	p := filepath.Join(dir, "ok.json")
	ok := `{"access": {"shares": [{"owner": 1, "name": "a"}, {"owner": 2, "name": "b"}]}}` + "\n\n"
	if err := os.WriteFile(p, []byte(ok), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadConfig(p); err != nil {
		t.Fatal(err)
	}
}

func FuzzLoadConfig(f *testing.F) {
	b, err := os.ReadFile("../../dist/palisaded.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "c.json")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, _, err := loadConfig(p)
		if err != nil {
			return
		}
		_ = c.Access.Check()
		_, _ = c.socketMode()
		_, _ = c.shutdownTimeout()
		_, _ = c.maxKeysPerOwner()
		_ = checkMetricsAddr(c.Metrics)
	})
}

func TestAuthorityConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, k crypto.PublicKey) string {
		b, err := config.MarshalPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ec, _ := config.GenerateKey("es256")
	ed, _ := config.GenerateKey("ed25519")
	ecPath, edPath := write("ec.pub", ec.Public()), write("ed.pub", ed.Public())
	auth := filepath.Join(dir, "a")
	os.WriteFile(auth, []byte("x"), 0o600)

	c := Config{Authority: ecPath, Authorizations: []string{auth}}
	k, auths, err := c.authority()
	if err != nil || !k.Equal(ec.Public()) || len(auths) != 1 || string(auths[0]) != "x" {
		t.Fatalf("authority: %v %q %v", k, auths, err)
	}
	for name, c := range map[string]Config{
		"ed25519":                {Authority: edPath},
		"missing file":           {Authority: filepath.Join(dir, "none")},
		"authorizations, no key": {Authorizations: []string{auth}},
		"missing authorization":  {Authority: ecPath, Authorizations: []string{filepath.Join(dir, "none")}},
		"not a key":              {Authority: auth},
	} {
		if _, _, err := c.authority(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if k, _, err := (&Config{}).authority(); k != nil || err != nil {
		t.Fatalf("no authority: %v %v", k, err)
	}
	if _, err := openRoot(Config{Rot: "none", StateDir: dir, Authority: ecPath}, nil); err == nil {
		t.Fatal("authority with rot none accepted")
	}
	if got := (&Config{StateDir: "/s"}).configStateDir(); got != "/s/config" {
		t.Fatalf("config state dir %q", got)
	}
}

func TestEKChainConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "intermediate"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	two := write("two.pem", cert+cert)
	if chain, err := (&Config{EKChain: two}).ekChain(); err != nil || len(chain) != 2 {
		t.Fatalf("two certificates: %d, %v", len(chain), err)
	}
	for name, path := range map[string]string{
		"missing file":  filepath.Join(dir, "none"),
		"empty":         write("empty.pem", ""),
		"not PEM":       write("der", string(der)),
		"a key":         write("key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}))),
		"bad DER":       write("bad.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}))),
		"trailing junk": write("junk.pem", cert+"junk"),
	} {
		if _, err := (&Config{EKChain: path}).ekChain(); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := openRoot(Config{Rot: "none", StateDir: dir, EKChain: two}, nil); err == nil {
		t.Fatal("ek_chain with rot none accepted")
	}
}

// FuzzEKChainConfig: whatever the ek_chain file holds, ekChain returns DER certificates that
// parse, or an error; it never panics.
func FuzzEKChainConfig(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("junk"))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "chain.pem")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		chain, err := (&Config{EKChain: p}).ekChain()
		if err != nil {
			return
		}
		if len(chain) == 0 {
			t.Fatal("no error and no certificate")
		}
		for _, der := range chain {
			if _, err := x509.ParseCertificate(der); err != nil {
				t.Fatal(err)
			}
		}
	})
}
