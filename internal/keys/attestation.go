package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/internal/strictcbor"
)

// Attestation is the key-attestation bundle of `palisade key attest` (docs/keys.md §5), CBOR
// encoded. Creation is the key-generation PAL's evidence, made once when the key was created:
// its user data binds the algorithm, the signing PAL's measurement and the public key. Use is
// the signing PAL's evidence for the verifier's nonce: its user data binds Signature, the
// key's signature over SHA-256("palisade key-attest v1" ‖ nonce). An imported key has no
// Creation.
type Attestation struct {
	Version   int    `cbor:"1,keyasint"`
	Name      string `cbor:"2,keyasint"`
	Alg       Alg    `cbor:"3,keyasint"`
	Public    []byte `cbor:"4,keyasint"` // PKIX DER
	Imported  bool   `cbor:"5,keyasint"`
	Creation  []byte `cbor:"6,keyasint,omitempty"`
	Use       []byte `cbor:"7,keyasint"`
	Signature []byte `cbor:"8,keyasint"`
}

var (
	// attEnc encodes bundles deterministically (Core Deterministic Encoding, as evidence).
	attEnc = strictcbor.EncMode()
	// attDec decodes bundles strictly, with the limits attest decodes evidence with: no
	// duplicate or unknown keys, no indefinite lengths, no tags, shallow.
	attDec = strictcbor.DecMode(strictcbor.Limits{MaxNestedLevels: 4, MaxMapPairs: 16})
)

// MaxAttestationSize bounds a bundle before anything parses it: two pieces of evidence.
const MaxAttestationSize = 2*attest.MaxEvidenceSize + 16<<10

// IsAttestation reports whether b decodes as a key-attestation bundle (and not, say, as the
// evidence of a PAL, whose key 2 is bytes, not a name). It verifies nothing.
func IsAttestation(b []byte) bool {
	var a Attestation
	return len(b) <= MaxAttestationSize && attDec.Unmarshal(b, &a) == nil && a.Version == 1 && len(a.Use) > 0
}

// Tags of the PALs' user data (pals/keygen.c, pals/signer.c).
const (
	createTag = "palisade key-create v1"
	attestTag = "palisade key-attest v1"
	maxNonce  = 64
)

// attestScheme is the scheme and hash the signing PAL uses for the attestation challenge.
func attestScheme(a Alg) (scheme, hash uint16) {
	switch a {
	case ECDSAP256:
		return signreq.SchemeECDSA, signreq.HashSHA256
	case Ed25519:
		return signreq.SchemeEdDSA, signreq.HashNone
	}
	return signreq.SchemeRSASSA, signreq.HashSHA256
}

// Attest returns the key-attestation bundle of name, fresh for nonce (1..64 bytes). Anyone who
// may use the key may attest it; the PIN is not needed (the key signs only a domain-separated
// challenge).
func (s *Service) Attest(ctx context.Context, c Caller, name string, nonce []byte) ([]byte, error) {
	if len(nonce) == 0 || len(nonce) > maxNonce {
		return nil, fmt.Errorf("%w: nonce of %d bytes (1..%d)", ErrBadRequest, len(nonce), maxNonce)
	}
	r, err := s.lookup(c, name, "attest", either)
	if err != nil {
		return nil, err
	}
	scheme, hash := attestScheme(r.Alg)
	out, err := s.call(ctx, r.SignerPAL, "attest", attestInput(scheme, hash, r.Blob, nonce))
	if err != nil {
		s.recordRefusal(AuditEvent{Event: "key_attest", Caller: c, Key: name, Owner: r.Owner, Op: "attest", Err: err})
		return nil, err
	}
	sig, quote, ok := lv32(out)
	if !ok || len(sig) == 0 || len(quote) == 0 {
		return nil, fmt.Errorf("%w: signing PAL: malformed attestation of %d bytes", ErrUnavailable, len(out))
	}
	use, err := attest.Assemble(ctx, s.v.Root(), quote)
	if err != nil {
		return nil, fmt.Errorf("%w: attestation: %w", ErrUnavailable, err)
	}
	b, err := attEnc.Marshal(Attestation{
		Version: 1, Name: r.Name, Alg: r.Alg, Public: r.Public, Imported: r.Imported,
		Creation: r.Creation, Use: use, Signature: sig,
	})
	if err != nil {
		return nil, err
	}
	if err := s.record(AuditEvent{Event: "key_attest", Caller: c, Key: name, Owner: r.Owner, Op: "attest"}, true); err != nil {
		return nil, err
	}
	return b, nil
}

