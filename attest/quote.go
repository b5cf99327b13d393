// This file handles µTPM quotes (docs/formats.md §3): a COSE_Sign1 by the visor's identity key
// over a CBOR claims map.
//
// Verifying a quote proves only that the holder of the identity key signed these claims. It
// does not prove that the identity key belongs to a genuine visor on a genuine TPM: that is
// the job of the root of trust's endorsement, which callers must check separately, and which
// does not exist at all for unrooted ("none") quotes (QuoteClaims.Rooted = false).

package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// Quote format constants (docs/formats.md §3); the µTPM produces what these describe.
const (
	QuoteVersion     = 1
	QuoteContentType = "application/vnd.palisade.utpm-quote+cbor"

	// MaxQuoteSize bounds evidence before anything parses it; a real quote is below 6 KiB.
	MaxQuoteSize = 16 << 10

	maxNonce    = 1024
	maxUserData = 4096
	numPCRs     = 8
)

// Claim keys of the quote's claims map.
const (
	claimVersion = iota + 1
	claimPAL
	claimPCRs
	claimNonce
	claimUserData
	claimVisor
	claimIssuedAt
	claimRooted
	numClaims = claimRooted
)

// Errors returned (wrapped) by the quote functions.
var (
	ErrMalformed = errors.New("attest: malformed quote")
	ErrVersion   = errors.New("attest: unsupported quote version")
	// ErrSignature: the µTPM quote's or the configuration statement's signature (the message
	// says which).
	ErrSignature = errors.New("attest: signature does not verify")
)

// QuoteClaims are the claims of a µTPM quote.
type QuoteClaims struct {
	Version  int              // QuoteVersion
	PAL      [32]byte         // measurement of the PAL that asked for the quote
	Visor    [32]byte         // measurement of the visor that ran it
	PCRs     map[int][32]byte // the PCRs the PAL selected, by index (0..7)
	Nonce    []byte           // the verifier's challenge, as the PAL passed it
	UserData []byte           // data the PAL chose to bind (e.g. a public key it created)
	IssuedAt time.Time        // visor clock, second precision, UTC
	Rooted   bool             // false: the visor ran on the "none" root of trust
}

// VerifyQuote checks that evidence is a well-formed µTPM quote signed with ES256 by identity
// and returns its claims. It does not check freshness (compare Nonce yourself), the PAL or
// visor measurements, or whether identity is endorsed: see the package comment.
func VerifyQuote(evidence []byte, identity *ecdsa.PublicKey) (*QuoteClaims, error) {
	if identity == nil {
		return nil, errors.New("attest: no identity key")
	}
	// The signature is checked before the claims are decoded: unauthenticated claims are
	// never parsed beyond the COSE envelope.
	msg, err := parseEnvelope(evidence)
	if err != nil {
		return nil, err
	}
	alg, err := msg.Headers.Protected.Algorithm()
	if err != nil || alg != cose.AlgorithmES256 {
		return nil, fmt.Errorf("%w: quote algorithm %v, want ES256", ErrSignature, alg)
	}
	v, err := cose.NewVerifier(cose.AlgorithmES256, identity)
	if err != nil {
		return nil, fmt.Errorf("attest: identity key: %w", err)
	}
	if kid, ok := msg.Headers.Unprotected[cose.HeaderLabelKeyID]; ok {
		// The key id is not signed, but it is checked: every byte of a quote is either signed
		// or checked (parseEnvelope allows no other unprotected label).
		der, err := x509.MarshalPKIXPublicKey(identity)
		if err != nil {
			return nil, fmt.Errorf("attest: identity key: %w", err)
		}
		want := sha256.Sum256(der)
		if b, _ := kid.([]byte); !bytes.Equal(b, want[:]) {
			return nil, fmt.Errorf("%w: quote signed by another key (key id %x)", ErrSignature, b)
		}
	}
	if err := msg.Verify(nil, v); err != nil {
		return nil, fmt.Errorf("%w: quote: %w", ErrSignature, err)
	}
	return decodeClaims(msg.Payload)
}

