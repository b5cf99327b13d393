package pkcs11_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// keyRow is a line of `palisade key list`: NAME ALG ORIGIN OWNER ...
func keyRows(t *testing.T, e *env) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	for _, l := range strings.Split(e.cli(t, "key", "list"), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 4 {
			rows[f[0]] = f
		}
	}
	return rows
}

// TestGenerateKeyPair: pkcs11-tool and p11tool create Palisade keys through C_GenerateKeyPair;
// the keys exist in palisaded (palisade key list), owned by the uid that ran the tool, with
// the public key the token reports, and sign; templates the token cannot honour are refused
// with their CKR_ and create nothing.
func TestGenerateKeyPair(t *testing.T) {
	e := setup(t)
	mod := []string{"--module", e.module}
	scope := []string{"PALISADE_PKCS11_KEYS=gen-"} // no PIN key in the token: no login asked

	t.Run("mechanisms", func(t *testing.T) {
		out := e.run(t, scope, "pkcs11-tool", append(mod, "--list-mechanisms")...)
		for _, want := range []string{"RSA-PKCS-KEY-PAIR-GEN, keySize={2048,3072}, hw, generate_key_pair",
			"ECDSA-KEY-PAIR-GEN, keySize={256,256}, hw, generate_key_pair", "EC-EDWARDS-KEY-PAIR-GEN"} {
			if !strings.Contains(out, want) {
				t.Errorf("--list-mechanisms lacks %q:\n%s", want, out)
			}
		}
	})

	data := e.path("gen-data")
	if err := os.WriteFile(data, []byte("signed by a key pkcs11-tool generated"), 0o644); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("signed by a key pkcs11-tool generated"))
	for _, c := range []struct{ name, keyType, alg, mech string }{
		{"gen-ec", "EC:prime256v1", "ecdsa-p256", "ECDSA-SHA256"},
		{"gen-rsa", "rsa:2048", "rsa-2048", "SHA256-RSA-PKCS"},
		{"gen-rsa3", "rsa:3072", "rsa-3072", "SHA256-RSA-PKCS"},
		{"gen-ed", "EC:edwards25519", "ed25519", "EDDSA"},
	} {
		t.Run("pkcs11-tool "+c.keyType, func(t *testing.T) {
			out := e.run(t, scope, "pkcs11-tool", append(mod, "--keypairgen", "--key-type", c.keyType, "--label", c.name, "--usage-sign")...)
			if !strings.Contains(out, "Key pair generated") {
				t.Fatalf("pkcs11-tool --keypairgen:\n%s", out)
			}
			row := keyRows(t, e)[c.name]
			if row == nil || row[1] != c.alg || row[2] != "generated" || row[3] != "0" {
				t.Fatalf("palisade key list: %v, want %s generated, owner 0", row, c.alg)
			}
			// The public key the token reports is the daemon's.
			e.cli(t, "key", "public", c.name, "--der", "-o", e.path(c.name+".pub"))
			e.run(t, scope, "pkcs11-tool", append(mod, "--read-object", "--type", "pubkey", "--label", c.name,
				"-o", e.path(c.name+".p11.pub"))...)
			want, _ := os.ReadFile(e.path(c.name + ".pub"))
			got, _ := os.ReadFile(e.path(c.name + ".p11.pub"))
			if b, _ := pem.Decode(got); b != nil { // pkcs11-tool writes EdDSA keys as PEM
				got = b.Bytes
			}
			if len(want) == 0 || !bytes.Equal(got, want) {
				t.Fatalf("public key over PKCS#11 %x, palisade key public %x", got, want)
			}
			sig := e.path(c.name + ".sig")
			// pkcs11-tool finds the key to sign with by CKA_ID only (the name too).
			args := append(mod, "--sign", "--id", fmt.Sprintf("%x", c.name), "-m", c.mech, "--input-file", data, "--output-file", sig)
			if c.alg == "ecdsa-p256" {
				args = append(args, "--signature-format", "openssl")
			}
			if out, err := e.try(scope, "pkcs11-tool", args...); err != nil {
				t.Fatalf("pkcs11-tool --sign: %v\n%s\nmodule log:\n%s", err, out, e.logText(t))
			}
			s, err := os.ReadFile(sig)
			if err != nil {
				t.Fatal(err)
			}
			ok := false
			switch k := e.publicKey(t, c.name).(type) {
			case *ecdsa.PublicKey:
				ok = ecdsa.VerifyASN1(k, digest[:], s)
			case *rsa.PublicKey:
				ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], s) == nil
			case ed25519.PublicKey:
				ok = ed25519.Verify(k, []byte("signed by a key pkcs11-tool generated"), s)
			}
			if !ok {
				t.Fatalf("the signature by %s does not verify", c.name)
			}
		})
	}

	// Another uid's pkcs11-tool makes a key of its own.
	t.Run("owner is the caller", func(t *testing.T) {
		cmd := exec.Command("pkcs11-tool", append(mod, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "gen-nobody", "--usage-sign")...)
		cmd.Env = e.environ(scope...)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pkcs11-tool as uid %d: %v\n%s", nobody, err, out)
		}
		// palisade key list as that uid: root is no administrator of the daemon's keys here.
		list := exec.Command(filepath.Join(e.bin, "palisade"), "key", "list")
		list.Env = e.environ()
		list.SysProcAttr = cmd.SysProcAttr
		out, err := list.CombinedOutput()
		if err != nil {
			t.Fatalf("palisade key list as uid %d: %v\n%s", nobody, err, out)
		}
		var row []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[0] == "gen-nobody" {
				row = f
			}
		}
		if row == nil || row[1] != "ecdsa-p256" || row[3] != fmt.Sprint(nobody) || row[4] != "-" {
			t.Fatalf("palisade key list as uid %d: %v, want gen-nobody owned by %d, not shared:\n%s", nobody, row, nobody, out)
		}
	})

	// Refusals: each names its CKR_, and no key is created.
	for _, c := range []struct {
		name string
		args []string
		ckr  string
	}{
		// pkcs11-tool's default usage asks CKA_DERIVE of an EC key, CKA_ENCRYPT/CKA_DECRYPT of
		// an RSA key: capabilities a Palisade key does not have.
		{"default usage (derive) of an EC key", []string{"--key-type", "EC:prime256v1", "--label", "gen-derive"}, "CKR_ATTRIBUTE_VALUE_INVALID"},
		{"default usage (decrypt) of an RSA key", []string{"--key-type", "rsa:2048", "--label", "gen-decrypt"}, "CKR_ATTRIBUTE_VALUE_INVALID"},
		{"RSA-1024", []string{"--key-type", "rsa:1024", "--label", "gen-small", "--usage-sign"}, "CKR_ATTRIBUTE_VALUE_INVALID"},
		{"P-384", []string{"--key-type", "EC:secp384r1", "--label", "gen-p384", "--usage-sign"}, "(0x140)"}, // CKR_CURVE_NOT_SUPPORTED, which pkcs11-tool does not name
		{"no name", []string{"--key-type", "EC:prime256v1", "--usage-sign"}, "CKR_TEMPLATE_INCOMPLETE"},
		{"name taken", []string{"--key-type", "EC:prime256v1", "--label", "gen-ec", "--usage-sign"}, "CKR_ATTRIBUTE_VALUE_INVALID"},
		{"name outside the key service's alphabet", []string{"--key-type", "EC:prime256v1", "--label", "gen/x", "--usage-sign"}, "CKR_ATTRIBUTE_VALUE_INVALID"},
		{"label and id differ", []string{"--key-type", "EC:prime256v1", "--label", "gen-a", "--id", "01", "--usage-sign"}, "CKR_TEMPLATE_INCONSISTENT"},
		{"decryption asked of an RSA key", []string{"--key-type", "rsa:2048", "--label", "gen-dec", "--usage-decrypt"}, "CKR_ATTRIBUTE_VALUE_INVALID"},
		{"outside the token's prefix", []string{"--key-type", "EC:prime256v1", "--label", "other", "--usage-sign"}, "CKR_ATTRIBUTE_VALUE_INVALID"},
	} {
		t.Run("refused "+c.name, func(t *testing.T) {
			before := keyRows(t, e)
			out, err := e.try(scope, "pkcs11-tool", append(append(mod, "--keypairgen"), c.args...)...)
			if err == nil || !strings.Contains(out, c.ckr) {
				t.Fatalf("pkcs11-tool --keypairgen %v: %v, want %s:\n%s", c.args, err, c.ckr, out)
			}
			if after := keyRows(t, e); len(after) != len(before) {
				t.Fatalf("%d keys before, %d after a refused generation", len(before), len(after))
			}
		})
	}

	// p11tool (GnuTLS) asks for a sign-only template for EC keys, but always asks CKA_ENCRYPT
	// and CKA_DECRYPT of an RSA key: --generate-rsa is refused, and creates nothing.
	t.Run("p11tool", func(t *testing.T) {
		for _, c := range []struct {
			name, flag, alg string
			refused         bool
		}{
			{"gen-p11-ec", "--generate-ecc", "ecdsa-p256", false},
			{"gen-p11-rsa", "--generate-rsa", "rsa-2048", true},
		} {
			// CKA_ID is the key's name too: p11tool would otherwise send a random one.
			args := []string{"--provider", e.module, c.flag, "--label", c.name, "--id", fmt.Sprintf("%x", c.name), "pkcs11:token=palisade"}
			if c.alg == "ecdsa-p256" {
				args = append(args, "--curve", "secp256r1")
			} else {
				args = append(args, "--bits", "2048")
			}
			out, err := e.try(scope, "p11tool", args...)
			row := keyRows(t, e)[c.name]
			if c.refused {
				if err == nil || row != nil || !strings.Contains(e.logText(t), "attribute 0x104 of the public key must be false") {
					t.Fatalf("p11tool %s: %v, key %v; want refused (CKA_ENCRYPT), no key:\n%s", c.flag, err, row, out)
				}
				continue
			}
			if err != nil {
				t.Fatalf("p11tool %s: %v\n%s\nmodule log:\n%s", c.flag, err, out, e.logText(t))
			}
			if row == nil || row[1] != c.alg || row[3] != "0" {
				t.Fatalf("palisade key list: %v, want %s owned by 0", row, c.alg)
			}
			e.cli(t, "key", "public", c.name, "--der", "-o", e.path(c.name+".pub"))
			want, _ := os.ReadFile(e.path(c.name + ".pub"))
			var b *pem.Block
			if i := strings.Index(out, "-----BEGIN"); i >= 0 {
				b, _ = pem.Decode([]byte(out[i:]))
			}
			if b == nil || !bytes.Equal(b.Bytes, want) {
				t.Fatalf("p11tool's public key is not the daemon's %x:\n%s", want, out)
			}
		}
	})
}

// TestGenerateKeyPairTemplates runs test/gen_template.c: the template rules no tool's flags
// reach, each refusal creating nothing.
func TestGenerateKeyPairTemplates(t *testing.T) {
	e := setup(t)
	prog := filepath.Join(t.TempDir(), "gen_template")
	if out, err := exec.Command("cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
		"-o", prog, "test/gen_template.c", "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	before := keyRows(t, e)
	out, err := e.try([]string{"PALISADE_PKCS11_KEYS=tmpl-"}, prog, e.module)
	if err != nil {
		t.Fatalf("gen_template: %v\n%s\nmodule log:\n%s", err, out, e.logText(t))
	}
	after := keyRows(t, e)
	var created []string
	for _, l := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(l, "CREATED "); ok {
			created = append(created, name)
			if after[name] == nil || after[name][3] != "0" {
				t.Errorf("%s: %v in palisade key list, want owned by 0", name, after[name])
			}
		}
	}
	if len(created) != 3 || len(after) != len(before)+len(created) {
		t.Fatalf("%d keys before, %d after, %d created: a refused template created a key\n%s", len(before), len(after), len(created), out)
	}
}
