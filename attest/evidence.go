package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"github.com/palisade-project/palisade/internal/strictcbor"
)

// EvidenceVersion is the version of the Evidence structure (docs/attestation.md §2).
const EvidenceVersion = 1

// Root modes carried in evidence.
const (
	RootTPM  = "tpm"
	RootNone = "none"
)

// MaxEvidenceSize bounds evidence before anything parses it.
const MaxEvidenceSize = 64 << 10

// ErrEvidence is wrapped when evidence cannot be decoded.
var ErrEvidence = errors.New("attest: malformed evidence")

// Evidence is what a remote verifier receives for a PAL: the PAL's µTPM quote, the identity key
// that signed it, and how that key is rooted. Encoded as a CBOR map with integer keys in Core
// Deterministic Encoding.
type Evidence struct {
	Version     int    `cbor:"1,keyasint"`           // EvidenceVersion
	Quote       []byte `cbor:"2,keyasint"`           // µTPM quote: COSE_Sign1 (docs/formats.md §3)
	Identity    []byte `cbor:"3,keyasint"`           // identity key, DER SubjectPublicKeyInfo
	Root        string `cbor:"4,keyasint"`           // RootTPM or RootNone
	Endorsement []byte `cbor:"5,keyasint,omitempty"` // TPM endorsement, docs/attestation.md §3 (absent for "none")
	// Configuration is optional: the visor's trusted-configuration head and the nonce,
	// COSE_Sign1 by the identity key (WithConfiguration, docs/attestation.md §2.1).
	Configuration []byte `cbor:"6,keyasint,omitempty"`
}

var (
	evidenceEnc = strictcbor.EncMode()
	// evidenceDec decodes every structure of the evidence (and the configuration statement)
	// strictly: no duplicate or unknown keys, no indefinite lengths, no tags, small and shallow.
	evidenceDec = strictcbor.DecMode(strictcbor.Limits{MaxNestedLevels: 4, MaxMapPairs: 16})
)

// Marshal encodes e.
func (e *Evidence) Marshal() ([]byte, error) { return evidenceEnc.Marshal(e) }

// Parse decodes evidence strictly (one encoding per evidence, known fields only, bounded
// sizes). It verifies nothing: use Verify.
func Parse(b []byte) (*Evidence, error) {
	if len(b) > MaxEvidenceSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrEvidence, len(b), MaxEvidenceSize)
	}
	var e Evidence
	if err := evidenceDec.Unmarshal(b, &e); err != nil {
		// The decoder says only "EOF" or "unexpected EOF" for an empty or cut file.
		switch {
		case len(b) == 0:
			return nil, fmt.Errorf("%w: empty (0 bytes)", ErrEvidence)
		case b[0]>>5 != 5: // evidence is a CBOR map (major type 5)
			return nil, fmt.Errorf("%w: not evidence: a CBOR map is expected, the input starts with byte 0x%02x", ErrEvidence, b[0])
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%w: truncated at %d bytes: %w", ErrEvidence, len(b), err)
		}
		return nil, fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	switch {
	case e.Version != EvidenceVersion:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrEvidence, e.Version, EvidenceVersion)
	case len(e.Quote) == 0 || len(e.Identity) == 0:
		return nil, fmt.Errorf("%w: quote and identity are required", ErrEvidence)
	case e.Root != RootTPM && e.Root != RootNone:
		return nil, fmt.Errorf("%w: root mode %q", ErrEvidence, e.Root)
	case e.Root == RootNone && e.Endorsement != nil:
		return nil, fmt.Errorf("%w: root mode %q with an endorsement", ErrEvidence, e.Root)
	case e.Root == RootTPM && len(e.Endorsement) == 0:
		return nil, fmt.Errorf("%w: root mode %q without an endorsement", ErrEvidence, e.Root)
	}
	if canon, err := e.Marshal(); err != nil || !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: not in deterministic encoding", ErrEvidence)
	}
	return &e, nil
}

// Root is the root of trust of the visor that made a quote, as Assemble needs it. The daemon's
// roots of trust ("tpm" and "none") implement it; a relying party never needs one.
type Root interface {
	// Mode is RootTPM or RootNone.
	Mode() string
	// IdentityKey is the visor identity key: it signed the quote, and Assemble signs the
	// configuration statement with it.
	IdentityKey() *ecdsa.PrivateKey
	// Endorse returns the root's endorsement of the identity key, fresh for nonce
	// (evidence field 5; nil for RootNone).
	Endorse(ctx context.Context, nonce []byte) ([]byte, error)
}

// Assemble builds the evidence for quote, a µTPM quote made by a PAL on the visor whose root
// of trust is r: it asks r to endorse the identity key for the quote's own nonce, so one nonce
// makes both the µTPM quote and the TPM quote fresh. WithConfiguration adds the visor's
// configuration head, signed by the identity key for the same nonce.
//
// Assemble is the producer's side of the format that Parse and Verify read: palisaded calls it
// to answer an Attest request.
func Assemble(ctx context.Context, r Root, quote []byte, opts ...AssembleOption) ([]byte, error) {
	var o assembleOptions
	for _, f := range opts {
		f(&o)
	}
	claims, err := DecodeQuoteUnverified(quote)
	if err != nil {
		return nil, fmt.Errorf("attest: assemble: %w", err)
	}
	key := r.IdentityKey()
	id, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("attest: assemble: identity key: %w", err)
	}
	e := Evidence{Version: EvidenceVersion, Quote: quote, Identity: id, Root: r.Mode()}
	switch e.Root {
	case RootNone:
	case RootTPM:
		if e.Endorsement, err = r.Endorse(ctx, claims.Nonce); err != nil {
			return nil, fmt.Errorf("attest: assemble: endorse: %w", err)
		}
	default:
		return nil, fmt.Errorf("attest: assemble: unknown root mode %q", e.Root)
	}
	if o.config != nil {
		if e.Configuration, err = signConfig(key, *o.config, claims.Nonce); err != nil {
			return nil, fmt.Errorf("attest: assemble: configuration: %w", err)
		}
	}
	return e.Marshal()
}
