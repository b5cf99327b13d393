package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/veraison/go-cose"
)

func TestSignVerify(t *testing.T) {
	for _, alg := range []string{"ed25519", "es256"} {
		t.Run(alg, func(t *testing.T) {
			k := newKey(t, alg)
			c := baseConfig(5)
			raw := mustSign(t, c, k)
			sc, err := Verify(raw, k.Public())
			if err != nil {
				t.Fatal(err)
			}
			want, _ := c.Hash()
			if sc.Version != 5 || sc.Hash != want {
				t.Fatalf("got version %d hash %s", sc.Version, sc.Hash)
			}
			kid, _ := PublicKeyID(k.Public())
			if sc.KeyID != kid {
				t.Fatal("wrong key id")
			}
			// Keys survive their PEM files.
			priv, _ := MarshalPrivateKey(k)
			pub, _ := MarshalPublicKey(k.Public())
			k2, err := ParsePrivateKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			p2, err := ParsePublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(mustSign(t, c, k2), p2); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	admin := newKey(t, "ed25519")
	other := newKey(t, "ed25519")
	otherEC := newKey(t, "es256")
	c := baseConfig(2)
	raw := mustSign(t, c, admin)

	// Tampering: change one byte inside the payload (a measurement) and keep the signature.
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	msg.Payload = bytes.Clone(msg.Payload)
	msg.Payload[len(msg.Payload)-1] ^= 1
	tampered, _ := msg.MarshalCBOR()

	// A document signed by another key that claims the admin's key id.
	kid, _ := PublicKeyID(admin.Public())
	signer, _ := cose.NewSigner(cose.AlgorithmEdDSA, other)
	payload, _ := c.Encode()
	forged, err := cose.Sign1(nil, signer, cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA, cose.HeaderLabelContentType: ContentType,
		cose.HeaderLabelKeyID: kid[:]}}, payload, nil)
	if err != nil {
		t.Fatal(err)
	}

	sigFlip := bytes.Clone(raw)
	sigFlip[len(sigFlip)-1] ^= 0x80

	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"tampered payload", tampered, ErrBadSignature},
		{"flipped signature", sigFlip, ErrBadSignature},
		{"foreign key", mustSign(t, c, other), ErrForeignKey},
		{"foreign ecdsa key", mustSign(t, c, otherEC), ErrForeignKey},
		{"forged key id", forged, ErrBadSignature},
		{"garbage", []byte("hello"), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"truncated", raw[:len(raw)/2], ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.raw, admin.Public())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyRefusesInvalidPayload(t *testing.T) {
	// A correctly signed payload that breaks the rules is still refused: the signature
	// does not make a document valid.
	admin := newKey(t, "ed25519")
	kid, _ := PublicKeyID(admin.Public())
	signer, _ := cose.NewSigner(cose.AlgorithmEdDSA, admin)
	bad, _ := encMode.Marshal(map[int]any{1: 0})
	raw, err := cose.Sign1(nil, signer, cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA, cose.HeaderLabelContentType: ContentType,
		cose.HeaderLabelKeyID: kid[:]}}, bad, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(raw, admin.Public()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
}

// FuzzVerify feeds arbitrary bytes to the signed-document parser and verifier. Nothing may
// panic, and anything accepted must be what the admin signed.
func FuzzVerify(f *testing.F) {
	admin, err := GenerateKey("ed25519")
	if err != nil {
		f.Fatal(err)
	}
	good, err := Sign(baseConfig(1), admin)
	if err != nil {
		f.Fatal(err)
	}
	goodHash, _ := baseConfig(1).Hash()
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0xf6, 0x40})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, _, err := Inspect(b); err == nil {
			if _, err := c.Encode(); err != nil {
				t.Fatalf("accepted payload does not encode: %v", err)
			}
		}
		sc, err := Verify(b, admin.Public())
		if err == nil && sc.Hash != goodHash {
			t.Fatalf("accepted a document the admin did not sign")
		}
	})
}

// FuzzDecodeCBOR checks the payload decoder alone: accepted input must be canonical.
func FuzzDecodeCBOR(f *testing.F) {
	enc, _ := baseConfig(1).Encode()
	f.Add(enc)
	f.Add([]byte{0xa1, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCBOR(b)
		if err != nil {
			return
		}
		again, err := c.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted non-canonical input")
		}
	})
}

// TestSizeLimitsNamed: a document over a size limit is refused with the limit named, not just
// its own size.
func TestSizeLimitsNamed(t *testing.T) {
	big := bytes.Repeat([]byte{' '}, 10<<20)
	admin := newKey(t, "ed25519")
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"signed", func() error { _, err := Verify(big, admin.Public()); return err }(), ErrMalformed},
		{"json", func() error { _, err := ParseJSON(big); return err }(), ErrInvalid},
		{"payload", func() error { _, err := DecodeCBOR(big); return err }(), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) || !strings.Contains(tc.err.Error(), "exceeds the limit") ||
				!strings.Contains(tc.err.Error(), "1 MiB") {
				t.Fatalf("got %v, want %v naming the 1 MiB limit", tc.err, tc.want)
			}
		})
	}
}
