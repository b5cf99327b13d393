package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/swtpmtest"
	"github.com/palisade-project/palisade/internal/utpm"
)

func adminKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := config.GenerateKey("es256")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func measureOf(t testing.TB, exe string) utpm.Digest {
	t.Helper()
	m, err := MeasureVisor(strings.NewReader(exe), []byte("conf"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func authorize(t testing.TB, admin crypto.Signer, exe string) []byte {
	t.Helper()
	a, err := AuthorizeVisor(admin, measureOf(t, exe), 0)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func openAuthorized(t testing.TB, sw *swtpmtest.TPM, state, exe string, admin crypto.Signer, auths ...[]byte) (*Root, error) {
	t.Helper()
	return Open(context.Background(), Config{
		Device: sw.Device(), StateDir: state,
		Visor:          VisorInputs{Executable: visorFile(t, exe), Configuration: []byte("conf")},
		Authority:      publicOf(admin),
		Authorizations: auths,
	})
}

// TestVisorAuthorization: visor A creates the master secret under PolicyAuthorize by the
// administrator key; visor B, once the administrator signs its policy, unseals the same
// secret; visor C, never authorized, is refused, also when it brings an authorization of its
// own signed by another key and configures that key.
func TestVisorAuthorization(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	admin := adminKey(t)

	ra, err := openAuthorized(t, sw, state, "visor A", admin, authorize(t, admin, "visor A"))
	if err != nil {
		t.Fatal(err)
	}
	secret := append([]byte(nil), ra.Platform().MasterSecret...)
	ra.Close()

	// B before the administrator authorized it.
	if _, err := openAuthorized(t, sw, state, "visor B", admin); !errors.Is(err, ErrPolicy) {
		t.Fatalf("unauthorized visor B: %v, want ErrPolicy", err)
	}
	// The administrator ships B's authorization as a file in the state directory.
	os.MkdirAll(filepath.Join(state, authorizationsDir), 0o700)
	if err := os.WriteFile(filepath.Join(state, authorizationsDir, "visor-b"), authorize(t, admin, "visor B"), 0o600); err != nil {
		t.Fatal(err)
	}
	rb, err := openAuthorized(t, sw, state, "visor B", admin)
	if err != nil {
		t.Fatalf("authorized visor B: %v", err)
	}
	if !bytes.Equal(rb.Platform().MasterSecret, secret) {
		t.Fatal("visor B unsealed another secret")
	}
	rb.Close()

	other := adminKey(t)
	if _, err := openAuthorized(t, sw, state, "visor C", admin, authorize(t, other, "visor C")); !errors.Is(err, ErrPolicy) {
		t.Fatalf("visor C authorized by another key: %v", err)
	}
	_, err = openAuthorized(t, sw, state, "visor C", other, authorize(t, other, "visor C"))
	if !errors.Is(err, ErrPolicy) || !errors.Is(err, ErrAuthority) {
		t.Fatalf("visor C with its own authority: %v", err)
	}
	// Without an authority the object is not sealed to the PCR either.
	if _, err := open(t, sw, state, visorFile(t, "visor A"), []byte("conf"), 0); !errors.Is(err, ErrPolicy) {
		t.Fatalf("plain mode on an authorized object: %v", err)
	}
	// A still starts, and the same secret is kept throughout.
	ra, err = openAuthorized(t, sw, state, "visor A", admin, authorize(t, admin, "visor A"))
	if err != nil || !bytes.Equal(ra.Platform().MasterSecret, secret) {
		t.Fatalf("visor A again: %v", err)
	}
	ra.Close()
}

// TestVisorAuthorizationEnforcedByTPM bypasses the software checks: the TPM itself refuses a
// forged signature, and an authorization of another visor while the PCR holds C.
func TestVisorAuthorizationEnforcedByTPM(t *testing.T) {
	sw := swtpmtest.Start(t)
	admin := adminKey(t)
	tp, err := OpenDevice(sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tp); err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		t.Fatal(err)
	}
	c := measureOf(t, "visor C")
	r := &Root{tpm: tp, pcr: DefaultPCR, visor: c}
	if err := r.freshPCR(); err != nil {
		t.Fatal(err)
	}
	if err := r.extend(c, EventVisor); err != nil {
		t.Fatal(err)
	}
	authB, err := ParseAuthorization(authorize(t, admin, "visor B"))
	if err != nil {
		t.Fatal(err)
	}
	forged := *authB
	forged.Visor = c
	for _, tc := range []struct {
		name string
		a    *Authorization
		want error
	}{
		{"signature over B's policy relabelled as C", &forged, tpm2.TPMRCSignature},
		{"B's genuine authorization, PCR holds C", authB, tpm2.TPMRCValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sess, done, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
			if err != nil {
				t.Fatal(err)
			}
			defer done()
			err = r.authorizeSession(sess, publicOf(admin), tc.a)
			if !errors.Is(err, ErrPolicy) || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want ErrPolicy and %v", err, tc.want)
			}
		})
	}
	// And the genuine one for C passes.
	authC, _ := ParseAuthorization(authorize(t, admin, "visor C"))
	sess, done, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if err := r.authorizeSession(sess, publicOf(admin), authC); err != nil {
		t.Fatal(err)
	}
	want, _ := authorizedPolicy(publicOf(admin))
	got, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(tp)
	if err != nil || !bytes.Equal(got.PolicyDigest.Buffer, want) {
		t.Fatalf("session digest %x, want the computed authorized policy %x (%v)", got.PolicyDigest.Buffer, want, err)
	}
}

// TestAdoptVisorAuthorization: a master secret sealed in plain mode is resealed under the
// administrator key the first time the visor starts with one, keeping the secret.
func TestAdoptVisorAuthorization(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	admin := adminKey(t)
	r := mustOpen(t, sw, state, visorFile(t, "visor A"), []byte("conf"))
	secret := append([]byte(nil), r.Platform().MasterSecret...)
	r.Close()
	r, err := openAuthorized(t, sw, state, "visor A", admin, authorize(t, admin, "visor A"))
	if err != nil || !bytes.Equal(r.Platform().MasterSecret, secret) {
		t.Fatalf("adopting: %v", err)
	}
	r.Close()
	r, err = openAuthorized(t, sw, state, "visor B", admin, authorize(t, admin, "visor B"))
	if err != nil || !bytes.Equal(r.Platform().MasterSecret, secret) {
		t.Fatalf("visor B after adoption: %v", err)
	}
	r.Close()
}

func TestParseAuthorizationRefuses(t *testing.T) {
	good := authorize(t, adminKey(t), "visor A")
	if _, err := ParseAuthorization(good); err != nil {
		t.Fatal(err)
	}
	if _, err := AuthorizeVisor(mustEd25519(t), utpm.Digest{}, 0); !errors.Is(err, ErrAuthority) {
		t.Fatalf("Ed25519 authority: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte(nil), good...), 0),
		"huge":      make([]byte, maxAuthorizationSize+1),
	} {
		if _, err := ParseAuthorization(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	k, _ := config.GenerateKey("es256")
	a, _ := AuthorizeVisor(k, utpm.Digest{1}, 0)
	f.Add(a)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAuthorization(b)
		if err != nil {
			return
		}
		out, err := encMode.Marshal(a)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("accepted %x, re-encodes to %x", b, out)
		}
	})
}

func publicOf(k crypto.Signer) *ecdsa.PublicKey { return k.Public().(*ecdsa.PublicKey) }

func mustEd25519(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := config.GenerateKey("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	return k
}