// VerifyOptions are a verifier's reference values for VerifyAttestation.
type VerifyOptions struct {
	Nonce     []byte   // the nonce the verifier sent
	KeyGenPAL [32]byte // the key-generation PAL it trusts (docs/keys.md: the shipped one's)
	SignerPAL [32]byte // the signing PAL the key must be bound to
	// Evidence holds the rest of the evidence checks (Visor, AllowUnrooted, EKRoots,
	// AKPublic); its Nonce and PAL are set by VerifyAttestation.
	Evidence attest.Options
	// CreationVisor is the visor that ran the key's creation, if another than
	// Evidence.Visor (the daemon was upgraded since); zero: the same.
	CreationVisor [32]byte
	// AllowImported accepts a key that was imported rather than generated in a PAL.
	AllowImported bool
}

// Verified is what a verified attestation proves.
type Verified struct {
	Attestation
	PublicKey crypto.PublicKey
	Use       *attest.Result // the signing PAL's fresh evidence
	Creation  *attest.Result // the key-generation PAL's evidence; nil if imported
}

// ErrAttestation means a key attestation does not verify; it wraps the failed check.
var ErrAttestation = errors.New("keys: key attestation does not verify")

// VerifyAttestation checks a key-attestation bundle: the signing PAL's evidence is fresh for
// o.Nonce, from o.SignerPAL, and binds a signature by the attested public key over the
// challenge; the creation evidence is from o.KeyGenPAL and binds the algorithm, o.SignerPAL
// and the public key. Together: the key was generated inside o.KeyGenPAL, as a µTPM key
// object that only o.SignerPAL can use (the µTPM enforces the binding, and the key-generation
// PAL's code, known by its measurement, makes no other key), and o.SignerPAL can use it now.
// Each evidence is verified by attest.Verify with o.Evidence; read attest's documentation for
// what that does and does not prove.
func VerifyAttestation(bundle []byte, o VerifyOptions) (*Verified, error) {
	if len(bundle) > MaxAttestationSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrAttestation, len(bundle), MaxAttestationSize)
	}
	var a Attestation
	if err := attDec.Unmarshal(bundle, &a); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrAttestation, err)
	}
	if a.Version != 1 {
		return nil, fmt.Errorf("%w: version %d (want 1)", ErrAttestation, a.Version)
	}
	pub, err := x509.ParsePKIXPublicKey(a.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %w", ErrAttestation, err)
	}
	if err := checkPublic(a.Alg, a.Public); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAttestation, err)
	}
	v := &Verified{Attestation: a, PublicKey: pub}

	eo := o.Evidence
	eo.Nonce, eo.PAL = o.Nonce, o.SignerPAL
	if v.Use, err = attest.Verify(a.Use, eo); err != nil {
		return nil, fmt.Errorf("%w: signing PAL evidence: %w", ErrAttestation, err)
	}
	c := sha256.Sum256(append([]byte(attestTag), o.Nonce...))
	if !verifySig(pub, c[:], a.Signature) {
		return nil, fmt.Errorf("%w: the challenge signature does not verify with the attested public key", ErrAttestation)
	}
	user := sha256.Sum256(append([]byte(attestTag), a.Signature...))
	if !bytes.Equal(v.Use.Claims.UserData, user[:]) {
		return nil, fmt.Errorf("%w: the signing PAL's evidence does not bind the challenge signature", ErrAttestation)
	}

	if a.Imported {
		if !o.AllowImported {
			return nil, fmt.Errorf("%w: the key was imported, not generated in a PAL", ErrAttestation)
		}
		return v, nil
	}
	claims, err := decodeClaims(a.Creation)
	if err != nil {
		return nil, fmt.Errorf("%w: creation evidence: %w", ErrAttestation, err)
	}
	co := o.Evidence
	co.Nonce, co.PAL = claims.Nonce, o.KeyGenPAL
	if o.CreationVisor != ([32]byte{}) {
		co.Visor = o.CreationVisor
	}
	if v.Creation, err = attest.Verify(a.Creation, co); err != nil {
		return nil, fmt.Errorf("%w: key-generation PAL evidence: %w", ErrAttestation, err)
	}
	alg, err := palAlg(a.Alg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAttestation, err)
	}
	ph := sha256.Sum256(a.Public)
	want := bytes.Join([][]byte{[]byte(createTag), {byte(alg)}, o.SignerPAL[:], ph[:]}, nil)
	if !bytes.Equal(v.Creation.Claims.UserData, want) {
		return nil, fmt.Errorf("%w: the creation evidence does not bind this public key to signing PAL %x", ErrAttestation, o.SignerPAL)
	}
	return v, nil
}

// decodeClaims reads the claims of an evidence bundle without verifying them, for its nonce.
func decodeClaims(ev []byte) (*attest.QuoteClaims, error) {
	e, err := attest.Parse(ev)
	if err != nil {
		return nil, err
	}
	return attest.DecodeQuoteUnverified(e.Quote)
}

func verifySig(pub crypto.PublicKey, c, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, c, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, c, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, c, sig) == nil
	}
	return false
}
