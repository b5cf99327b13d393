package attest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/attest"
)

// TestEveryEvidenceByteIsBound flips every byte of real evidence (swtpm with an EK certificate
// issued by an intermediate, the chain carried, a configuration statement) and expects Verify
// to refuse each, with a *CheckError: every byte is covered by a signature or checked
// (docs/attestation.md §5).
//
// The one documented exception: without Options.EKRoots, the EK certificate and its chain are
// carried but not trusted (Result.EKVerified = false), so a flip inside them that still
// parses may pass; the second pass checks that only those bytes may.
func TestEveryEvidenceByteIsBound(t *testing.T) {
	if testing.Short() {
		t.Skip("flips every byte of evidence: a few seconds")
	}
	v, roots := startVisorWithEK(t)
	nonce := []byte("flip nonce")
	q, err := v.pal.Quote(nonce, []byte("user data"), 0b101)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := configHeads(t)
	ev, err := attest.Assemble(context.Background(), v.root, q, attest.WithConfiguration(head))
	if err != nil {
		t.Fatal(err)
	}
	withRoots := v.options(nonce)
	withRoots.EKRoots = roots
	if res, err := attest.Verify(ev, withRoots); err != nil || !res.EKVerified || res.Configuration == nil {
		t.Fatalf("good evidence: %+v, %v", res, err)
	}

	// The bytes of the EK certificate and of the chain inside the evidence.
	var unchecked []span
	for _, der := range [][]byte{v.root.EKCertificate(), v.chain[0]} {
		i := bytes.Index(ev, der)
		if i < 0 {
			t.Fatal("certificate not found in the evidence")
		}
		unchecked = append(unchecked, span{i, i + len(der)})
	}

	accepted := 0
	for i := range ev {
		mut := bytes.Clone(ev)
		mut[i] ^= 0x01
		if _, err := attest.Verify(mut, withRoots); err == nil {
			t.Errorf("byte %d (of %d) flipped: accepted with EK roots", i, len(ev))
		} else if ce := (*attest.CheckError)(nil); !errors.As(err, &ce) {
			t.Errorf("byte %d flipped: %v is not a *CheckError", i, err)
		}
		res, err := attest.Verify(mut, v.options(nonce))
		if err != nil {
			continue
		}
		accepted++
		if !inSpans(unchecked, i) {
			t.Errorf("byte %d (outside the EK certificate and chain) flipped: accepted without EK roots", i)
		}
		if res.EKVerified {
			t.Errorf("byte %d flipped: EKVerified without EK roots", i)
		}
	}
	t.Logf("%d bytes; without EK roots, %d flips inside the EK certificate or chain parse and are reported unverified", len(ev), accepted)
}

type span struct{ from, to int }

func inSpans(s []span, i int) bool {
	for _, x := range s {
		if i >= x.from && i < x.to {
			return true
		}
	}
	return false
}

// visorWithEK is a visor on a swtpm whose EK certificate is issued by swtpm's local CA
// intermediate, which the visor carries as its chain.
type visorWithEK struct {
	*visor
	chain [][]byte
}

func startVisorWithEK(t *testing.T) (*visorWithEK, *x509.CertPool) {
	t.Helper()
	sw := swtpmStartEK(t)
	issuer := pemCert(t, sw.IssuerPEM)
	chain := [][]byte{issuer.Raw}
	v := openVisor(t, sw, "visor A", chain)
	if v.root.EKCertificate() == nil {
		t.Fatal("no EK certificate read from NV")
	}
	roots := x509.NewCertPool()
	roots.AddCert(pemCert(t, sw.RootCAPEM))
	return &visorWithEK{v, chain}, roots
}
