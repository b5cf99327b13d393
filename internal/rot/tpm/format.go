package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/palisade-project/palisade/internal/strictcbor"
	"github.com/palisade-project/palisade/internal/utpm"
)

// The wire format of a TPM endorsement (docs/attestation.md §3). It lives here, with its
// producer; attest verifies it.

// Event kinds, in the only order a visor extends them.
const (
	EventVisor    = "visor"    // the visor measurement (MeasureVisor)
	EventIdentity = "identity" // SHA-256 of the identity key's DER SubjectPublicKeyInfo
	EventCap      = "cap"      // CapDigest: nothing may unseal the master secret after it
)

// Domain-separation tags. Each is a distinct prefix, so a value computed for one purpose can
// never be presented as another.
const (
	visorTag     = "palisade.visor.v1\x00"
	capTag       = "palisade.cap.v1\x00"
	qualifyTag   = "palisade.tpm-endorsement.v1\x00"
	maxEvents    = 64
	maxEventKind = 64
	maxBlob      = 16 << 10 // one TPM structure or certificate
	maxChain     = 8
)

// Event is one extend of the visor PCR, in order.
type Event struct {
	PCR    uint32      `cbor:"1,keyasint"`
	Digest utpm.Digest `cbor:"2,keyasint"`
	Kind   string      `cbor:"3,keyasint"`
}

// Endorsement is what Root.Endorse returns, CBOR-encoded: a TPM2_Quote of the visor PCR by
// the attestation key, and the event log that explains the PCR's value.
type Endorsement struct {
	Quoted    []byte   `cbor:"1,keyasint"`           // TPMS_ATTEST, exactly as signed
	Signature []byte   `cbor:"2,keyasint"`           // TPMT_SIGNATURE (ECDSA P-256, SHA-256)
	AKPublic  []byte   `cbor:"3,keyasint"`           // TPMT_PUBLIC of the attestation key
	PCR       uint32   `cbor:"4,keyasint"`           // the visor PCR (SHA-256 bank)
	Events    []Event  `cbor:"5,keyasint"`           // every extend of PCR since its reset
	EKCert    []byte   `cbor:"6,keyasint,omitempty"` // DER, from TPM NV, when present
	EKChain   [][]byte `cbor:"7,keyasint,omitempty"` // DER intermediates, as configured
}

// ErrMalformed is wrapped by every decoding failure of this package's formats.
var ErrMalformed = errors.New("tpm: malformed")

var (
	encMode = strictcbor.EncMode()
	decMode = strictcbor.DecMode(strictcbor.Limits{MaxNestedLevels: 8, MaxArrayElements: 1024, MaxMapPairs: 64})
)

// Marshal encodes e deterministically.
func (e *Endorsement) Marshal() ([]byte, error) { return encMode.Marshal(e) }

// ParseEndorsement decodes an endorsement and checks its sizes; it checks no signature.
func ParseEndorsement(b []byte) (*Endorsement, error) {
	var e Endorsement
	if err := decMode.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w endorsement: %w", ErrMalformed, err)
	}
	switch {
	case len(e.Quoted) == 0 || len(e.Signature) == 0 || len(e.AKPublic) == 0:
		return nil, fmt.Errorf("%w endorsement: quote, signature and AK public are required", ErrMalformed)
	case len(e.Quoted) > maxBlob || len(e.Signature) > maxBlob || len(e.AKPublic) > maxBlob ||
		len(e.EKCert) > maxBlob:
		return nil, fmt.Errorf("%w endorsement: a field exceeds %d bytes", ErrMalformed, maxBlob)
	case len(e.EKChain) > maxChain:
		return nil, fmt.Errorf("%w endorsement: %d chain certificates (max %d)", ErrMalformed, len(e.EKChain), maxChain)
	case e.PCR > 23:
		return nil, fmt.Errorf("%w endorsement: PCR %d out of range", ErrMalformed, e.PCR)
	}
	for _, c := range e.EKChain {
		if len(c) == 0 || len(c) > maxBlob {
			return nil, fmt.Errorf("%w endorsement: chain certificate of %d bytes", ErrMalformed, len(c))
		}
	}
	if err := checkEvents(e.Events); err != nil {
		return nil, err
	}
	// One endorsement, one encoding: this also refuses digests of the wrong length, which the
	// decoder would silently pad or cut.
	if canon, err := e.Marshal(); err != nil || !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w endorsement: not in deterministic encoding", ErrMalformed)
	}
	return &e, nil
}

