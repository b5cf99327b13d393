package utpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/palisade-project/palisade/internal/utpm"
)

// keyEnv is one platform with a key of every algorithm created by PAL A, shared by the tests
// and benchmarks of this binary because RSA-3072 generation takes seconds.
type keyEnv struct {
	p    *utpm.Platform
	a, b *utpm.TPM
	keys map[utpm.KeyAlg]keyPair
}

type keyPair struct {
	blob []byte
	pub  crypto.PublicKey
}

var algs = []struct {
	name string
	alg  utpm.KeyAlg
}{
	{"ECDSAP256", utpm.KeyECDSAP256},
	{"Ed25519", utpm.KeyEd25519},
	{"RSA2048", utpm.KeyRSA2048},
	{"RSA3072", utpm.KeyRSA3072},
}

var sharedKeys = sync.OnceValues(func() (*keyEnv, error) {
	id, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	master := make([]byte, 32)
	rand.Read(master)
	p, err := utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: master, Identity: id})
	if err != nil {
		return nil, err
	}
	e := &keyEnv{p: p, a: p.NewTPM(palA), b: p.NewTPM(palB), keys: map[utpm.KeyAlg]keyPair{}}
	for _, al := range algs {
		blob, pubDER, err := e.a.KeyCreate(al.alg, utpm.Policy{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", al.name, err)
		}
		pub, err := x509.ParsePKIXPublicKey(pubDER)
		if err != nil {
			return nil, fmt.Errorf("%s public key: %w", al.name, err)
		}
		e.keys[al.alg] = keyPair{blob, pub}
	}
	return e, nil
})

