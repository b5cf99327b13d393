package config

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// outsideAnchor is a BindingAnchor kept in files outside the state directory, where an
// attacker who rewrites the directory cannot reach them: it stands for the TPM anchor
// (rot/tpm, tested against swtpm there), with the same contract: the version only advances,
// the administrator key is written once, the digest only extends.
type outsideAnchor struct {
	FileAnchor
	dir string
}

func newOutsideAnchor(t testing.TB) outsideAnchor {
	d := t.TempDir()
	return outsideAnchor{FileAnchor: FileAnchor{Path: filepath.Join(d, "version")}, dir: d}
}

func (a outsideAnchor) ID() string { return "test anchor " + a.dir }

func (a outsideAnchor) Admin() (KeyID, bool, error) {
	b, err := os.ReadFile(filepath.Join(a.dir, "admin"))
	if errors.Is(err, os.ErrNotExist) {
		return KeyID{}, false, nil
	}
	var k KeyID
	copy(k[:], b)
	return k, true, err
}

func (a outsideAnchor) BindAdmin(kid KeyID) error {
	if k, ok, err := a.Admin(); err != nil || ok {
		if err == nil && k != kid {
			err = errors.New("another administrator is bound")
		}
		return err
	}
	return os.WriteFile(filepath.Join(a.dir, "admin"), kid[:], 0o600)
}

func (a outsideAnchor) HistoryDigest() (Measurement, error) {
	var d Measurement
	b, err := os.ReadFile(filepath.Join(a.dir, "digest"))
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	copy(d[:], b)
	return d, err
}

func (a outsideAnchor) CheckAdvance(uint64) error { return nil }

func (a outsideAnchor) ExtendHistory(e Measurement) error {
	d, err := a.HistoryDigest()
	if err != nil {
		return err
	}
	d = HistoryExtend(d, e)
	return os.WriteFile(filepath.Join(a.dir, "digest"), d[:], 0o600)
}

func newBoundState(t *testing.T, a BindingAnchor) (*State, string) {
	t.Helper()
	admin := newKey(t, "ed25519")
	dir := filepath.Join(t.TempDir(), "state")
	if err := InitState(dir, admin.Public()); err != nil {
		t.Fatal(err)
	}
	st, err := OpenState(dir, Options{Anchor: a})
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 2; v++ {
		mustApply(t, st, mustSign(t, baseConfig(v), admin))
	}
	return st, dir
}

// TestBoundStateRemembersAnchor: a state applied under a binding anchor refuses to be opened
// without it, so a command that forgets --tpm cannot be served a rolled-back directory.
func TestBoundStateRemembersAnchor(t *testing.T) {
	a := newOutsideAnchor(t)
	_, dir := newBoundState(t, a)
	_, err := OpenState(dir, Options{})
	if !errors.Is(err, ErrAnchorRequired) || !strings.Contains(err.Error(), a.ID()) {
		t.Fatalf("opened without its anchor: %v", err)
	}
	other := newOutsideAnchor(t)
	if _, err := OpenState(dir, Options{Anchor: other}); !errors.Is(err, ErrAnchorRequired) {
		t.Fatalf("opened with another anchor: %v", err)
	}
	if _, err := OpenState(dir, Options{Anchor: a}); err != nil {
		t.Fatal(err)
	}
	// A State opened before the first bound apply (a long-running process) notices it too.
	dir2 := filepath.Join(t.TempDir(), "state")
	admin := newKey(t, "ed25519")
	InitState(dir2, admin.Public())
	unbound, _ := OpenState(dir2, Options{})
	bound, _ := OpenState(dir2, Options{Anchor: newOutsideAnchor(t)})
	mustApply(t, bound, mustSign(t, baseConfig(1), admin))
	if _, err := unbound.Active(); !errors.Is(err, ErrAnchorRequired) {
		t.Fatalf("a State opened before the binding: %v", err)
	}
}

// TestBoundStateAdminAnchored: a wiped state with another administrator key is refused by the
// anchor that holds the first key.
func TestBoundStateAdminAnchored(t *testing.T) {
	a := newOutsideAnchor(t)
	st, dir := newBoundState(t, a)
	_, kid := st.AdminKey()
	if k, ok, err := a.Admin(); err != nil || !ok || k != kid {
		t.Fatalf("anchored admin %v %v %v, want %s", k, ok, err, kid)
	}
	os.RemoveAll(dir)
	intruder := newKey(t, "ed25519")
	if err := InitState(dir, intruder.Public()); err != nil {
		t.Fatal(err)
	}
	_, err := OpenState(dir, Options{Anchor: a})
	if !errors.Is(err, ErrAdminNotAnchored) || !strings.Contains(err.Error(), kid.String()) {
		t.Fatalf("state with another admin key: %v", err)
	}
}