// EncodeEventLog and DecodeEventLog are the event log alone (the same CBOR array as in an
// Endorsement), for tools that keep it separately.
func EncodeEventLog(ev []Event) ([]byte, error) { return encMode.Marshal(ev) }

// DecodeEventLog decodes and bounds-checks an event log.
func DecodeEventLog(b []byte) ([]Event, error) {
	var ev []Event
	if err := decMode.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("%w endorsement: event log: %w", ErrMalformed, err)
	}
	if err := checkEvents(ev); err != nil {
		return nil, err
	}
	if canon, err := EncodeEventLog(ev); err != nil || !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w endorsement: event log not in deterministic encoding", ErrMalformed)
	}
	return ev, nil
}

func checkEvents(ev []Event) error {
	if len(ev) > maxEvents {
		return fmt.Errorf("%w endorsement: %d events (max %d)", ErrMalformed, len(ev), maxEvents)
	}
	for i, e := range ev {
		if e.PCR > 23 {
			return fmt.Errorf("%w endorsement: event %d: PCR %d out of range", ErrMalformed, i, e.PCR)
		}
		if len(e.Kind) > maxEventKind {
			return fmt.Errorf("%w endorsement: event %d: kind of %d bytes", ErrMalformed, i, len(e.Kind))
		}
	}
	return nil
}

// Replay computes the value of pcr after the events of the log that target it, starting from
// zero (the value after reset, or at boot).
func Replay(ev []Event, pcr uint32) utpm.Digest {
	var v utpm.Digest
	for _, e := range ev {
		if e.PCR == pcr {
			v = extend(v, e.Digest)
		}
	}
	return v
}

func extend(old, d utpm.Digest) utpm.Digest {
	var b [64]byte
	copy(b[:32], old[:])
	copy(b[32:], d[:])
	return sha256.Sum256(b[:])
}

// MeasureVisor is the visor measurement: SHA-256 over a tag, the SHA-256 of the executable and
// the SHA-256 of the configuration bytes; docs/attestation.md §3.2 computes it offline with
// openssl (TestVisorMeasurementRecipe).
func MeasureVisor(executable io.Reader, configuration []byte) (utpm.Digest, error) {
	h := sha256.New()
	if _, err := io.Copy(h, executable); err != nil {
		return utpm.Digest{}, fmt.Errorf("measure visor executable: %w", err)
	}
	exe := h.Sum(nil)
	cfg := sha256.Sum256(configuration)
	return sha256.Sum256(bytes.Join([][]byte{[]byte(visorTag), exe, cfg[:]}, nil)), nil
}

// CapDigest is what the visor extends last.
func CapDigest() utpm.Digest { return sha256.Sum256([]byte(capTag)) }

// QualifyingData is the TPM2_Quote qualifying data of an endorsement: it binds the identity
// key (DER SubjectPublicKeyInfo) and the verifier's nonce.
//
//	SHA-256( "palisade.tpm-endorsement.v1\0" ‖ u32be len(identity) ‖ identity ‖ u32be len(nonce) ‖ nonce )
func QualifyingData(identityDER, nonce []byte) []byte {
	h := sha256.New()
	h.Write([]byte(qualifyTag))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(identityDER)))
	h.Write(n[:])
	h.Write(identityDER)
	binary.BigEndian.PutUint32(n[:], uint32(len(nonce)))
	h.Write(n[:])
	h.Write(nonce)
	return h.Sum(nil)
}
