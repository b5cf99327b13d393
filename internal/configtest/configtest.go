// Package configtest creates real trusted-configuration states for the tests of packages that
// consume configurations (utpm, engine, attest).
package configtest

import (
	"crypto"
	"testing"

	"github.com/palisade-project/palisade/internal/config"
)

// NewState initialises a configuration state in a temporary directory, administered by a
// fresh key of algorithm alg ("ed25519" or "es256"), and opens it without a version anchor.
func NewState(t testing.TB, alg string) (admin crypto.Signer, st *config.State) {
	t.Helper()
	admin, err := config.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := config.InitState(dir, admin.Public()); err != nil {
		t.Fatal(err)
	}
	st, err = config.OpenState(dir, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return admin, st
}
