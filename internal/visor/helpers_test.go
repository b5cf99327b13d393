package visor_test

import (
	"crypto/ecdsa"
	"testing"
)

func pubECDSA(t *testing.T, pub any) *ecdsa.PublicKey {
	t.Helper()
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("identity key is %T, want ECDSA", pub)
	}
	return k
}