// DecodeQuoteUnverified returns the claims of evidence WITHOUT checking its signature: for
// display and debugging only, never for a decision.
func DecodeQuoteUnverified(evidence []byte) (*QuoteClaims, error) {
	c, _, err := ParseQuote(evidence)
	return c, err
}

// ParseQuote decodes evidence strictly, without checking its signature, and returns the claims
// and the COSE message (for callers that verify with another key type, e.g. a TPM-backed
// verifier). The claims must be exactly those of docs/formats.md §3, in deterministic encoding.
func ParseQuote(evidence []byte) (*QuoteClaims, *cose.Sign1Message, error) {
	msg, err := parseEnvelope(evidence)
	if err != nil {
		return nil, nil, err
	}
	c, err := decodeClaims(msg.Payload)
	if err != nil {
		return nil, nil, err
	}
	return c, msg, nil
}

// parseEnvelope decodes the COSE_Sign1 of a quote and checks that it says it carries µTPM
// quote claims.
func parseEnvelope(evidence []byte) (*cose.Sign1Message, error) {
	if len(evidence) > MaxQuoteSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(evidence))
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(evidence); err != nil {
		return nil, fmt.Errorf("%w: COSE_Sign1: %w", ErrMalformed, err)
	}
	if ct := msg.Headers.Protected[cose.HeaderLabelContentType]; ct != QuoteContentType {
		return nil, fmt.Errorf("%w: content type %v, want %q", ErrMalformed, ct, QuoteContentType)
	}
	// The unprotected header is not signed: it may hold the key id (label 4, checked against
	// the identity key by VerifyQuote) and nothing else, so no unsigned byte goes unchecked.
	for label := range msg.Headers.Unprotected {
		if label != cose.HeaderLabelKeyID {
			return nil, fmt.Errorf("%w: unprotected header label %v: only kid (4) is allowed", ErrMalformed, label)
		}
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("%w: detached payload", ErrMalformed)
	}
	return &msg, nil
}

var claimsDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:       cbor.DupMapKeyEnforcedAPF,
		IndefLength:     cbor.IndefLengthForbidden,
		TagsMd:          cbor.TagsForbidden,
		MaxNestedLevels: 4,
		MaxMapPairs:     16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// claimsWire mirrors the encoder in utpm, to check that the payload is canonical.
type claimsWire struct {
	Version  int            `cbor:"1,keyasint"`
	PAL      []byte         `cbor:"2,keyasint"`
	PCRs     map[int][]byte `cbor:"3,keyasint"`
	Nonce    []byte         `cbor:"4,keyasint"`
	UserData []byte         `cbor:"5,keyasint"`
	Visor    []byte         `cbor:"6,keyasint"`
	IssuedAt int64          `cbor:"7,keyasint"`
	Rooted   bool           `cbor:"8,keyasint"`
}

