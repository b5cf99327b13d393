package tpm

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVisorMeasurementRecipe: the shell recipe of docs/attestation.md §3.2, run with openssl,
// gives MeasureVisor's value, with a configuration file and without one (empty bytes).
func TestVisorMeasurementRecipe(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: ", err)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "palisaded")
	conf := filepath.Join(dir, "config.json")
	if err := os.WriteFile(exe, []byte("a visor executable"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(`{"rot": "tpm:/dev/tpmrm0"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, confPath string }{{"with a file", conf}, {"without a file", "/dev/null"}} {
		t.Run(c.name, func(t *testing.T) {
			recipe := `{ printf 'palisade.visor.v1\0'; openssl dgst -sha256 -binary "$1"; openssl dgst -sha256 -binary "$2"; } | openssl dgst -sha256 -r`
			out, err := exec.Command("sh", "-c", recipe, "sh", exe, c.confPath).Output()
			if err != nil {
				t.Fatal(err)
			}
			confBytes, _ := os.ReadFile(c.confPath)
			want, err := MeasureVisor(bytes.NewReader([]byte("a visor executable")), confBytes)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(string(out))[0]; got != hex.EncodeToString(want[:]) {
				t.Fatalf("recipe %s, MeasureVisor %x", got, want)
			}
		})
	}
}