func keys(t testing.TB) *keyEnv {
	t.Helper()
	e, err := sharedKeys()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func hashOf(h utpm.Hash, msg []byte) (crypto.Hash, []byte) {
	switch h {
	case utpm.HashSHA256:
		d := sha256.Sum256(msg)
		return crypto.SHA256, d[:]
	case utpm.HashSHA384:
		d := sha512.Sum384(msg)
		return crypto.SHA384, d[:]
	case utpm.HashSHA512:
		d := sha512.Sum512(msg)
		return crypto.SHA512, d[:]
	}
	return 0, msg
}

// verify checks sig with the standard library, independently of the µTPM.
func verify(pub crypto.PublicKey, s utpm.Scheme, h utpm.Hash, digest, sig []byte) error {
	ch, _ := hashOf(h, nil)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	case ed25519.PublicKey:
		if !ed25519.Verify(k, digest, sig) {
			return errors.New("Ed25519 signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		if s == utpm.SchemeRSAPSS {
			return rsa.VerifyPSS(k, ch, digest, sig, &rsa.PSSOptions{SaltLength: ch.Size()})
		}
		return rsa.VerifyPKCS1v15(k, ch, digest, sig)
	}
	return fmt.Errorf("public key %T", pub)
}

func TestKeySignVerifies(t *testing.T) {
	e := keys(t)
	msg := []byte("message to sign")
	for _, tc := range []struct {
		alg utpm.KeyAlg
		s   utpm.Scheme
		h   utpm.Hash
	}{
		{utpm.KeyECDSAP256, utpm.SchemeECDSA, utpm.HashSHA256},
		{utpm.KeyECDSAP256, utpm.SchemeECDSA, utpm.HashSHA384},
		{utpm.KeyECDSAP256, utpm.SchemeECDSA, utpm.HashSHA512},
		{utpm.KeyEd25519, utpm.SchemeEdDSA, utpm.HashNone},
		{utpm.KeyRSA2048, utpm.SchemeRSASSA, utpm.HashSHA256},
		{utpm.KeyRSA2048, utpm.SchemeRSASSA, utpm.HashSHA384},
		{utpm.KeyRSA2048, utpm.SchemeRSAPSS, utpm.HashSHA256},
		{utpm.KeyRSA2048, utpm.SchemeRSAPSS, utpm.HashSHA512},
		{utpm.KeyRSA3072, utpm.SchemeRSASSA, utpm.HashSHA512},
		{utpm.KeyRSA3072, utpm.SchemeRSAPSS, utpm.HashSHA384},
	} {
		t.Run(fmt.Sprintf("alg%d/scheme%#x/hash%#x", tc.alg, tc.s, tc.h), func(t *testing.T) {
			k := e.keys[tc.alg]
			_, digest := hashOf(tc.h, msg)
			for i := 0; i < 2; i++ { // the second call uses the parsed-key cache
				sig, err := e.a.KeySign(k.blob, tc.s, tc.h, digest)
				if err != nil {
					t.Fatal(err)
				}
				if err := verify(k.pub, tc.s, tc.h, digest, sig); err != nil {
					t.Fatal(err)
				}
				bad := bytes.Clone(digest)
				bad[0] ^= 1
				if verify(k.pub, tc.s, tc.h, bad, sig) == nil {
					t.Fatal("signature verifies for another digest")
				}
			}
		})
	}
}

// TestKeySignRSARaw: RSASSA with HashNone pads the data as given (PKCS#11's CKM_RSA_PKCS), so
// a SHA-1 DigestInfo yields the standard SHA-1 PKCS#1 v1.5 signature, and data up to k−11
// bytes that is no DigestInfo at all (TLS 1.0's MD5‖SHA-1) signs too.
func TestKeySignRSARaw(t *testing.T) {
	e := keys(t)
	msg := []byte("message to sign")
	h1 := sha1.Sum(msg)
	sha1Info := append([]byte{0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14}, h1[:]...)
	for _, alg := range []utpm.KeyAlg{utpm.KeyRSA2048, utpm.KeyRSA3072} {
		k := e.keys[alg]
		pub := k.pub.(*rsa.PublicKey)
		for _, tc := range []struct {
			name     string
			data     []byte
			hash     crypto.Hash // the hash whose standard signature this is; 0: none
			verifies []byte      // what rsa.VerifyPKCS1v15 is given
		}{
			{"SHA-1 DigestInfo", sha1Info, crypto.SHA1, h1[:]},
			{"no DigestInfo, 36 bytes", bytes.Repeat([]byte{7}, 36), 0, bytes.Repeat([]byte{7}, 36)},
			{"k-11 bytes", bytes.Repeat([]byte{9}, pub.Size()-11), 0, bytes.Repeat([]byte{9}, pub.Size()-11)},
		} {
			t.Run(fmt.Sprintf("alg%d/%s", alg, tc.name), func(t *testing.T) {
				sig, err := e.a.KeySign(k.blob, utpm.SchemeRSASSA, utpm.HashNone, tc.data)
				if err != nil {
					t.Fatal(err)
				}
				if err := rsa.VerifyPKCS1v15(pub, tc.hash, tc.verifies, sig); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestKeySignECDSARaw: ECDSA with HashNone signs a digest of any length up to 64 bytes as the
// standard library's verifier reads it (SHA-1's 20, SHA-224's 28, 64 truncated to the order).
func TestKeySignECDSARaw(t *testing.T) {
	e := keys(t)
	k := e.keys[utpm.KeyECDSAP256]
	pub := k.pub.(*ecdsa.PublicKey)
	h1 := sha1.Sum([]byte("m"))
	h224 := sha256.Sum224([]byte("m"))
	for _, d := range [][]byte{h1[:], h224[:], {1}, bytes.Repeat([]byte{0xff}, 64)} {
		t.Run(fmt.Sprintf("%d bytes", len(d)), func(t *testing.T) {
			sig, err := e.a.KeySign(k.blob, utpm.SchemeECDSA, utpm.HashNone, d)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(pub, d, sig) {
				t.Fatal("signature does not verify")
			}
		})
	}
}

func TestKeySignRejects(t *testing.T) {
	e := keys(t)
	d32, d48, d64 := make([]byte, 32), make([]byte, 48), make([]byte, 64)
	ec, ed, r2 := e.keys[utpm.KeyECDSAP256].blob, e.keys[utpm.KeyEd25519].blob, e.keys[utpm.KeyRSA2048].blob
	for _, tc := range []struct {
		name   string
		tpm    *utpm.TPM
		blob   []byte
		s      utpm.Scheme
		h      utpm.Hash
		digest []byte
		want   error
	}{
		{"other PAL", e.b, ec, utpm.SchemeECDSA, utpm.HashSHA256, d32, utpm.ErrWrongPAL},
		{"ECDSA with RSASSA", e.a, ec, utpm.SchemeRSASSA, utpm.HashSHA256, d32, utpm.ErrUnsupported},
		{"ECDSA with EdDSA", e.a, ec, utpm.SchemeEdDSA, utpm.HashNone, d32, utpm.ErrUnsupported},
		{"ECDSA hash none, empty", e.a, ec, utpm.SchemeECDSA, utpm.HashNone, nil, utpm.ErrInvalid},
		{"ECDSA hash none, 65 bytes", e.a, ec, utpm.SchemeECDSA, utpm.HashNone, make([]byte, 65), utpm.ErrInvalid},
		{"ECDSA SHA-1 id", e.a, ec, utpm.SchemeECDSA, 0x0004, make([]byte, 20), utpm.ErrUnsupported},
		{"ECDSA short digest", e.a, ec, utpm.SchemeECDSA, utpm.HashSHA256, d48[:31], utpm.ErrInvalid},
		{"ECDSA SHA-384 with 32 bytes", e.a, ec, utpm.SchemeECDSA, utpm.HashSHA384, d32, utpm.ErrInvalid},
		{"Ed25519 with hash", e.a, ed, utpm.SchemeEdDSA, utpm.HashSHA512, d64, utpm.ErrUnsupported},
		{"Ed25519 with ECDSA", e.a, ed, utpm.SchemeECDSA, utpm.HashSHA256, d32, utpm.ErrUnsupported},
		{"Ed25519 message too large", e.a, ed, utpm.SchemeEdDSA, utpm.HashNone, make([]byte, 4097), utpm.ErrTooLarge},
		{"RSA with ECDSA", e.a, r2, utpm.SchemeECDSA, utpm.HashSHA256, d32, utpm.ErrUnsupported},
		{"RSA unknown scheme", e.a, r2, 0x0015, utpm.HashSHA256, d32, utpm.ErrUnsupported},
		{"RSA PSS SHA-512 with 48 bytes", e.a, r2, utpm.SchemeRSAPSS, utpm.HashSHA512, d48, utpm.ErrInvalid},
		{"RSA PSS hash none", e.a, r2, utpm.SchemeRSAPSS, utpm.HashNone, d32, utpm.ErrUnsupported},
		{"RSA raw empty", e.a, r2, utpm.SchemeRSASSA, utpm.HashNone, nil, utpm.ErrInvalid},
		{"RSA raw over k-11 bytes", e.a, r2, utpm.SchemeRSASSA, utpm.HashNone, make([]byte, 256-10), utpm.ErrInvalid},
		{"empty blob", e.a, nil, utpm.SchemeECDSA, utpm.HashSHA256, d32, utpm.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := tc.tpm.KeySign(tc.blob, tc.s, tc.h, tc.digest)
			wantErr(t, err, tc.want)
			if sig != nil {
				t.Fatal("signature returned with an error")
			}
		})
	}
	// Ed25519 at exactly the limit works.
	if _, err := e.a.KeySign(ed, utpm.SchemeEdDSA, utpm.HashNone, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
}

func TestKeyCreate(t *testing.T) {
	p := newPlatform(t, randomMaster(t))
	a, b := p.NewTPM(palA), p.NewTPM(palB)
	for _, alg := range []utpm.KeyAlg{0, 5, 255} {
		_, _, err := a.KeyCreate(alg, utpm.Policy{})
		wantErr(t, err, utpm.ErrUnsupported)
	}
	// A key created by A for B: only B signs with it (the paper's key-generating PAL).
	blob, pubDER, err := a.KeyCreate(utpm.KeyECDSAP256, utpm.Policy{Target: palB})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.ParsePKIXPublicKey(pubDER)
	d := sha256.Sum256([]byte("m"))
	sig, err := b.KeySign(blob, utpm.SchemeECDSA, utpm.HashSHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("signature does not verify")
	}
	_, err = a.KeySign(blob, utpm.SchemeECDSA, utpm.HashSHA256, d[:])
	wantErr(t, err, utpm.ErrWrongPAL)

	// The parsed-key cache must not bypass the PCR policy.
	bound, _, err := a.KeyCreate(utpm.KeyEd25519, utpm.Policy{PCRMask: 1 << 4, CurrentPCRs: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.KeySign(bound, utpm.SchemeEdDSA, utpm.HashNone, []byte("m")); err != nil {
		t.Fatal(err)
	}
	a.Extend(4, utpm.Digest{4})
	_, err = a.KeySign(bound, utpm.SchemeEdDSA, utpm.HashNone, []byte("m"))
	wantErr(t, err, utpm.ErrPCRMismatch)

	// A key blob is not bigger than needed and holds no clear private key material.
	if bytes.Contains(blob, pubDER[len(pubDER)-32:]) {
		t.Fatal("key blob contains the public point in clear")
	}
}

// TestAuditSinkFailureRefuses checks the audit contract of key objects (TPM.OnKeyUse): every
// operation reaches the sink with its outcome, and one the sink cannot record returns nothing
// but ErrAudit (ABI E_AUDIT, 15), while one that failed anyway keeps its own error.
func TestAuditSinkFailureRefuses(t *testing.T) {
	e := keys(t)
	ec := e.keys[utpm.KeyECDSAP256]
	pkcs8, err := x509.MarshalPKCS8PrivateKey(mustECDSA(t))
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("audited"))
	lost := errors.New("audit log: no space left on device")
	for _, tc := range []struct {
		name, op string
		run      func(tpm *utpm.TPM) (results [][]byte, err error)
		opErr    error // the operation's own error; nil: it succeeds
	}{
		{"create", "key-create", func(tpm *utpm.TPM) ([][]byte, error) {
			blob, pub, err := tpm.KeyCreate(utpm.KeyEd25519, utpm.Policy{})
			return [][]byte{blob, pub}, err
		}, nil},
		{"sign", "key-sign", func(tpm *utpm.TPM) ([][]byte, error) {
			sig, err := tpm.KeySign(ec.blob, utpm.SchemeECDSA, utpm.HashSHA256, d[:])
			return [][]byte{sig}, err
		}, nil},
		{"import", "key-import", func(tpm *utpm.TPM) ([][]byte, error) {
			blob, pub, _, err := tpm.KeyImport(pkcs8, utpm.Policy{})
			return [][]byte{blob, pub}, err
		}, nil},
		{"failed sign", "key-sign", func(tpm *utpm.TPM) ([][]byte, error) {
			sig, err := tpm.KeySign(ec.blob, utpm.SchemeECDSA, utpm.HashSHA256, d[:20])
			return [][]byte{sig}, err
		}, utpm.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, sinkErr := range []error{nil, lost} {
				tpm := e.p.NewTPM(palA)
				var got []string
				tpm.OnKeyUse(func(op string, err error) error {
					got = append(got, fmt.Sprintf("%s %v", op, err == nil))
					return sinkErr
				})
				res, err := tc.run(tpm)
				if want := []string{fmt.Sprintf("%s %v", tc.op, tc.opErr == nil)}; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("sink error %v: audited %q, want %q", sinkErr, got, want)
				}
				want := tc.opErr
				if want == nil && sinkErr != nil {
					want = utpm.ErrAudit
				}
				if want == nil {
					if err != nil {
						t.Fatalf("sink error %v: %v", sinkErr, err)
					}
					continue
				}
				if !errors.Is(err, want) {
					t.Fatalf("sink error %v: err %v, want %v", sinkErr, err, want)
				}
				if want == utpm.ErrAudit && (!errors.Is(err, lost) || utpm.Code(err) != 15) {
					t.Errorf("err %v (code %d) does not carry the sink's error and E_AUDIT", err, utpm.Code(err))
				}
				for i, r := range res {
					if r != nil {
						t.Errorf("result %d returned (%d bytes) with %v", i, len(r), err)
					}
				}
			}
		})
	}
}

func mustECDSA(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
