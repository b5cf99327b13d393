package config

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/veraison/go-cose"
)

// ContentType is the COSE content type of a signed configuration's payload.
const ContentType = "application/vnd.palisade.config+cbor"

// KeyID identifies an administrator key: SHA-256 of its DER SubjectPublicKeyInfo. It is the
// COSE "kid" of every configuration the key signs.
type KeyID [32]byte

func (k KeyID) String() string { return hex.EncodeToString(k[:]) }

// PublicKeyID computes the KeyID of an ECDSA P-256 or Ed25519 public key.
func PublicKeyID(pub crypto.PublicKey) (KeyID, error) {
	if _, err := coseAlg(pub); err != nil {
		return KeyID{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return KeyID{}, fmt.Errorf("admin key: %w", err)
	}
	return sha256.Sum256(der), nil
}

func coseAlg(pub crypto.PublicKey) (cose.Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return cose.AlgorithmES256, nil
		}
	case ed25519.PublicKey:
		return cose.AlgorithmEdDSA, nil
	}
	return 0, fmt.Errorf("admin key: %T is not ECDSA P-256 or Ed25519", pub)
}

// GenerateKey makes an administrator key: alg is "ed25519" or "es256".
func GenerateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case "es256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("admin key algorithm %q: want ed25519 or es256", alg)
}

// MarshalPrivateKey and MarshalPublicKey write PEM (PKCS#8, SubjectPublicKeyInfo).
func MarshalPrivateKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey reads a PEM PKCS#8 administrator key.
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("admin key: not a PEM \"PRIVATE KEY\"")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("admin key: %T cannot sign", k)
	}
	if _, err := coseAlg(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// ParsePublicKey reads a PEM SubjectPublicKeyInfo administrator key.
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("admin public key: not a PEM \"PUBLIC KEY\"")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin public key: %w", err)
	}
	if _, err := coseAlg(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// Signed is a configuration whose signature has been verified.
type Signed struct {
	*Config
	Raw   []byte      // the COSE_Sign1 as stored
	Hash  Measurement // SHA-256 of the canonical payload
	KeyID KeyID       // the administrator key that signed it
}

// Sign encodes c canonically and signs it into a tagged COSE_Sign1 with the protected
// headers alg, content type and kid.
func Sign(c *Config, key crypto.Signer) ([]byte, error) {
	payload, err := c.Encode()
	if err != nil {
		return nil, err
	}
	alg, err := coseAlg(key.Public())
	if err != nil {
		return nil, err
	}
	kid, err := PublicKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	signer, err := cose.NewSigner(alg, key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	hdr := cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm:   alg,
		cose.HeaderLabelContentType: ContentType,
		cose.HeaderLabelKeyID:       kid[:],
	}}
	b, err := cose.Sign1(rand.Reader, signer, hdr, payload, nil)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return b, nil
}

// Inspect parses a signed configuration WITHOUT verifying its signature: for tools that show
// what a file claims. Never use its result to make a decision.
func Inspect(raw []byte) (*Config, KeyID, error) {
	msg, kid, err := parseSign1(raw)
	if err != nil {
		return nil, kid, err
	}
	c, err := DecodeCBOR(msg.Payload)
	return c, kid, err
}

func parseSign1(raw []byte) (*cose.Sign1Message, KeyID, error) {
	var kid KeyID
	if len(raw) > MaxSignedSize {
		return nil, kid, fmt.Errorf("%w: %d bytes exceeds the limit of %d bytes (a 1 MiB document and %d bytes of signature)",
			ErrMalformed, len(raw), MaxSignedSize, maxSignatureSize)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		return nil, kid, fmt.Errorf("%w: not a COSE_Sign1: %v", ErrMalformed, err)
	}
	if ct, _ := msg.Headers.Protected[cose.HeaderLabelContentType].(string); ct != ContentType {
		return nil, kid, fmt.Errorf("%w: content type %v, want %q", ErrMalformed, msg.Headers.Protected[cose.HeaderLabelContentType], ContentType)
	}
	// Unprotected headers are not signed; a configuration has no use for them, so refusing
	// them keeps one document one byte string.
	if len(msg.Headers.Unprotected) != 0 {
		return nil, kid, fmt.Errorf("%w: unprotected headers are not allowed", ErrMalformed)
	}
	k, _ := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	if len(k) != len(kid) {
		return nil, kid, fmt.Errorf("%w: missing or bad key id in the protected header", ErrMalformed)
	}
	copy(kid[:], k)
	if msg.Payload == nil {
		return nil, kid, fmt.Errorf("%w: detached payload", ErrMalformed)
	}
	return &msg, kid, nil
}

// Verify checks that raw is a configuration signed by pub and returns it. A document signed
// by another key fails with ErrForeignKey, a modified one with ErrBadSignature, anything that
// does not parse with ErrMalformed, a payload that breaks the rules with ErrInvalid.
func Verify(raw []byte, pub crypto.PublicKey) (*Signed, error) {
	want, err := PublicKeyID(pub)
	if err != nil {
		return nil, err
	}
	msg, kid, err := parseSign1(raw)
	if err != nil {
		return nil, err
	}
	if kid != want {
		return nil, fmt.Errorf("%w: signed by key %s, trusted key is %s", ErrForeignKey, kid.String()[:16], want.String()[:16])
	}
	alg, _ := coseAlg(pub)
	if got, err := msg.Headers.Protected.Algorithm(); err != nil || got != alg {
		return nil, fmt.Errorf("%w: algorithm %v does not match the trusted key (%v)", ErrBadSignature, got, alg)
	}
	v, err := cose.NewVerifier(alg, pub)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if err := msg.Verify(nil, v); err != nil {
		return nil, fmt.Errorf("%w: the document or its signature was modified (%v)", ErrBadSignature, err)
	}
	c, err := DecodeCBOR(msg.Payload)
	if err != nil {
		return nil, err
	}
	return &Signed{Config: c, Raw: bytes.Clone(raw), Hash: sha256.Sum256(msg.Payload), KeyID: kid}, nil
}
