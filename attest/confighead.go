package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/veraison/go-cose"
)

// ConfigContentType is the COSE content type of a configuration statement
// (docs/attestation.md §2.1).
const ConfigContentType = "application/vnd.palisade.config-head+cbor"

// maxConfigStatement bounds evidence field 6 before it is parsed (a real one is ~200 bytes).
const maxConfigStatement = 2 << 10

// ConfigHead is the trusted configuration a visor runs under: the commit record of its
// configuration state (docs/configurations.md: sequence number, version, configuration hash,
// hash of the last history entry), who signed it, and whether it lists this visor. Seq 0
// means nothing was ever applied.
type ConfigHead struct {
	Seq     uint64   // how many configurations were applied (the history's length)
	Version uint64   // the active configuration's version (never decreases)
	Config  [32]byte // SHA-256 of the canonical configuration (docs/configurations.md §1)
	Head    [32]byte // hash of the last history entry (docs/configurations.md §3)
	// Signer is the administrator key id (kid) that signed the configuration, which the
	// visor's state pins (and a TPM anchor holds).
	Signer [32]byte
	// VisorListed: the configuration lists this visor's measurement in its visors; a visor
	// it does not list serves nothing the configuration decides (docs/configurations.md §8).
	VisorListed bool
}

// Checks of the configuration statement's signer and visor (see also the Check constants).
const (
	CheckConfigSigner = "configuration-signer"
	CheckConfigVisor  = "configuration-visor"
)

// configStatement is the signed payload: the head and the verifier's nonce, so a statement
// cannot be replayed into evidence for another challenge.
type configStatement struct {
	Seq     uint64 `cbor:"1,keyasint"`
	Version uint64 `cbor:"2,keyasint"`
	Config  []byte `cbor:"3,keyasint"`
	Head    []byte `cbor:"4,keyasint"`
	Nonce   []byte `cbor:"5,keyasint"`
	Signer  []byte `cbor:"6,keyasint"`
	Visor   bool   `cbor:"7,keyasint"` // VisorListed
}

// AssembleOption adds optional parts to evidence.
type AssembleOption func(*assembleOptions)

type assembleOptions struct{ config *ConfigHead }

// WithConfiguration includes the visor's configuration head in the evidence, signed by the
// identity key together with the quote's nonce (evidence field 6).
func WithConfiguration(h ConfigHead) AssembleOption {
	return func(o *assembleOptions) { o.config = &h }
}

// signConfig makes evidence field 6: a COSE_Sign1 (ES256, by the identity key) over the head
// and nonce, with its own content type so it can never pass for a µTPM quote or the reverse.
func signConfig(key *ecdsa.PrivateKey, h ConfigHead, nonce []byte) ([]byte, error) {
	payload, err := evidenceEnc.Marshal(configStatement{
		Seq: h.Seq, Version: h.Version, Config: h.Config[:], Head: h.Head[:], Nonce: nonce,
		Signer: h.Signer[:], Visor: h.VisorListed,
	})
	if err != nil {
		return nil, err
	}
	s, err := cose.NewSigner(cose.AlgorithmES256, key)
	if err != nil {
		return nil, err
	}
	msg := cose.Sign1Message{
		Headers: cose.Headers{Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm:   cose.AlgorithmES256,
			cose.HeaderLabelContentType: ConfigContentType,
		}},
		Payload: payload,
	}
	if err := msg.Sign(rand.Reader, nil, s); err != nil {
		return nil, err
	}
	return msg.MarshalCBOR()
}

