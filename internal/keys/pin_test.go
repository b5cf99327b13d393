package keys_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/palisade-project/palisade/internal/keys"
)

func TestPIN(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	info, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "p", Alg: keys.ECDSAP256, PIN: []byte("1234"), MaxTries: 3, AllowUIDs: []uint32{33}})
	if err != nil {
		t.Fatal(err)
	}
	if !info.HasPIN {
		t.Fatal("HasPIN false")
	}
	for _, tc := range []struct {
		pin  string
		want error
	}{
		{"", keys.ErrPINRequired},
		{"1234", nil},
		{"0000", keys.ErrPINIncorrect},
		{"0000", keys.ErrPINIncorrect},
		{"1234", nil}, // a correct PIN resets the count of failures
		{"0000", keys.ErrPINIncorrect},
		{"0000", keys.ErrPINIncorrect},
		{"1234", nil},
	} {
		var pin []byte
		if tc.pin != "" {
			pin = []byte(tc.pin)
		}
		if err := sign(t, d.s, www, "p", pin); !errors.Is(err, tc.want) {
			t.Fatalf("PIN %q: %v, want %v", tc.pin, err, tc.want)
		}
	}
	// Change: the old PIN is needed.
	if _, err := d.s.SetPIN(ctx, root, "p", []byte("bad"), []byte("5678"), 3); !errors.Is(err, keys.ErrPINIncorrect) {
		t.Fatalf("SetPIN with a wrong PIN: %v", err)
	}
	if _, err := d.s.SetPIN(ctx, www, "p", []byte("1234"), []byte("5678"), 3); !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("SetPIN by a user: %v", err)
	}
	if _, err := d.s.SetPIN(ctx, root, "p", []byte("1234"), []byte("5678"), 3); err != nil {
		t.Fatal(err)
	}
	if err := sign(t, d.s, www, "p", []byte("1234")); !errors.Is(err, keys.ErrPINIncorrect) {
		t.Fatalf("old PIN after change: %v", err)
	}
	if err := sign(t, d.s, www, "p", []byte("5678")); err != nil {
		t.Fatal(err)
	}
	// Remove.
	if info, err := d.s.SetPIN(ctx, root, "p", []byte("5678"), nil, 0); err != nil || info.HasPIN {
		t.Fatalf("remove PIN: %+v, %v", info, err)
	}
	if err := sign(t, d.s, www, "p", nil); err != nil {
		t.Fatal(err)
	}
}

// TestLockoutSurvivesRestartAndRollback locks a key, then restarts the daemon on its state and
// on a copy of its state db taken before the failures: the key stays locked, because the
// failures are counted in a µTPM monotonic counter that the state db does not hold.
func TestLockoutSurvivesRestartAndRollback(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "p", Alg: keys.ECDSAP256, PIN: []byte("1234"), MaxTries: 2}); err != nil {
		t.Fatal(err)
	}
	// A failure and a success first, so that the saved state is a renewed one.
	if err := sign(t, d.s, root, "p", []byte("0000")); !errors.Is(err, keys.ErrPINIncorrect) {
		t.Fatal(err)
	}
	if err := sign(t, d.s, root, "p", []byte("1234")); err != nil {
		t.Fatal(err)
	}
	d.close()
	saved := filepath.Join(t.TempDir(), "state.db")
	copyFile(t, filepath.Join(d.dir, "state.db"), saved)
	d = start(t, d.dir)
	for i := 0; i < 2; i++ {
		if err := sign(t, d.s, root, "p", []byte("0000")); !errors.Is(err, keys.ErrPINIncorrect) {
			t.Fatalf("failure %d: %v", i, err)
		}
	}
	if err := sign(t, d.s, root, "p", []byte("1234")); !errors.Is(err, keys.ErrLocked) {
		t.Fatalf("after 2 failures: %v, want locked", err)
	}
	d = d.restart(t)
	if err := sign(t, d.s, root, "p", []byte("1234")); !errors.Is(err, keys.ErrLocked) {
		t.Fatalf("after a restart: %v, want locked", err)
	}
	d.close()
	copyFile(t, saved, filepath.Join(d.dir, "state.db"))
	d = start(t, d.dir)
	if err := sign(t, d.s, root, "p", []byte("1234")); !errors.Is(err, keys.ErrLocked) {
		t.Fatalf("after rolling the state db back: %v, want locked", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
