package keys_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/internal/csdk"
	"github.com/palisade-project/palisade/internal/keys"
)

// TestCustomSigningPAL binds a key to a user's signing PAL that adds a policy (SHA-384 only):
// the policy holds, the key survives a restart (the daemon keeps the PAL's image), and the
// key reports the user's PAL as its signer.
func TestCustomSigningPAL(t *testing.T) {
	img := sha384only(t)
	m, err := keys.Measurement(img)
	if err != nil {
		t.Fatal(err)
	}
	d := start(t, t.TempDir())
	ctx := context.Background()
	info, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "p384", Alg: keys.ECDSAP256, SignerImage: img, PIN: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if info.SignerPAL != m || m == d.s.SignerMeasurement() {
		t.Fatalf("signer %x, want the custom PAL's %x", info.SignerPAL, m)
	}
	d256 := make([]byte, 32)
	d384 := sha512.Sum384([]byte("x"))
	for i := 0; i < 2; i++ {
		_, err := d.s.Sign(ctx, root, "p384", keys.SignRequest{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d256, PIN: []byte("1")})
		if !errors.Is(err, keys.ErrRefused) {
			t.Fatalf("SHA-256 through the SHA-384-only PAL: %v", err)
		}
		if _, err := d.s.Sign(ctx, root, "p384", keys.SignRequest{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA384, Digest: d384[:], PIN: []byte("1")}); err != nil {
			t.Fatalf("SHA-384: %v", err)
		}
		d = d.restart(t)
	}
	if err := d.s.Delete(ctx, root, "p384"); err != nil {
		t.Fatal(err)
	}
}

// TestRawRSASSA: RSASSA with hash none (PKCS#11's CKM_RSA_PKCS of a DigestInfo the module does
// not know, e.g. SHA-1's) goes through the shipped signing PAL, whose signature is the standard
// one, and a signing PAL whose policy checks the hash refuses it.
func TestRawRSASSA(t *testing.T) {
	img := sha384only(t)
	d := start(t, t.TempDir())
	ctx := context.Background()
	h := sha1.Sum([]byte("x"))
	info := append([]byte{0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14}, h[:]...)
	req := keys.SignRequest{Scheme: signreq.SchemeRSASSA, Hash: signreq.HashNone, Digest: info}
	for _, tc := range []struct {
		name   string
		signer []byte
		want   error
	}{
		{"shipped", nil, nil},
		{"sha384only", img, keys.ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "raw-" + tc.name, Alg: keys.RSA2048, SignerImage: tc.signer})
			if err != nil {
				t.Fatal(err)
			}
			sig, err := d.s.Sign(ctx, root, k.Name, req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Sign = %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			pub, err := x509.ParsePKIXPublicKey(k.PublicDER)
			if err != nil {
				t.Fatal(err)
			}
			if err := rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA1, h[:], sig); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// sha384only builds testdata/sha384only.c.
func sha384only(t *testing.T) []byte {
	t.Helper()
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	out := filepath.Join(t.TempDir(), "sha384only.wasm")
	if err := csdk.BuildWasm(context.Background(), out, nil, "testdata/sha384only.c"); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestUpgradeShipsAnotherSigner plays a daemon upgrade whose default signing PAL differs:
// keys made before keep signing through the PAL they are bound to (its image was stored with
// them), new keys bind to the new one.
func TestUpgradeShipsAnotherSigner(t *testing.T) {
	next := sha384only(t)
	d := start(t, t.TempDir())
	ctx := context.Background()
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "old", Alg: keys.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	d.close()
	d = start(t, d.dir, func(c *keys.Config) { c.DefaultSigner = next })
	if err := sign(t, d.s, root, "old", nil); err != nil {
		t.Fatalf("a key of the previous version: %v", err)
	}
	info, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "new", Alg: keys.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := keys.Measurement(next); info.SignerPAL != m {
		t.Fatalf("new key bound to %x, want the new default %x", info.SignerPAL, m)
	}
	if err := sign(t, d.s, root, "new", nil); !errors.Is(err, keys.ErrRefused) {
		t.Fatalf("SHA-256 through the new SHA-384-only default: %v", err)
	}
}
