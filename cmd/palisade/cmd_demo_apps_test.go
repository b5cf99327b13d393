package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoApps runs `palisade demo tls` and `palisade demo ssh` end to end (private daemon,
// PALs built from source, curl and ssh when installed, Go clients otherwise).
func TestDemoApps(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte("tr0ub4dor&3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"demo", "tls", "--alg", "rsa2048"}, []string{"it returned only the public key", "signed by the PAL", "this TLS handshake was signed inside a PAL", "demo complete"}},
		{[]string{"demo", "tls", "--variant", "sealed"}, []string{"this TLS handshake was signed inside a PAL", "demo complete"}},
		{[]string{"demo", "ssh", "--host-key", "pal"}, []string{"host key: ECDSA P-256 µTPM key object", "ecdsa-sha2-nistp256", `→ "alice\n", ok`}},
		{[]string{"demo", "ssh", "--password-file", pwFile, "--user", "bob"}, []string{`→ "bob\n", ok`, "right password during the lockout → refused"}},
		{[]string{"demo", "ssh", "--max-failures", "2"}, []string{"attempt 3 with a wrong password", "right password during the lockout → refused", "demo complete"}},
		{[]string{"demo", "ssh"}, []string{`→ "alice\n", ok`, "attempt 4 with a wrong password → refused", "right password during the lockout → refused", "too many failed attempts", "demo complete"}},
	} {
		code, out, errOut := capture(t, tt.args...)
		if code != 0 {
			t.Fatalf("%v: status %d\n%s\n%s", tt.args, code, out, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
	if code, _, _ := capture(t, "demo", "tls", "--variant", "nope"); code != 2 {
		t.Errorf("bad --variant: status %d, want 2", code)
	}
	if code, _, _ := capture(t, "demo", "ssh", "--max-failures", "0"); code != 2 {
		t.Errorf("--max-failures 0: status %d, want 2", code)
	}
}
