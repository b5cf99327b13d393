package config

import (
	"errors"
	"testing"
)

func TestWatcherFollowsApply(t *testing.T) {
	admin := newKey(t, "ed25519")
	st := newState(t, admin)
	_, kid := st.AdminKey()
	w := NewWatcher(st)
	if err := w.AuthorizePAL(kid, "signer", meas("signer-1")); !errors.Is(err, ErrNoActiveConfig) {
		t.Fatalf("empty state: %v", err)
	}
	mustApply(t, st, mustSign(t, baseConfig(1), admin))
	if err := w.AuthorizePAL(kid, "signer", meas("signer-1")); err != nil {
		t.Fatal(err)
	}
	// Another State value stands for another process applying an update that revokes
	// signer-1 in favour of signer-2.
	other, err := OpenState(st.Dir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	v2 := baseConfig(2)
	v2.PALs["signer"] = []Measurement{meas("signer-2")}
	mustApply(t, other, mustSign(t, v2, admin))
	if err := w.AuthorizePAL(kid, "signer", meas("signer-1")); !errors.Is(err, ErrNotListed) {
		t.Fatalf("revoked PAL still authorized: %v", err)
	}
	if err := w.AuthorizePAL(kid, "signer", meas("signer-2")); err != nil {
		t.Fatal(err)
	}
	if err := w.AuthorizePAL(kid, "web", meas("web-1")); !errors.Is(err, ErrUnknownName) {
		t.Fatalf("an app name authorized as a PAL: %v", err)
	}
	if err := w.AuthorizePAL(KeyID{1}, "signer", meas("signer-2")); !errors.Is(err, ErrWrongSigner) {
		t.Fatalf("other signer: %v", err)
	}
}

func BenchmarkWatcherAuthorizePAL(b *testing.B) {
	admin := newKey(b, "ed25519")
	dir := b.TempDir()
	InitState(dir, admin.Public())
	st, _ := OpenState(dir, Options{})
	st.Apply(mustSign(b, baseConfig(1), admin))
	_, kid := st.AdminKey()
	w := NewWatcher(st)
	for b.Loop() {
		if err := w.AuthorizePAL(kid, "signer", meas("signer-1")); err != nil {
			b.Fatal(err)
		}
	}
}
