package main

// Defects found by testing the config, exec, verify and attest commands from their
// documentation alone (bounded inputs, usage errors, the replacement ceremony).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/swtpmtest"
)

// endlessFIFO makes a FIFO that serves n zero bytes and then stays open without an end of
// file, like a device or a pipe whose writer never finishes: a command that reads its input
// to the end never returns, one that bounds its read refuses it. n bounds the memory a command
// that does not bound its read can take before the test gives up on it.
func endlessFIFO(t *testing.T, dir, name string, n int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	// O_RDWR opens without waiting for a reader (Linux), and keeps the FIFO from ever
	// reporting end of file to the command.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		chunk := make([]byte, 64<<10)
		for left := n; left > 0; left -= len(chunk) {
			if _, err := f.Write(chunk[:min(left, len(chunk))]); err != nil {
				return // closed by the cleanup
			}
		}
	}()
	t.Cleanup(func() { f.Close() })
	return p
}

// TestInputFilesBounded gives every file argument of verify and config an input that has no
// end: each command must stop reading past its limit and refuse the input with that limit,
// not read until memory runs out (palisade verify /dev/zero took 23 GB in 6 s).
func TestInputFilesBounded(t *testing.T) {
	dir := t.TempDir()
	mustCLI(t, dir, "config", "init", "--dir", dir, "--state-dir", filepath.Join(dir, "state"))
	writeDoc(t, filepath.Join(dir, "c.json"), 1, nil, nil, nil)
	mustCLI(t, dir, "config", "sign", "--key", "admin.key", "c.json")
	const big = 3 << 20 // more than any limit below
	d := fakeMeas("x")
	for _, tc := range []struct {
		name string
		args func(fifo string) []string
		want string
	}{
		{"verify", func(f string) []string { return []string{"verify", f, "--nonce", "00", "--pal", d, "--visor", d} }, "the limit of evidence"},
		{"verify --ak", func(f string) []string {
			return []string{"verify", "c.cose", "--nonce", "00", "--pal", d, "--visor", d, "--ak", f}
		}, "the limit of a PEM key file"},
		{"verify --ek-roots", func(f string) []string {
			return []string{"verify", "c.cose", "--nonce", "00", "--pal", d, "--visor", d, "--ek-roots", f}
		}, "the limit of a PEM certificate file"},
		{"config sign", func(f string) []string { return []string{"config", "sign", "-o", "x.cose", f} }, "the limit of a configuration document"},
		{"config sign --key", func(f string) []string { return []string{"config", "sign", "--key", f, "c.json"} }, "the limit of a PEM key file"},
		{"config verify", func(f string) []string { return []string{"config", "verify", f} }, "the limit of a signed configuration"},
		{"config verify --pub", func(f string) []string { return []string{"config", "verify", "--pub", f, "c.cose"} }, "the limit of a PEM key file"},
		{"config show", func(f string) []string { return []string{"config", "show", "--pub", "admin.pub", f} }, "the limit of a signed configuration"},
		{"config show json", func(f string) []string { return []string{"config", "show", f + ".json"} }, "the limit of a configuration document"},
		{"config plan", func(f string) []string { return []string{"config", "plan", "--state-dir", "state", f} }, "the limit of a signed configuration"},
		{"config plan --from", func(f string) []string {
			return []string{"config", "plan", "--state-dir", "state", "--from", f, "c.cose"}
		}, "the limit of a signed configuration"},
		{"config apply", func(f string) []string { return []string{"config", "apply", "--state-dir", "state", f} }, "the limit of a signed configuration"},
		{"config authorize-visor", func(f string) []string {
			return []string{"config", "authorize-visor", "--key", f, "--visor", d, "-o", "auth"}
		}, "the limit of a PEM key file"},
		{"config secret put", func(f string) []string { return []string{"config", "secret", "put", "--state-dir", "state", "s", f} }, "the limit of a secret"},
		{"config secret --master-key", func(f string) []string {
			return []string{"config", "secret", "list", "--state-dir", "state", "--master-key", f}
		}, "the limit of a master key file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := strings.ReplaceAll(tc.name, " ", "_")
			fifo := endlessFIFO(t, dir, name, big)
			if strings.HasSuffix(tc.name, "json") {
				// config show takes a .json argument as an unsigned document.
				os.Rename(fifo, fifo+".json")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestCfgCLIHelper$", "--"}, tc.args(fifo)...)...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "PALISADE_CFG_CLI=1")
			var errb bytes.Buffer
			cmd.Stderr = &errb
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("palisade %s: still reading an input without end after 20 s (no bound)", tc.name)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("palisade %s: %v, stderr %q; want status 1 and %q", tc.name, err, errb.String(), tc.want)
			}
		})
	}
}

