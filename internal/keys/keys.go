// Package keys is palisaded's service of named, persistent keys (DESIGN.md §8a): a key is
// generated inside a key-generation PAL, bound to the measurement of a signing PAL (the paper's
// PAL1/PAL2 split), kept as a µTPM key blob in the daemon's state, and used only through its
// signing PAL. Access is per key: an owner and the uids and gids allowed to sign.
//
// This file is the contract shared by the front ends (the gRPC API, the lean protocol of
// internal/lean, the CLI): the types that cross them and the errors they map to codes.
package keys

import (
	"context"
	"errors"
	"time"
)

// Alg is a key algorithm, by its name on the command line and on the wire.
type Alg string

// The algorithms of `palisade key create --alg`.
const (
	ECDSAP256 Alg = "ecdsa-p256"
	Ed25519   Alg = "ed25519"
	RSA2048   Alg = "rsa-2048"
	RSA3072   Alg = "rsa-3072"
)

// Caller is who asks, as the kernel reported it for the connection (SO_PEERCRED), plus the
// caller's supplementary groups (read by the daemon from /proc/PID/status at accept).
type Caller struct {
	UID, GID uint32
	Groups   []uint32
	PID      int32
}

// Info is what anyone allowed to use a key may learn of it.
type Info struct {
	Name      string
	Alg       Alg
	PublicDER []byte   // PKIX (SubjectPublicKeyInfo) DER
	CertChain [][]byte // DER certificates, leaf first; may be empty
	Owner     uint32   // uid
	AllowUIDs []uint32
	AllowGIDs []uint32
	HasPIN    bool
	Imported  bool      // the key was imported, not generated in a PAL
	KeyGenPAL [32]byte  // measurement of the key-generation PAL (zero if imported)
	SignerPAL [32]byte  // measurement of the signing PAL the key is bound to
	Created   time.Time // UTC
}

// SignRequest is one signature. Scheme and Hash are the TPM 2.0 algorithm ids of
// client/signreq (SchemeRSASSA, SchemeRSAPSS, SchemeECDSA, SchemeEdDSA; HashSHA256/384/512, or
// HashNone for Ed25519, whose Digest is the whole message, for RSASSA, whose Digest is then
// padded and signed as given (an encoded DigestInfo), and for ECDSA over a hash of another
// length, 1 to 64 bytes: docs/abi.md §3).
type SignRequest struct {
	Scheme uint16
	Hash   uint16
	Digest []byte
	PIN    []byte // nil when the key has no PIN
}

// Signer is what the hot-path front ends (internal/lean, the gRPC API) need of the service.
// Every method checks the caller's access and audits a denial.
type Signer interface {
	// Find returns the key called name if caller may use it.
	Find(ctx context.Context, caller Caller, name string) (Info, error)
	// List returns the keys caller may use, sorted by name.
	List(ctx context.Context, caller Caller) ([]Info, error)
	// Sign signs with the key called name through its signing PAL. An ECDSA signature is
	// ASN.1 DER, as crypto.Signer returns it.
	Sign(ctx context.Context, caller Caller, name string, req SignRequest) ([]byte, error)
}

// Errors of the service; front ends map each to a code of their own.
var (
	ErrNotFound     = errors.New("keys: no such key")
	ErrExists       = errors.New("keys: a key of that name exists")
	ErrDenied       = errors.New("keys: permission denied")
	ErrPINRequired  = errors.New("keys: the key needs a PIN")
	ErrPINIncorrect = errors.New("keys: incorrect PIN")
	ErrLocked       = errors.New("keys: locked after too many incorrect PINs")
	ErrBadRequest   = errors.New("keys: malformed request")
	ErrRefused      = errors.New("keys: the signing PAL refused")
	ErrUnavailable  = errors.New("keys: the key cannot be used") // wraps the reason
	// ErrAudit: the operation could not be recorded in the daemon's audit log (its disk is
	// full, say), so it was refused: no key made or changed, no signature returned. It wraps
	// the log's error, which names the file.
	ErrAudit = errors.New("keys: refused, the audit log cannot record it")
)