var claimsEnc = func() cbor.EncMode {
	o := cbor.CoreDetEncOptions()
	o.NilContainers = cbor.NilContainerAsEmpty
	em, err := o.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// CBOR major types checked before decoding a claim, so that a text string never passes for a
// byte string, or an integer for a boolean.
const (
	majorUint = 0
	majorNint = 1
	majorBstr = 2
	majorMap  = 5
)

func major(raw cbor.RawMessage) int {
	if len(raw) == 0 {
		return -1
	}
	return int(raw[0] >> 5)
}

func decodeClaims(payload []byte) (*QuoteClaims, error) {
	var m map[uint64]cbor.RawMessage
	if err := claimsDec.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	raw, ok := m[claimVersion]
	if !ok {
		return nil, fmt.Errorf("%w: no version claim", ErrMalformed)
	}
	var w claimsWire
	if major(raw) != majorUint || claimsDec.Unmarshal(raw, &w.Version) != nil {
		return nil, fmt.Errorf("%w: version claim is not an unsigned integer", ErrMalformed)
	}
	if w.Version != QuoteVersion {
		return nil, fmt.Errorf("%w: %d", ErrVersion, w.Version)
	}
	for k := range m {
		if k < 1 || k > numClaims {
			return nil, fmt.Errorf("%w: unknown claim %d", ErrMalformed, k)
		}
	}
	if len(m) != numClaims {
		return nil, fmt.Errorf("%w: %d of %d claims", ErrMalformed, len(m), numClaims)
	}

	c := &QuoteClaims{Version: w.Version, PCRs: make(map[int][32]byte)}
	var err error
	if w.PAL, err = bstr(m[claimPAL], 32, 32); err != nil {
		return nil, fmt.Errorf("%w: PAL claim: %w", ErrMalformed, err)
	}
	copy(c.PAL[:], w.PAL)
	if w.Visor, err = bstr(m[claimVisor], 32, 32); err != nil {
		return nil, fmt.Errorf("%w: visor claim: %w", ErrMalformed, err)
	}
	copy(c.Visor[:], w.Visor)
	if w.Nonce, err = bstr(m[claimNonce], 0, maxNonce); err != nil {
		return nil, fmt.Errorf("%w: nonce claim: %w", ErrMalformed, err)
	}
	c.Nonce = w.Nonce
	if w.UserData, err = bstr(m[claimUserData], 0, maxUserData); err != nil {
		return nil, fmt.Errorf("%w: user data claim: %w", ErrMalformed, err)
	}
	c.UserData = w.UserData

	raw = m[claimIssuedAt]
	if mt := major(raw); (mt != majorUint && mt != majorNint) || claimsDec.Unmarshal(raw, &w.IssuedAt) != nil {
		return nil, fmt.Errorf("%w: issued-at claim is not a 64-bit integer", ErrMalformed)
	}
	c.IssuedAt = time.Unix(w.IssuedAt, 0).UTC()

	switch raw = m[claimRooted]; {
	case len(raw) == 1 && raw[0] == 0xf4:
	case len(raw) == 1 && raw[0] == 0xf5:
		w.Rooted = true
	default:
		return nil, fmt.Errorf("%w: rooted claim is not a boolean", ErrMalformed)
	}
	c.Rooted = w.Rooted

	var pcrs map[uint64]cbor.RawMessage
	if major(m[claimPCRs]) != majorMap || claimsDec.Unmarshal(m[claimPCRs], &pcrs) != nil {
		return nil, fmt.Errorf("%w: PCR claim is not a map of PCR index to value", ErrMalformed)
	}
	w.PCRs = make(map[int][]byte, len(pcrs))
	for i, raw := range pcrs {
		if i >= numPCRs {
			return nil, fmt.Errorf("%w: PCR index %d", ErrMalformed, i)
		}
		v, err := bstr(raw, 32, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: PCR %d: %w", ErrMalformed, i, err)
		}
		w.PCRs[int(i)] = v
		c.PCRs[int(i)] = [32]byte(v)
	}

	// Deterministic encoding makes the signed bytes a function of the claims alone: one set of
	// claims, one encoding.
	canon, err := claimsEnc.Marshal(&w)
	if err != nil || !bytes.Equal(canon, payload) {
		return nil, fmt.Errorf("%w: claims are not in deterministic encoding", ErrMalformed)
	}
	return c, nil
}

func bstr(raw cbor.RawMessage, minLen, maxLen int) ([]byte, error) {
	var b []byte
	if major(raw) != majorBstr {
		return nil, errors.New("not a byte string")
	}
	if err := claimsDec.Unmarshal(raw, &b); err != nil {
		return nil, err
	}
	if len(b) < minLen || len(b) > maxLen {
		return nil, fmt.Errorf("%d bytes, want %d..%d", len(b), minLen, maxLen)
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}