// TestReadECKeyNamesWhatItGot: --ak takes a PEM PUBLIC KEY; anything else is refused naming the
// PEM type it found (a certificate gave a raw asn1 "structure error ... tags don't match").
func TestReadECKeyNamesWhatItGot(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 1024)
	pub := func(k any) []byte {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ec.PublicKey, ec)
	if err != nil {
		t.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	for _, tc := range []struct {
		name string
		pem  []byte
		want string // "" accepted
	}{
		{"ec public key", pub(&ec.PublicKey), ""},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), `PEM "CERTIFICATE", want a PEM "PUBLIC KEY"`},
		{"private key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), `PEM "PRIVATE KEY", want a PEM "PUBLIC KEY"`},
		{"rsa", pub(&rs.PublicKey), "not an ECDSA public key"},
		{"garbage in block", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")}), "not a DER SubjectPublicKeyInfo"},
		{"no pem", []byte("hello"), "no PEM block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(p, tc.pem, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := readECKey(p)
			switch {
			case tc.want == "" && (err != nil || !k.Equal(&ec.PublicKey)):
				t.Fatalf("readECKey: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("readECKey: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestExecSecretSpecsCheckedFirst: every --secret is checked before the state is opened or
// anything released, so a bad one is a usage error (status 2) naming the rule, whatever the
// state (it was found only after the measurement, in the middle of releasing secrets, and a
// missing state hid it).
func TestExecSecretSpecsCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		specs []string
		want  string
	}{
		{[]string{"token"}, `--secret "token": want S:FD or S:PATH`},
		{[]string{":5"}, `--secret ":5": want S:FD or S:PATH`},
		{[]string{"token:"}, `--secret "token:": want S:FD or S:PATH`},
		{[]string{"token:2"}, `--secret "token:2": descriptor must be 3..1023 and used once`},
		{[]string{"token:1024"}, `--secret "token:1024": descriptor must be 3..1023 and used once`},
		{[]string{"token:5", "other:5"}, `--secret "other:5": descriptor must be 3..1023 and used once`},
		{[]string{"a:/dev/shm/x", "b:/dev/shm/x"}, `--secret "b:/dev/shm/x": path /dev/shm/x used twice`},
	} {
		t.Run(strings.Join(tc.specs, ","), func(t *testing.T) {
			args := []string{"exec", "app", "--state-dir", filepath.Join(dir, "no-state")}
			for _, s := range tc.specs {
				args = append(args, "--secret", s)
			}
			code, _, errs := cfgCLI(t, dir, append(args, "--", "/bin/true")...)
			if code != 2 || !strings.Contains(errs, tc.want) {
				t.Fatalf("status %d, %q; want 2 and %q", code, errs, tc.want)
			}
		})
	}
}

// FuzzParseSecretSpecs: the --secret parser never crashes, and what it accepts is one secret
// name and either a descriptor in 3..1023 or a path, no descriptor or path twice.
func FuzzParseSecretSpecs(f *testing.F) {
	f.Add("token:5", "other:/dev/shm/x")
	f.Add("token:5", "token:5")
	f.Add("a:+7", "b:007")
	f.Add(":", "x:-1")
	f.Fuzz(func(t *testing.T, a, b string) {
		specs, err := parseSecretSpecs([]string{a, b})
		if err != nil {
			return
		}
		fds, paths := map[int]bool{}, map[string]bool{}
		for _, s := range specs {
			switch {
			case s.name == "" || strings.Contains(s.name, ":"):
				t.Fatalf("secret name %q accepted", s.name)
			case s.path == "" && (s.fd < 3 || s.fd > 1023 || fds[s.fd]):
				t.Fatalf("descriptor %d accepted", s.fd)
			case s.path != "" && (s.fd != 0 || paths[s.path]):
				t.Fatalf("path %q accepted with fd %d", s.path, s.fd)
			}
			fds[s.fd], paths[s.path] = s.path == "", s.path != ""
		}
	})
}

// TestAuthorizeVisorPCR: --pcr is a PCR number, 1..23, refused as a usage error otherwise.
// --pcr 0 wrote an authorization for PCR 23 (tpm.AuthorizeVisor's "0: the default") while
// printing "(PCR 0)", and 24 or 99 were status 1 after reading the key.
func TestAuthorizeVisorPCR(t *testing.T) {
	dir := t.TempDir()
	mustCLI(t, dir, "config", "init", "--dir", dir, "--alg", "es256")
	v := fakeMeas("visor")
	for _, tc := range []struct {
		pcr  string
		code int
		want string
	}{
		{"16", 0, "(PCR 16)"},
		{"23", 0, "(PCR 23)"},
		{"0", 2, "--pcr 0: want a PCR number 1..23"},
		{"24", 2, "--pcr 24: want a PCR number 1..23"},
		{"-1", 2, "--pcr -1: want a PCR number 1..23"},
	} {
		t.Run(tc.pcr, func(t *testing.T) {
			out := filepath.Join(dir, "auth"+tc.pcr)
			code, stdout, errs := cfgCLI(t, dir, "config", "authorize-visor", "--key", "admin.key", "--visor", v, "--pcr", tc.pcr, "-o", out)
			if code != tc.code || !strings.Contains(stdout+errs, tc.want) {
				t.Fatalf("status %d, %q %q; want %d and %q", code, stdout, errs, tc.code, tc.want)
			}
			b, err := os.ReadFile(out)
			switch {
			case tc.code != 0 && err == nil:
				t.Fatal("an authorization was written")
			case tc.code == 0 && (err != nil || len(b) < 3 || b[0] != 0xa3 || b[1] != 0x01 || fmt.Sprint(b[2]) != tc.pcr):
				t.Fatalf("authorization %x (%v): want PCR %s in key 1", b, err, tc.pcr)
			}
		})
	}
}

// TestConfigUsageErrorShowsSubcommand: bad usage of a config subcommand prints that
// subcommand's synopsis (it printed the whole config command's list of subcommands).
func TestConfigUsageErrorShowsSubcommand(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "apply"}, "palisade config apply: want one NEW.cose\nusage: palisade config apply [--state-dir DIR]"},
		{[]string{"config", "init", "--alg", "rsa"}, "usage: palisade config init [--dir DIR] [--alg ed25519|es256]"},
		{[]string{"config", "secret", "get"}, "usage: palisade config secret put|list"},
		{[]string{"config", "sign", "a.json", "b.json"}, "usage: palisade config sign --key ADMIN.key"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errs := cfgCLI(t, dir, tc.args...)
			if code != 2 || !strings.Contains(errs, tc.want) || strings.Contains(errs, "SUBCOMMAND") {
				t.Fatalf("status %d, %q; want 2 and %q", code, errs, tc.want)
			}
		})
	}
}

