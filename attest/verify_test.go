package attest_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/veraison/go-cose"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/rot/tpm"
	"github.com/palisade-project/palisade/internal/swtpmtest"
	"github.com/palisade-project/palisade/internal/utpm"
)

var palMeasurement = utpm.Digest(sha256.Sum256([]byte("a PAL image")))

// visor is a started visor on its own swtpm, with one registered PAL's µTPM.
type visor struct {
	sw   *swtpmtest.TPM
	root *tpm.Root
	pal  *utpm.TPM
}

func startVisor(t testing.TB, exe string, opts ...swtpmtest.Option) *visor {
	t.Helper()
	sw := swtpmtest.Start(t, opts...)
	return openVisor(t, sw, exe, nil)
}

func openVisor(t testing.TB, sw *swtpmtest.TPM, exe string, chain [][]byte) *visor {
	t.Helper()
	p := filepath.Join(t.TempDir(), "palisaded")
	if err := os.WriteFile(p, []byte(exe), 0o700); err != nil {
		t.Fatal(err)
	}
	root, err := tpm.Open(context.Background(), tpm.Config{
		Device: sw.Device(), StateDir: t.TempDir(),
		Visor:   tpm.VisorInputs{Executable: p, Configuration: []byte("config")},
		EKChain: chain,
	})
	if err != nil {
		t.Fatalf("tpm.Open: %v", err)
	}
	t.Cleanup(func() { root.Close() })
	plat, err := utpm.NewPlatform(root.Platform())
	if err != nil {
		t.Fatal(err)
	}
	return &visor{sw: sw, root: root, pal: plat.NewTPM(palMeasurement)}
}

func (v *visor) evidence(t testing.TB, nonce []byte) []byte {
	t.Helper()
	q, err := v.pal.Quote(nonce, []byte("user data"), 0b11)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := attest.Assemble(context.Background(), v.root, q)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (v *visor) options(nonce []byte) attest.Options {
	return attest.Options{Nonce: nonce, PAL: palMeasurement, Visor: v.root.Visor()}
}

func wantCheck(t *testing.T, err error, check string, sentinel error) {
	t.Helper()
	var ce *attest.CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *CheckError", err)
	}
	if ce.Check != check {
		t.Fatalf("failed check %q, want %q (%v)", ce.Check, check, err)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Fatalf("error %v does not wrap %v", err, sentinel)
	}
	t.Log(err)
}

func TestVerifyTPMEvidence(t *testing.T) {
	v := startVisor(t, "visor A")
	nonce := []byte("verifier nonce 1")
	res, err := attest.Verify(v.evidence(t, nonce), v.options(nonce))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.Rooted || res.Root != attest.RootTPM || res.PCR != tpm.DefaultPCR ||
		res.Claims.PAL != palMeasurement || !bytes.Equal(res.Claims.UserData, []byte("user data")) ||
		len(res.Claims.PCRs) != 2 || len(res.Events) != 3 || res.EKVerified {
		t.Fatalf("result = %+v", res)
	}
	if res.PCRValue != tpm.Replay(v.root.EventLog(), tpm.DefaultPCR) {
		t.Fatal("PCR value is not the replay of the root's event log")
	}
	// Pinning the right AK passes.
	o := v.options(nonce)
	o.AKPublic = res.AKPublic
	if _, err := attest.Verify(v.evidence(t, nonce), o); err != nil {
		t.Fatalf("Verify with AK pin: %v", err)
	}
}

