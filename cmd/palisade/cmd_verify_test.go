package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/rot/tpm"
	"github.com/palisade-project/palisade/internal/swtpmtest"
	"github.com/palisade-project/palisade/internal/utpm"
)

// capture runs the CLI with args and returns its exit status, stdout and stderr.
func capture(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	dir := t.TempDir()
	out, _ := os.Create(filepath.Join(dir, "out"))
	errf, _ := os.Create(filepath.Join(dir, "err"))
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = out, errf
	code := run(args)
	os.Stdout, os.Stderr = oldOut, oldErr
	out.Close()
	errf.Close()
	o, _ := os.ReadFile(out.Name())
	e, _ := os.ReadFile(errf.Name())
	return code, string(o), string(e)
}

func TestVerifyCommand(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.WithEKCert())
	dir := t.TempDir()
	exe := filepath.Join(dir, "palisaded")
	os.WriteFile(exe, []byte("visor"), 0o700)
	blk, _ := pem.Decode(sw.IssuerPEM)
	root, err := tpm.Open(context.Background(), tpm.Config{Device: sw.Device(), StateDir: dir,
		Visor: tpm.VisorInputs{Executable: exe}, EKChain: [][]byte{blk.Bytes}})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	plat, err := utpm.NewPlatform(root.Platform())
	if err != nil {
		t.Fatal(err)
	}
	pal := utpm.Digest{0xab}
	nonce := []byte{1, 2, 3, 4}
	q, err := plat.NewTPM(pal).Quote(nonce, []byte("hello"), 1)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := attest.Assemble(context.Background(), root, q)
	if err != nil {
		t.Fatal(err)
	}
	evFile := filepath.Join(dir, "evidence.cbor")
	os.WriteFile(evFile, ev, 0o600)
	// The swtpm local CA's root alone: the evidence carries the intermediate.
	roots := filepath.Join(dir, "roots.pem")
	os.WriteFile(roots, sw.RootCAPEM, 0o600)
	// Another TPM vendor's root.
	otherRoots := filepath.Join(dir, "other-roots.pem")
	os.WriteFile(otherRoots, swtpmtest.Start(t, swtpmtest.WithEKCert()).RootCAPEM, 0o600)
	res, err := attest.Verify(ev, attest.Options{Nonce: nonce, PAL: pal, Visor: root.Visor()})
	if err != nil {
		t.Fatal(err)
	}
	akDER, _ := x509.MarshalPKIXPublicKey(res.AKPublic)
	akFile := filepath.Join(dir, "ak.pem")
	os.WriteFile(akFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: akDER}), 0o600)

	visor := root.Visor()
	ok := []string{"verify", evFile, "--nonce", hex.EncodeToString(nonce), "--pal", hex.EncodeToString(pal[:]),
		"--visor", hex.EncodeToString(visor[:])}
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"valid", ok, 0, "rooted in a TPM"},
		{"valid with EK roots and AK pin", append(ok, "--ek-roots", roots, "--ak", akFile), 0, "EK certificate chains to --ek-roots"},
		{"EK roots of another vendor", append(ok, "--ek-roots", otherRoots), 1, "check ek-certificate failed"},
		{"flags first", []string{"verify", "--nonce", hex.EncodeToString(nonce), "--pal", hex.EncodeToString(pal[:]),
			"--visor", hex.EncodeToString(visor[:]), evFile}, 0, "rooted in a TPM"},
		{"wrong nonce", append(append([]string{}, ok[:3]...), append([]string{"05"}, ok[4:]...)...), 1, "check nonce failed: want 05, got 01020304"},
		{"wrong PAL", []string{"verify", evFile, "--nonce", "01020304", "--pal", strings.Repeat("00", 32),
			"--visor", hex.EncodeToString(visor[:])}, 1, "check pal failed"},
		{"wrong visor", []string{"verify", evFile, "--nonce", "01020304", "--pal", hex.EncodeToString(pal[:]),
			"--visor", strings.Repeat("11", 32)}, 1, "check visor failed"},
		{"missing --pal", []string{"verify", evFile, "--nonce", "01"}, 2, "--pal"},
		{"missing --nonce", []string{"verify", evFile, "--pal", hex.EncodeToString(pal[:])}, 2, "--nonce is required"},
		{"no file", []string{"verify", "--nonce", "01"}, 2, "evidence file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := capture(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.contains) {
				t.Fatalf("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwant it to contain %q", code, tc.code, out, errOut, tc.contains)
			}
			t.Logf("exit %d\n%s%s", code, out, errOut)
		})
	}
}
