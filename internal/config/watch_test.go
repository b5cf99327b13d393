package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/utpm"
)

func TestWatcherFollowsApply(t *testing.T) {
	admin := newKey(t, "ed25519")
	st := newState(t, admin)
	_, kid := st.AdminKey()
	w := NewWatcher(st, meas("visor-1"))
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
	w := NewWatcher(st, meas("visor-1"))
	for b.Loop() {
		if err := w.AuthorizePAL(kid, "signer", meas("signer-1")); err != nil {
			b.Fatal(err)
		}
	}
}

// The µTPM checks policy names without importing this package's rules; both must agree, or a
// PAL could seal to a name no configuration can hold.
func TestUTPMNameRuleMatchesConfig(t *testing.T) {
	long := strings.Repeat("a", MaxNameLen)
	for _, n := range []string{"", "a", "A9", "a.b-c_d", ".a", "-a", "_a", "a b", "a/b", "é", "a\x00",
		long, long + "a", "9" + long[1:]} {
		if got, want := utpm.ValidName(n), checkName(n) == nil; got != want {
			t.Errorf("%q: utpm.ValidName = %v, config accepts = %v", n, got, want)
		}
	}
}

func TestUTPMAuthorizer(t *testing.T) {
	admin := newKey(t, "ed25519")
	st := newState(t, admin)
	_, kid := st.AdminKey()
	a := NewWatcher(st, meas("visor-1")).UTPMAuthorizer()
	if err := a(utpm.Digest(kid), "signer", utpm.Digest(meas("signer-1"))); !errors.Is(err, ErrNoActiveConfig) || errors.Is(err, utpm.ErrInternal) {
		t.Fatalf("no configuration: %v", err)
	}
	mustApply(t, st, mustSign(t, baseConfig(1), admin))
	if err := a(utpm.Digest(kid), "signer", utpm.Digest(meas("signer-1"))); err != nil {
		t.Fatal(err)
	}
	// A state that no longer verifies is a failure to decide, not a refusal.
	os.WriteFile(filepath.Join(st.Dir(), filePointer), []byte("garbage"), 0o644)
	if err := a(utpm.Digest(kid), "signer", utpm.Digest(meas("signer-1"))); !errors.Is(err, utpm.ErrInternal) {
		t.Fatalf("corrupt state: %v", err)
	}
}

// TestWatcherRequiresListedVisor: a visor whose measurement the active configuration does not
// list (another build, or an empty list) is refused everything the configuration decides,
// and the next apply that lists it lets it serve again.
func TestWatcherRequiresListedVisor(t *testing.T) {
	admin := newKey(t, "ed25519")
	st := newState(t, admin)
	_, kid := st.AdminKey()
	w := NewWatcher(st, meas("visor-2"))
	a := w.UTPMAuthorizer()
	mustApply(t, st, mustSign(t, baseConfig(1), admin)) // lists visor-1 only
	for _, err := range []error{
		w.AuthorizePAL(kid, "signer", meas("signer-1")),
		a(utpm.Digest(kid), "signer", utpm.Digest(meas("signer-1"))),
	} {
		if !errors.Is(err, ErrVisorNotListed) || errors.Is(err, utpm.ErrInternal) {
			t.Fatalf("unlisted visor: %v", err)
		}
	}
	if s, err := st.Statement(meas("visor-2")); err != nil || s.VisorListed || s.Signer != kid || s.Seq != 1 {
		t.Fatalf("statement %+v, %v", s, err)
	}
	v2 := baseConfig(2)
	v2.Visors = nil // an empty list trusts no visor
	mustApply(t, st, mustSign(t, v2, admin))
	if err := NewWatcher(st, meas("visor-1")).AuthorizePAL(kid, "signer", meas("signer-1")); !errors.Is(err, ErrVisorNotListed) {
		t.Fatalf("empty visors list: %v", err)
	}
	v3 := baseConfig(3)
	v3.Visors = append(v3.Visors, meas("visor-2"))
	mustApply(t, st, mustSign(t, v3, admin))
	if err := w.AuthorizePAL(kid, "signer", meas("signer-1")); err != nil {
		t.Fatalf("listed visor: %v", err)
	}
	if s, _ := st.Statement(meas("visor-2")); !s.VisorListed {
		t.Fatal("statement: visor not listed")
	}
}
