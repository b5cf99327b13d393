package config

import (
	"crypto"
	"crypto/sha256"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// meas makes a deterministic measurement from a label.
func meas(label string) Measurement { return sha256.Sum256([]byte(label)) }

func newKey(t testing.TB, alg string) crypto.Signer {
	t.Helper()
	k, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSign(t testing.TB, c *Config, k crypto.Signer) []byte {
	t.Helper()
	raw, err := Sign(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// baseConfig is version v of a small configuration: a signer PAL and a web app share the
// tls-key secret, the db app has db-pass.
func baseConfig(v uint64) *Config {
	return &Config{
		Version: v,
		Visors:  []Measurement{meas("visor-1")},
		PALs:    map[string][]Measurement{"signer": {meas("signer-1")}},
		Apps:    map[string][]Measurement{"web": {meas("web-1")}, "db": {meas("db-1")}},
		Secrets: map[string][]string{"tls-key": {"signer", "web"}, "db-pass": {"db"}},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}