// TestReplaceAdminRefusesSameKey: "replacing" the anchored administrator key by itself was
// accepted: it folded a replacement record into the TPM's history digest, so the state that
// key had applied no longer matched its anchor ("rewritten or replaced") and every command on
// it was refused. It is a usage error now, and nothing changes.
func TestReplaceAdminRefusesSameKey(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	dev := swtpmtest.Start(t).Device()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	out := mustCLI(t, dir, "config", "init", "--dir", dir, "--state-dir", state)
	kid := regexp.MustCompile(`administrator key ([0-9a-f]{64})`).FindStringSubmatch(out)
	if kid == nil {
		t.Fatalf("no key id in %q", out)
	}
	writeDoc(t, filepath.Join(dir, "v1.json"), 1, nil, nil, nil)
	mustCLI(t, dir, "config", "sign", "--key", "admin.key", "v1.json")
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "--tpm", dev, "v1.cose")

	code, _, errs := cfgCLI(t, dir, "config", "replace-admin", "--tpm", dev, "--state-dir", filepath.Join(dir, "new"),
		"--admin-pub", "admin.pub", "--replacing", kid[1])
	if code != 2 || !strings.Contains(errs, "is the key it replaces") {
		t.Fatalf("replace-admin by the same key: status %d, %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Fatal("a new state directory was made")
	}
	mustCLI(t, dir, "config", "history", "--state-dir", state, "--tpm", dev)
}
