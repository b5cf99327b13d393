// Package utpm is the micro-TPM of TrustVisor: one per registered PAL, with PCRs, sealed
// storage bound to PAL identities, attestation (quote), key objects and monotonic counters.
//
// It does no I/O. Secrets and the identity key come from the root of trust through
// PlatformConfig; counters are persisted through a CounterStore.
//
// Every method is called on behalf of a running PAL with untrusted arguments.
package utpm

import (
	"crypto/ecdsa"
	"errors"
	"io"
	"time"
)

// Digest is a SHA-256 value: a measurement or a PCR.
type Digest [32]byte

// NumPCRs is the number of PCRs of every µTPM.
const NumPCRs = 8

// CounterStore persists monotonic counters per (PAL measurement, id). Implementations must
// never return a value lower than one they returned before, across restarts.
type CounterStore interface {
	Read(pal Digest, id uint32) (uint64, error)
	Increment(pal Digest, id uint32) (uint64, error)
}

// PlatformConfig is what the root of trust gives the µTPMs of one visor.
type PlatformConfig struct {
	MasterSecret []byte            // ≥ 32 bytes; seal keys are derived from it
	Identity     *ecdsa.PrivateKey // P-256; signs quotes
	Visor        Digest            // the visor's measurement, reported in quotes
	Rooted       bool              // false for the "none" root: quotes say so
	Counters     CounterStore
	Now          func() time.Time // defaults to time.Now
	// Authorize decides, at UNSEAL and KEY_SIGN of a blob sealed to a name under a signer,
	// whether the caller may act as that name (see Authorizer). Nil: such blobs are refused
	// with ErrUnsupported. Platform.SetAuthorizer changes it later.
	Authorize Authorizer
	// Rand defaults to crypto/rand.Reader. It supplies blob nonces, RANDOM and Ed25519 keys;
	// since Go 1.26 ECDSA and RSA key generation and signing ignore it and always use the
	// system's secure source.
	Rand io.Reader
}

// Errors, one per ABI error code (docs/abi.md §4).
var (
	ErrInvalid     = errors.New("utpm: invalid argument")
	ErrPCR         = errors.New("utpm: PCR index out of range or not writable")
	ErrTampered    = errors.New("utpm: sealed blob failed its integrity check")
	ErrForeign     = errors.New("utpm: sealed blob was made by another platform")
	ErrWrongPAL    = errors.New("utpm: sealed blob is bound to another PAL")
	ErrPCRMismatch = errors.New("utpm: sealed blob is bound to other PCR values")
	ErrWrongType   = errors.New("utpm: wrong kind of sealed blob")
	ErrUnsupported = errors.New("utpm: unsupported algorithm or scheme")
	ErrTooLarge    = errors.New("utpm: size exceeds its limit")
	ErrInternal    = errors.New("utpm: internal failure")
	ErrMalformed   = errors.New("utpm: sealed blob is malformed")
	// ErrNotAuthorized: the blob is sealed to a name under a signer, and the active
	// configuration of that signer does not list the caller's measurement under that name
	// (never listed, revoked, or another signer's configuration is active).
	ErrNotAuthorized = errors.New("utpm: caller is not authorized for the name the blob is sealed to")
	// ErrAudit: the key-object operation could not be recorded in the visor's audit log (its
	// disk is full, say), so it was refused: no key blob or signature was returned. The PAL
	// may retry; the operation succeeds again once the log takes records (TPM.OnKeyUse).
	ErrAudit = errors.New("utpm: the operation could not be recorded in the audit log")
)

// Authorizer reports whether a PAL with measurement caller may act as the PAL name in the
// configuration that signer (the SHA-256 key id of an administrator key) has made active. It
// is asked at every UNSEAL and KEY_SIGN of a blob sealed to (name, signer), never cached by
// the µTPM, so an update that lists a new build under name gives it access at once and a
// revocation takes effect at the next call.
//
// nil allows. An error wrapping ErrInternal is a failure to decide (the PAL gets E_INTERNAL
// and may retry); any other error is a refusal (E_NOTAUTHORIZED). *config.Watcher provides
// one (config.Watcher.UTPMAuthorizer).
type Authorizer func(signer Digest, name string, caller Digest) error

// Limits of the µTPM.
const (
	MaxSealData = 1 << 20 // bytes of sealed data
	MaxNonce    = 1024
	MaxUserData = 4096
	MaxRandom   = 64 << 10
	MaxName     = 128 // bytes of a policy name (the configuration's name rule)
)

// ValidName reports whether name may appear in a policy: 1..MaxName bytes of
// [A-Za-z0-9._-], not starting with '.', '_' or '-' (the rule of configuration names,
// docs/configurations.md §1).
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > MaxName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// Policy says who may unseal a blob (or sign with a key).
type Policy struct {
	// Target is the measurement of the PAL that may unseal. Zero means the caller itself,
	// unless Name is set.
	Target Digest
	// Name and Signer seal to "a name under a signer" (target kind 2): any PAL that the
	// configuration active under Signer (an administrator key id) lists under Name may
	// unseal, as decided by the platform's Authorizer at each use. Target must then be zero.
	Name   string
	Signer Digest
	// PCRMask selects PCRs (bit i = PCR i) whose values must equal PCRValues[i] at unseal.
	PCRMask uint8
	// PCRValues holds the expected values of the selected PCRs, indexed by PCR number.
	// CurrentPCRs asks Seal to take the caller's current values instead.
	PCRValues   [NumPCRs]Digest
	CurrentPCRs bool
}

// KeyAlg is the algorithm of a key object (ABI values).
type KeyAlg uint8

const (
	KeyECDSAP256 KeyAlg = 1
	KeyEd25519   KeyAlg = 2
	KeyRSA2048   KeyAlg = 3
	KeyRSA3072   KeyAlg = 4
)

// Scheme and Hash mirror TPM 2.0 algorithm IDs (TPM_ALG_*).
type (
	Scheme uint16
	Hash   uint16
)

const (
	SchemeRSASSA Scheme = 0x0014
	SchemeRSAPSS Scheme = 0x0016
	SchemeECDSA  Scheme = 0x0018
	SchemeEdDSA  Scheme = 0x0060

	HashNone   Hash = 0x0000
	HashSHA256 Hash = 0x000B
	HashSHA384 Hash = 0x000C
	HashSHA512 Hash = 0x000D
)