// mutate decodes evidence, lets f change it, and re-encodes it without re-signing anything.
func mutate(t *testing.T, ev []byte, f func(*attest.Evidence)) []byte {
	t.Helper()
	e, err := attest.Parse(ev)
	if err != nil {
		t.Fatal(err)
	}
	f(e)
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mutateEndorsement(t *testing.T, ev []byte, f func(*tpm.Endorsement)) []byte {
	t.Helper()
	return mutate(t, ev, func(e *attest.Evidence) {
		en, err := tpm.ParseEndorsement(e.Endorsement)
		if err != nil {
			t.Fatal(err)
		}
		f(en)
		if e.Endorsement, err = en.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestVerifyRefuses(t *testing.T) {
	v := startVisor(t, "visor A")
	other := startVisor(t, "visor B")
	nonce := []byte("verifier nonce 2")
	good := v.evidence(t, nonce)
	otherEv := other.evidence(t, nonce)
	otherRes, err := attest.Verify(otherEv, other.options(nonce))
	if err != nil {
		t.Fatalf("other visor's evidence: %v", err)
	}

	tests := []struct {
		name     string
		ev       []byte
		opts     func(*attest.Options)
		check    string
		sentinel error
	}{
		{name: "wrong nonce", ev: good, opts: func(o *attest.Options) { o.Nonce = []byte("another nonce") },
			check: attest.CheckNonce, sentinel: attest.ErrMismatch},
		{name: "other PAL", ev: good, opts: func(o *attest.Options) { o.PAL[0] ^= 1 },
			check: attest.CheckPAL, sentinel: attest.ErrMismatch},
		{name: "other visor reference", ev: good, opts: func(o *attest.Options) { o.Visor[0] ^= 1 },
			check: attest.CheckVisor, sentinel: attest.ErrMismatch},
		{name: "tampered claims", ev: mutate(t, good, func(e *attest.Evidence) {
			var msg cose.Sign1Message
			if err := msg.UnmarshalCBOR(e.Quote); err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(msg.Payload, []byte("user data"))
			msg.Payload[i] ^= 1
			e.Quote, _ = msg.MarshalCBOR()
		}), check: attest.CheckQuoteSignature, sentinel: attest.ErrSignature},
		{name: "identity key swapped", ev: mutate(t, good, func(e *attest.Evidence) {
			oe, _ := attest.Parse(otherEv)
			e.Identity = oe.Identity
		}), check: attest.CheckQuoteSignature, sentinel: attest.ErrSignature},
		{name: "endorsement replayed from another visor", ev: mutate(t, good, func(e *attest.Evidence) {
			oe, _ := attest.Parse(otherEv)
			e.Endorsement = oe.Endorsement
		}), check: attest.CheckQualifyingData, sentinel: attest.ErrMismatch},
		{name: "another visor's evidence, AK pinned", ev: otherEv, opts: func(o *attest.Options) {
			o.Visor = other.root.Visor()
			o.AKPublic = mustVerify(t, good, v.options(nonce)).AKPublic
		}, check: attest.CheckAKPin, sentinel: attest.ErrMismatch},
		{name: "event log does not replay", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.Events[1].Digest[0] ^= 1
		}), check: attest.CheckEventLogReplay, sentinel: attest.ErrEventLog},
		{name: "event log truncated", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.Events = en.Events[:2]
		}), check: attest.CheckEventLogReplay, sentinel: attest.ErrEventLog},
		{name: "TPM quote signature", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.Signature[len(en.Signature)-1] ^= 1
		}), check: attest.CheckTPMQuoteSignature, sentinel: attest.ErrTPMSignature},
		{name: "TPM quote body", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.Quoted[len(en.Quoted)-1] ^= 1
		}), check: attest.CheckTPMQuoteSignature, sentinel: attest.ErrTPMSignature},
		{name: "AK swapped for another TPM's", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.AKPublic = other.root.AKPublic()
		}), check: attest.CheckTPMQuoteSignature, sentinel: attest.ErrTPMSignature},
		{name: "AK attributes rewritten (noDA cleared)", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.AKPublic = rewriteAK(t, en.AKPublic, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.NoDA = false })
		}), check: attest.CheckQualifiedSigner, sentinel: attest.ErrMismatch},
		{name: "AK attributes rewritten (stClear set)", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.AKPublic = rewriteAK(t, en.AKPublic, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.STClear = true })
		}), check: attest.CheckQualifiedSigner, sentinel: attest.ErrMismatch},
		{name: "AK auth policy rewritten", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.AKPublic = rewriteAK(t, en.AKPublic, func(p *tpm2.TPMTPublic) { p.AuthPolicy.Buffer = make([]byte, 32) })
		}), check: attest.CheckQualifiedSigner, sentinel: attest.ErrMismatch},
		{name: "AK attributes rewritten (adminWithPolicy set)", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.AKPublic = rewriteAK(t, en.AKPublic, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.AdminWithPolicy = true })
		}), check: attest.CheckQualifiedSigner, sentinel: attest.ErrMismatch},
		{name: "AK fixedTPM cleared", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.AKPublic = rewriteAK(t, en.AKPublic, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false })
		}), check: attest.CheckAKPublic, sentinel: attest.ErrAKNotAcceptable},
		{name: "AK name algorithm SHA-384", ev: mutateEndorsement(t, good, func(en *tpm.Endorsement) {
			en.AKPublic = rewriteAK(t, en.AKPublic, func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA384 })
		}), check: attest.CheckAKPublic, sentinel: attest.ErrAKNotAcceptable},
		{name: "unrooted claimed as none", ev: mutate(t, good, func(e *attest.Evidence) {
			e.Root, e.Endorsement = attest.RootNone, nil
		}), check: attest.CheckRooted, sentinel: attest.ErrUnrooted},
		{name: "garbage", ev: []byte("not evidence"), check: attest.CheckEvidenceFormat, sentinel: attest.ErrEvidence},
		{name: "EK roots required, no EK certificate", ev: good, opts: func(o *attest.Options) {
			o.EKRoots = x509.NewCertPool()
		}, check: attest.CheckEKCertificate, sentinel: attest.ErrEKCertificate},
	}
	_ = otherRes
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := v.options(nonce)
			if tc.opts != nil {
				tc.opts(&o)
			}
			_, err := attest.Verify(tc.ev, o)
			wantCheck(t, err, tc.check, tc.sentinel)
		})
	}
}

