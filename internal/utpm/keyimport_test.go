package utpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/internal/utpm"
)

func TestKeyImport(t *testing.T) {
	e := keys(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		name   string
		key    crypto.Signer
		alg    utpm.KeyAlg
		scheme utpm.Scheme
		hash   utpm.Hash
	}{
		{"ECDSAP256", ec, utpm.KeyECDSAP256, utpm.SchemeECDSA, utpm.HashSHA256},
		{"Ed25519", ed, utpm.KeyEd25519, utpm.SchemeEdDSA, utpm.HashNone},
		{"RSA2048", rs, utpm.KeyRSA2048, utpm.SchemeRSAPSS, utpm.HashSHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.MarshalPKCS8PrivateKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			blob, pub, alg, err := e.a.KeyImport(der, utpm.Policy{Target: palB})
			if err != nil {
				t.Fatal(err)
			}
			want, _ := x509.MarshalPKIXPublicKey(tc.key.Public())
			if alg != tc.alg || !bytes.Equal(pub, want) {
				t.Fatalf("alg %d, public key %x; want %d, %x", alg, pub, tc.alg, want)
			}
			msg := sha256.Sum256([]byte("imported"))
			digest := msg[:]
			if tc.hash == utpm.HashNone {
				digest = []byte("imported")
			}
			sig, err := e.b.KeySign(blob, tc.scheme, tc.hash, digest)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify(tc.key.Public(), tc.scheme, tc.hash, digest, sig); err != nil {
				t.Fatal(err)
			}
			if _, err := e.a.KeySign(blob, tc.scheme, tc.hash, digest); !errors.Is(err, utpm.ErrWrongPAL) {
				t.Fatalf("the importer signs with a key bound to another PAL: %v", err)
			}
		})
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384der, _ := x509.MarshalPKCS8PrivateKey(p384)
	for _, tc := range []struct {
		name string
		der  []byte
		want error
	}{
		{"garbage", []byte("not a key"), utpm.ErrInvalid},
		{"P-384", p384der, utpm.ErrUnsupported},
	} {
		if _, _, _, err := e.a.KeyImport(tc.der, utpm.Policy{Target: palB}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
