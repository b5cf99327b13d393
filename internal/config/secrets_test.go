package config

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func masterKey(t *testing.T) []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func TestSecretReleaseFollowsActiveConfig(t *testing.T) {
	admin := newKey(t, "ed25519")
	st := newState(t, admin)
	_, kid := st.AdminKey()
	master := masterKey(t)
	store, err := OpenSecretStore(st.SecretsDir(), master, kid, st.Active)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put("tls-key", []byte("-----BEGIN KEY-----")); err != nil {
		t.Fatal(err)
	}
	if err := store.Put("db-pass", []byte("hunter2")); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Release("tls-key", "web", meas("web-1")); !errors.Is(err, ErrNoActiveConfig) {
		t.Fatalf("no active configuration: %v", err)
	}
	mustApply(t, st, mustSign(t, baseConfig(1), admin))

	release := func(secret, name, m string) ([]byte, error) {
		return store.Release(secret, name, meas(m))
	}
	if v, err := release("tls-key", "web", "web-1"); err != nil || string(v) != "-----BEGIN KEY-----" {
		t.Fatalf("allowed release: %q %v", v, err)
	}
	for _, tc := range []struct {
		secret, name, m string
		want            error
	}{
		{"tls-key", "ghost", "web-1", ErrUnknownName},
		{"tls-key", "web", "web-evil", ErrNotListed},
		{"db-pass", "web", "web-1", ErrNotReleased},
		{"other", "web", "web-1", ErrUnknownSecret},
	} {
		_, err := release(tc.secret, tc.name, tc.m)
		var ae *AuthError
		if !errors.Is(err, tc.want) || !errors.As(err, &ae) || ae.Name != tc.name {
			t.Errorf("release %s to %s/%s: got %v, want %v", tc.secret, tc.name, tc.m, err, tc.want)
		}
	}

	// v2: a new web build is added and the old one kept; the secret stays available to both
	// without re-encrypting anything.
	v2 := baseConfig(2)
	v2.Apps["web"] = []Measurement{meas("web-1"), meas("web-2")}
	mustApply(t, st, mustSign(t, v2, admin))
	for _, m := range []string{"web-1", "web-2"} {
		if _, err := release("tls-key", "web", m); err != nil {
			t.Fatalf("after update, %s: %v", m, err)
		}
	}
	// v3 revokes web-1 and takes db-pass from db: effective at apply.
	v3 := baseConfig(3)
	v3.Apps["web"] = []Measurement{meas("web-2")}
	v3.Secrets["db-pass"] = []string{}
	mustApply(t, st, mustSign(t, v3, admin))
	if _, err := release("tls-key", "web", "web-1"); !errors.Is(err, ErrNotListed) {
		t.Fatalf("revoked measurement: %v", err)
	}
	if _, err := release("db-pass", "db", "db-1"); !errors.Is(err, ErrNotReleased) {
		t.Fatalf("withdrawn secret: %v", err)
	}
	if _, err := release("tls-key", "web", "web-2"); err != nil {
		t.Fatal(err)
	}

	// A blob copied over another name, a flipped bit, another master key or another
	// signer: all fail the integrity check.
	dir := st.SecretsDir()
	blob, _ := os.ReadFile(filepath.Join(dir, "db-pass.sealed"))
	os.WriteFile(filepath.Join(dir, "tls-key.sealed"), blob, 0o600)
	if _, err := release("tls-key", "web", "web-2"); !errors.Is(err, ErrSecretTampered) {
		t.Fatalf("renamed blob: %v", err)
	}
	store.Put("tls-key", []byte("v"))
	blob, _ = os.ReadFile(filepath.Join(dir, "tls-key.sealed"))
	blob[len(blob)-1] ^= 1
	os.WriteFile(filepath.Join(dir, "tls-key.sealed"), blob, 0o600)
	if _, err := release("tls-key", "web", "web-2"); !errors.Is(err, ErrSecretTampered) {
		t.Fatalf("flipped bit: %v", err)
	}
	store.Put("tls-key", []byte("v"))
	other, _ := OpenSecretStore(dir, masterKey(t), kid, st.Active)
	if _, err := other.Release("tls-key", "web", meas("web-2")); !errors.Is(err, ErrSecretTampered) {
		t.Fatalf("other master key: %v", err)
	}
	otherSigner, _ := PublicKeyID(newKey(t, "ed25519").Public())
	wrong, _ := OpenSecretStore(dir, master, otherSigner, st.Active)
	if _, err := wrong.Release("tls-key", "web", meas("web-2")); !errors.Is(err, ErrWrongSigner) {
		t.Fatalf("other signer: %v", err)
	}
	if _, err := release("ghost-secret", "web", "web-2"); err == nil {
		t.Fatal("released a secret that is not stored")
	}
	names, _ := store.List()
	if len(names) != 2 {
		t.Fatalf("list: %v", names)
	}
}

func TestSecretStoreRefusesShortMaster(t *testing.T) {
	if _, err := OpenSecretStore(t.TempDir(), make([]byte, 16), KeyID{}, nil); err == nil {
		t.Fatal("16-byte master key accepted")
	}
}

func TestAuthorizeNil(t *testing.T) {
	if err := Authorize(nil, "s", "n", Measurement{}); !errors.Is(err, ErrNoActiveConfig) {
		t.Fatal(err)
	}
	if err := Check(baseConfig(1), "web", meas("web-1")); err != nil {
		t.Fatal(err)
	}
	if err := Check(baseConfig(1), "web", meas("web-9")); !errors.Is(err, ErrNotListed) {
		t.Fatal(err)
	}
}