// verifyConfig checks field 6 against the identity key and the nonce and returns the head.
func verifyConfig(raw []byte, id *ecdsa.PublicKey, nonce []byte) (*ConfigHead, error) {
	if len(raw) > maxConfigStatement {
		return nil, fmt.Errorf("%w: configuration statement of %d bytes", ErrEvidence, len(raw))
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(raw); err != nil {
		return nil, fmt.Errorf("%w: configuration statement: %w", ErrEvidence, err)
	}
	if ct := msg.Headers.Protected[cose.HeaderLabelContentType]; ct != ConfigContentType {
		return nil, fmt.Errorf("%w: configuration statement content type %v", ErrEvidence, ct)
	}
	// Nothing unsigned: the statement is produced with an empty unprotected header.
	if len(msg.Headers.Unprotected) != 0 {
		return nil, fmt.Errorf("%w: configuration statement has an unprotected header (it must be empty)", ErrEvidence)
	}
	if alg, err := msg.Headers.Protected.Algorithm(); err != nil || alg != cose.AlgorithmES256 {
		return nil, fmt.Errorf("%w: configuration statement algorithm %v, want ES256", ErrSignature, alg)
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("%w: configuration statement without payload", ErrEvidence)
	}
	v, err := cose.NewVerifier(cose.AlgorithmES256, id)
	if err != nil {
		return nil, fmt.Errorf("attest: identity key: %w", err)
	}
	if err := msg.Verify(nil, v); err != nil {
		return nil, fmt.Errorf("%w: configuration statement: %w", ErrSignature, err)
	}
	var st configStatement
	if err := evidenceDec.Unmarshal(msg.Payload, &st); err != nil {
		return nil, fmt.Errorf("%w: configuration statement: %w", ErrEvidence, err)
	}
	if len(st.Config) != 32 || len(st.Head) != 32 || len(st.Signer) != 32 || len(st.Nonce) > maxNonce {
		return nil, fmt.Errorf("%w: configuration statement field sizes", ErrEvidence)
	}
	if canon, err := evidenceEnc.Marshal(st); err != nil || !bytes.Equal(canon, msg.Payload) {
		return nil, fmt.Errorf("%w: configuration statement not in deterministic encoding", ErrEvidence)
	}
	if !bytes.Equal(st.Nonce, nonce) {
		return nil, &CheckError{Check: CheckConfiguration, Want: hexOrEmpty(nonce), Got: hexOrEmpty(st.Nonce),
			Err: fmt.Errorf("%w: configuration statement made for another nonce", ErrMismatch)}
	}
	h := &ConfigHead{Seq: st.Seq, Version: st.Version, VisorListed: st.Visor}
	copy(h.Config[:], st.Config)
	copy(h.Head[:], st.Head)
	copy(h.Signer[:], st.Signer)
	return h, nil
}

// ConfigPolicy is what a verifier requires of the visor's trusted configuration
// (Options.Configuration). Zero fields require nothing.
type ConfigPolicy struct {
	MinVersion uint64   // the active version must be at least this
	Config     [32]byte // the active configuration must have this hash
	Head       [32]byte // the history must end at this entry
	Signer     [32]byte // the configuration must be signed by this administrator key id
	// VisorListed requires the configuration to list the visor's measurement.
	VisorListed bool
}

// checkConfig runs the configuration checks of Verify; h is nil when the evidence has none.
func checkConfig(ev *Evidence, id *ecdsa.PublicKey, nonce []byte, pol *ConfigPolicy) (*ConfigHead, error) {
	if ev.Configuration == nil {
		if pol != nil {
			return nil, fail(CheckConfiguration, fmt.Errorf("%w: evidence carries no configuration head", ErrMismatch))
		}
		return nil, nil
	}
	h, err := verifyConfig(ev.Configuration, id, nonce)
	if err != nil {
		var ce *CheckError
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, fail(CheckConfiguration, err)
	}
	if pol == nil {
		return h, nil
	}
	if h.Version < pol.MinVersion {
		return nil, &CheckError{Check: CheckConfigVersion, Want: fmt.Sprintf(">= %d", pol.MinVersion),
			Got: fmt.Sprint(h.Version), Err: ErrMismatch}
	}
	if pol.Config != ([32]byte{}) && h.Config != pol.Config {
		return nil, mismatch(CheckConfigHash, pol.Config[:], h.Config[:])
	}
	if pol.Head != ([32]byte{}) && h.Head != pol.Head {
		return nil, mismatch(CheckConfigHead, pol.Head[:], h.Head[:])
	}
	if pol.Signer != ([32]byte{}) && h.Signer != pol.Signer {
		return nil, mismatch(CheckConfigSigner, pol.Signer[:], h.Signer[:])
	}
	if pol.VisorListed && !h.VisorListed {
		return nil, &CheckError{Check: CheckConfigVisor, Want: "listed", Got: "not listed",
			Err: fmt.Errorf("%w: the configuration does not list this visor", ErrMismatch)}
	}
	return h, nil
}