// rewriteHistory rewrites a state's history consistently, as someone who can write the
// directory can: entry 2 gets another time, every hash after it and the pointer are
// recomputed, so the chain verifies on its own.
func rewriteHistory(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, fileHistory))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := DecodeHistory(b)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	var prev Measurement
	for i, e := range hist {
		e.Prev = prev
		if i == len(hist)-1 {
			e.Time -= 3600
		}
		rec, err := encodeRecord(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec...)
		prev = e.Hash()
	}
	var p Pointer
	pb, _ := os.ReadFile(filepath.Join(dir, filePointer))
	if err := decMode.Unmarshal(pb, &p); err != nil {
		t.Fatal(err)
	}
	p.Head, p.HistoryLen = prev, uint64(len(out))
	pb, _ = encMode.Marshal(p)
	os.WriteFile(filepath.Join(dir, fileHistory), out, 0o644)
	os.WriteFile(filepath.Join(dir, filePointer), pb, 0o644)
	if _, err := DecodeHistory(out); err != nil {
		t.Fatalf("the rewritten history does not verify on its own: %v", err)
	}
}

// TestBoundStateDetectsRewrittenHistory: a history rewritten consistently still verifies as a
// chain, but not against the digest the anchor holds; without the mark (deleted to make the
// state look unbound) it is refused too.
func TestBoundStateDetectsRewrittenHistory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		extra  func(dir string)
		target error
	}{
		{"rewritten", func(string) {}, ErrTampered},
		{"rewritten, mark deleted", func(dir string) { os.Remove(filepath.Join(dir, fileAnchored)) }, ErrTampered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newOutsideAnchor(t)
			_, dir := newBoundState(t, a)
			rewriteHistory(t, dir)
			tc.extra(dir)
			st, err := OpenState(dir, Options{Anchor: a})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.History(); !errors.Is(err, tc.target) {
				t.Fatalf("rewritten history: %v, want %v", err, tc.target)
			}
		})
	}
}

// TestBoundStateRollbackAndWipe: a copy put back is a rollback; a wiped directory (same admin)
// has nothing active and takes only versions above the anchor, and its history is then
// anchored from the digest the anchor had.
func TestBoundStateRollbackAndWipe(t *testing.T) {
	a := newOutsideAnchor(t)
	admin := newKey(t, "ed25519")
	dir := filepath.Join(t.TempDir(), "state")
	InitState(dir, admin.Public())
	st, _ := OpenState(dir, Options{Anchor: a, Now: func() time.Time { return time.Unix(1, 0) }})
	mustApply(t, st, mustSign(t, baseConfig(1), admin))
	old := filepath.Join(t.TempDir(), "old")
	copyDir(t, dir, old)
	mustApply(t, st, mustSign(t, baseConfig(2), admin))

	os.RemoveAll(dir)
	copyDir(t, old, dir)
	st, _ = OpenState(dir, Options{Anchor: a})
	if _, err := st.Active(); !errors.Is(err, ErrRollback) {
		t.Fatalf("copy put back: %v", err)
	}

	os.RemoveAll(dir)
	InitState(dir, admin.Public())
	st, err := OpenState(dir, Options{Anchor: a})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Active(); !errors.Is(err, ErrNoActiveConfig) {
		t.Fatalf("wiped: %v", err)
	}
	if _, _, err := st.Apply(mustSign(t, baseConfig(2), admin)); !errors.Is(err, ErrRollback) {
		t.Fatalf("version 2 into the wiped state: %v", err)
	}
	mustApply(t, st, mustSign(t, baseConfig(3), admin))
	if h, err := st.History(); err != nil || len(h) != 1 {
		t.Fatalf("history %d %v", len(h), err)
	}
	d, _ := a.HistoryDigest()
	p, _ := st.Head()
	if d != HistoryExtend(p.AnchorPrev, p.Head) {
		t.Fatalf("digest %s is not the head %s folded into %s", hex.EncodeToString(d[:]), p.Head, p.AnchorPrev)
	}
}
