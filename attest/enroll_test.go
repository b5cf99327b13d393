package attest_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/rot/tpm"
	"github.com/palisade-project/palisade/internal/swtpmtest"
)

func TestEnrollAKByCredentialActivation(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.WithEKCert())
	v := openVisor(t, sw, "visor A", [][]byte{pemCert(t, sw.IssuerPEM).Raw})
	roots := x509.NewCertPool()
	roots.AddCert(pemCert(t, sw.RootCAPEM))
	ctx := context.Background()

	e, err := attest.NewEnrollment(v.evidence(t, []byte("enroll")), roots)
	if err != nil {
		t.Fatalf("NewEnrollment: %v", err)
	}
	answer, err := v.root.ActivateCredential(ctx, e.Challenge)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	ak, err := e.Finish(answer)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	// The enrolled AK, pinned, verifies later evidence.
	nonce := []byte("after enrollment")
	o := v.options(nonce)
	o.AKPublic, o.EKRoots = ak, roots
	if res, err := attest.Verify(v.evidence(t, nonce), o); err != nil || !res.AKPinned || !res.EKVerified {
		t.Fatalf("Verify with enrolled AK: %+v, %v", res, err)
	}

	// Another TPM (with its own EK certificate from another CA) cannot answer this challenge:
	// its EK is not the one the challenge is encrypted to.
	sw2 := swtpmtest.Start(t, swtpmtest.WithEKCert())
	v2 := openVisor(t, sw2, "visor A", nil)
	if _, err := v2.root.ActivateCredential(ctx, e.Challenge); err == nil {
		t.Fatal("another TPM answered the challenge")
	} else {
		t.Log(err)
	}
	if _, err := v2.root.Endorse(ctx, nil); err != nil {
		t.Logf("other TPM after the failed activation: %v", err)
	}
	// A wrong answer is refused.
	if _, err := e.Finish(append([]byte(nil), answer[:31]...)); !errors.Is(err, attest.ErrEnrollment) {
		t.Fatalf("Finish(wrong) = %v", err)
	}
	// A TPM without an EK certificate cannot be enrolled.
	plain := startVisor(t, "visor A")
	if _, err := attest.NewEnrollment(plain.evidence(t, nil), roots); !errors.Is(err, attest.ErrEnrollment) {
		t.Fatalf("NewEnrollment without EK cert = %v", err)
	}
	if _, err := plain.root.ActivateCredential(ctx, e.Challenge); !errors.Is(err, tpm.ErrNoEK) {
		t.Fatalf("ActivateCredential without EK cert = %v", err)
	}
}