// rewriteAK changes fields of a TPMT_PUBLIC that no signature over the quote covers directly.
func rewriteAK(t *testing.T, b []byte, f func(*tpm2.TPMTPublic)) []byte {
	t.Helper()
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		t.Fatal(err)
	}
	f(p)
	return tpm2.Marshal(p)
}

func mustVerify(t *testing.T, ev []byte, o attest.Options) *attest.Result {
	t.Helper()
	r, err := attest.Verify(ev, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Evidence from the "none" root: a µTPM quote with Rooted=false and no endorsement.
func TestVerifyUnrooted(t *testing.T) {
	id, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	visorM := utpm.Digest{7}
	plat, err := utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: make([]byte, 32), Identity: id, Visor: visorM})
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("n")
	q, err := plat.NewTPM(palMeasurement).Quote(nonce, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := (&attest.Evidence{Version: attest.EvidenceVersion, Quote: q, Identity: plat.IdentityPublic(), Root: attest.RootNone}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	o := attest.Options{Nonce: nonce, PAL: palMeasurement, Visor: visorM}
	_, err = attest.Verify(ev, o)
	wantCheck(t, err, attest.CheckRooted, attest.ErrUnrooted)
	o.AllowUnrooted = true
	res, err := attest.Verify(ev, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rooted || res.Root != attest.RootNone {
		t.Fatalf("result = %+v", res)
	}
	// An unrooted quote inside "tpm" evidence is refused too: the quote says what it is.
	ev2, _ := (&attest.Evidence{Version: attest.EvidenceVersion, Quote: q, Identity: plat.IdentityPublic(),
		Root: attest.RootTPM, Endorsement: []byte{0xa0}}).Marshal()
	o.AllowUnrooted = false
	_, err = attest.Verify(ev2, o)
	wantCheck(t, err, attest.CheckRooted, attest.ErrUnrooted)
}

func TestVerifyEKCertificate(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.WithEKCert())
	issuer := pemCert(t, sw.IssuerPEM)
	v := openVisor(t, sw, "visor A", [][]byte{issuer.Raw})
	if v.root.EKCertificate() == nil {
		t.Fatal("no EK certificate read from NV")
	}
	nonce := []byte("ek nonce")
	ev := v.evidence(t, nonce)

	roots := x509.NewCertPool()
	roots.AddCert(pemCert(t, sw.RootCAPEM))
	o := v.options(nonce)
	o.EKRoots = roots
	res, err := attest.Verify(ev, o)
	if err != nil {
		t.Fatalf("Verify with swtpm local CA roots: %v", err)
	}
	if !res.EKVerified || res.EK == nil {
		t.Fatalf("EK not verified: %+v", res)
	}
	t.Logf("EK certificate issuer %q, serial %v", res.EK.Issuer, res.EK.SerialNumber)

	o.EKRoots = x509.NewCertPool()
	o.EKRoots.AddCert(selfSigned(t))
	_, err = attest.Verify(ev, o)
	wantCheck(t, err, attest.CheckEKCertificate, attest.ErrEKCertificate)

	// Evidence without the chain: the root alone does not reach the EK certificate, and the
	// error says what is missing.
	noChain := mutateEndorsement(t, ev, func(en *tpm.Endorsement) { en.EKChain = nil })
	o.EKRoots = roots
	_, err = attest.Verify(noChain, o)
	wantCheck(t, err, attest.CheckEKCertificate, attest.ErrEKCertificate)
	if !strings.Contains(err.Error(), "carries no intermediate certificates") {
		t.Fatalf("error does not name the missing chain: %v", err)
	}
}

func selfSigned(t *testing.T) *x509.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the TPM vendor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
