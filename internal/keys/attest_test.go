package keys_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/keys"
)

// visor is the visor measurement of the test daemon (start opens its root with Digest{1}).
var visorM = [32]byte{1}

func verifyOpts(d *daemon, nonce []byte) keys.VerifyOptions {
	return keys.VerifyOptions{
		Nonce: nonce, KeyGenPAL: d.s.KeyGenMeasurement(), SignerPAL: d.s.SignerMeasurement(),
		Evidence: attest.Options{Visor: visorM, AllowUnrooted: true},
	}
}

func TestAttestation(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	for _, alg := range []keys.Alg{keys.ECDSAP256, keys.Ed25519, keys.RSA2048} {
		if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: string(alg), Alg: alg, AllowUIDs: []uint32{33}}); err != nil {
			t.Fatal(err)
		}
		ev, err := d.s.Attest(ctx, www, string(alg), []byte("nonce-1"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := keys.VerifyAttestation(ev, verifyOpts(d, []byte("nonce-1")))
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if v.Imported || v.Creation == nil || v.Name != string(alg) || v.Alg != alg {
			t.Errorf("%s: %+v", alg, v.Attestation)
		}
	}
	ev, err := d.s.Attest(ctx, root, "ecdsa-p256", []byte("nonce-2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.s.Attest(ctx, alice, "ecdsa-p256", []byte("nonce-2")); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("alice attests: %v", err)
	}
	var a keys.Attestation
	if err := cbor.Unmarshal(ev, &a); err != nil {
		t.Fatal(err)
	}
	if !keys.IsAttestation(ev) || keys.IsAttestation(a.Creation) || keys.IsAttestation(a.Use) || keys.IsAttestation([]byte{0xa0}) {
		t.Error("IsAttestation does not tell a bundle from PAL evidence")
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherPub, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	edPub := func(f func(*keys.Attestation)) []byte {
		b := a
		f(&b)
		out, err := cbor.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		bundle []byte
		opts   func(*keys.VerifyOptions)
	}{
		{"stale nonce", ev, func(o *keys.VerifyOptions) { o.Nonce = []byte("nonce-1") }},
		{"other signing PAL", ev, func(o *keys.VerifyOptions) { o.SignerPAL[0] ^= 1 }},
		{"other key-generation PAL", ev, func(o *keys.VerifyOptions) { o.KeyGenPAL[0] ^= 1 }},
		{"other visor", ev, func(o *keys.VerifyOptions) { o.Evidence.Visor[0] ^= 1 }},
		{"unrooted refused", ev, func(o *keys.VerifyOptions) { o.Evidence.AllowUnrooted = false }},
		{"swapped public key", edPub(func(b *keys.Attestation) { b.Public = otherPub }), nil},
		{"claims imported", edPub(func(b *keys.Attestation) { b.Imported = true; b.Creation = nil }), nil},
		{"no creation", edPub(func(b *keys.Attestation) { b.Creation = nil }), nil},
		{"creation of another key", edPub(func(b *keys.Attestation) {
			var o keys.Attestation
			other, _ := d.s.Attest(ctx, root, "ed25519", []byte("nonce-2"))
			cbor.Unmarshal(other, &o)
			b.Creation = o.Creation
		}), nil},
		{"signature flipped", edPub(func(b *keys.Attestation) {
			b.Signature = append([]byte(nil), b.Signature...)
			b.Signature[len(b.Signature)-1] ^= 1
		}), nil},
		{"garbage", []byte("not cbor"), nil},
	} {
		o := verifyOpts(d, []byte("nonce-2"))
		if tc.opts != nil {
			tc.opts(&o)
		}
		if _, err := keys.VerifyAttestation(tc.bundle, o); !errors.Is(err, keys.ErrAttestation) {
			t.Errorf("%s: %v, want ErrAttestation", tc.name, err)
		}
	}
}

func TestImport(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	info, err := d.s.Import(ctx, root, keys.ImportOptions{
		CreateOptions: keys.CreateOptions{Name: "old", AllowUIDs: []uint32{33}, PIN: []byte("42")},
		PKCS8:         der,
	})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if !info.Imported || info.KeyGenPAL != ([32]byte{}) || string(info.PublicDER) != string(want) || info.Alg != keys.ECDSAP256 || !info.HasPIN {
		t.Fatalf("imported key: %+v", info)
	}
	if err := sign(t, d.s, www, "old", []byte("42")); err != nil {
		t.Fatal(err)
	}
	d = d.restart(t)
	if l, err := d.s.List(ctx, www); err != nil || len(l) != 1 || !l[0].Imported {
		t.Fatalf("after restart: %+v %v", l, err)
	}
	ev, err := d.s.Attest(ctx, www, "old", []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.VerifyAttestation(ev, verifyOpts(d, []byte("n"))); !errors.Is(err, keys.ErrAttestation) {
		t.Errorf("an imported key's attestation without AllowImported: %v", err)
	}
	o := verifyOpts(d, []byte("n"))
	o.AllowImported = true
	if v, err := keys.VerifyAttestation(ev, o); err != nil || !v.Imported {
		t.Errorf("with AllowImported: %v", err)
	}
	for _, tc := range []struct {
		name string
		der  []byte
	}{
		{"garbage", []byte("junk")},
		{"empty", nil},
		{"P-384", func() []byte {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			b, _ := x509.MarshalPKCS8PrivateKey(k)
			return b
		}()},
	} {
		_, err := d.s.Import(ctx, root, keys.ImportOptions{CreateOptions: keys.CreateOptions{Name: "x"}, PKCS8: tc.der})
		if !errors.Is(err, keys.ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", tc.name, err)
		}
	}
}
