// Package rot is the root of trust of a visor: where the µTPM master secret, the identity key
// and the persisted counters come from, and what endorses the identity key.
//
// Two modes exist (DESIGN §6): "tpm" (rot/tpm, a TPM 2.0) and "none" (rot/none, development
// only: a secret in a file, and evidence that says it is unrooted).
package rot

import (
	"context"
	"crypto/ecdsa"

	"github.com/palisade-project/palisade/internal/utpm"
)

// RootOfTrust is opened once at visor start and closed at shutdown.
type RootOfTrust interface {
	// Mode is "tpm" or "none".
	Mode() string
	// Platform returns what the µTPMs of this visor share: master secret, identity key
	// (fresh at every start), visor measurement, counter store, rooted flag.
	Platform() utpm.PlatformConfig
	// IdentityKey is Platform().Identity: the visor identity key (it makes RootOfTrust an
	// attest.Root without naming this package's types).
	IdentityKey() *ecdsa.PrivateKey
	// Endorse returns evidence that binds the identity key to this root of trust, fresh for
	// nonce (for "tpm": a TPM2_Quote with the event log and AK; for "none": nil, nil).
	Endorse(ctx context.Context, nonce []byte) ([]byte, error)
	Close() error
}

// IdentityPublic is a convenience for the identity key's public half.
func IdentityPublic(r RootOfTrust) *ecdsa.PublicKey { return &r.Platform().Identity.PublicKey }
