package tpm

import (
	"crypto"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/configtest"
	"github.com/palisade-project/palisade/internal/swtpmtest"
)

func signConfig(t *testing.T, admin crypto.Signer, v uint64) []byte {
	t.Helper()
	c := &config.Config{Version: v, PALs: map[string][]config.Measurement{"vault": {{byte(v)}}}}
	raw, err := config.Sign(c, admin)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func openAnchor(t *testing.T, sw *swtpmtest.TPM) *VersionAnchor {
	t.Helper()
	a, err := OpenVersionAnchor(sw.Device(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestVersionAnchorRefusesReplayedState: configuration versions anchored in the TPM survive a
// state directory put back from a copy, and a wiped one; the anchor never goes back, also
// across connections and a TPM restart.
func TestVersionAnchorRefusesReplayedState(t *testing.T) {
	sw := swtpmtest.Start(t)
	admin, err := config.GenerateKey("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	if err := config.InitState(dir, admin.Public()); err != nil {
		t.Fatal(err)
	}
	a := openAnchor(t, sw)
	if v, err := a.Read(); err != nil || v != 0 {
		t.Fatalf("new anchor: %d, %v", v, err)
	}
	st, _ := config.OpenState(dir, config.Options{Anchor: a})
	apply := func(v uint64) error {
		_, _, err := st.Apply(signConfig(t, admin, v))
		return err
	}
	if err := apply(1); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "old")
	if out, err := exec.Command("cp", "-a", dir, old).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	for _, v := range []uint64{2, 5} { // 5: a jump of three increments
		if err := apply(v); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := a.Read(); err != nil || v != 5 {
		t.Fatalf("anchor after applying 5: %d, %v", v, err)
	}
	// Nothing an apply can do moves the anchor down or too far up.
	if err := a.Advance(4); !errors.Is(err, config.ErrRollback) {
		t.Fatalf("anchor went back: %v", err)
	}
	if err := a.Advance(5 + MaxVersionStep + 1); !errors.Is(err, ErrVersionAnchor) {
		t.Fatalf("huge step: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// The old directory (version 1) put back: refused by the anchor, read over a new
	// connection after a TPM restart (PCRs reset, NV kept).
	sw.Stop()
	sw = swtpmtest.Start(t, swtpmtest.WithStateDir(sw.Dir))
	a = openAnchor(t, sw)
	defer a.Close()
	if v, err := a.Read(); err != nil || v != 5 {
		t.Fatalf("anchor after restart: %d, %v", v, err)
	}
	os.RemoveAll(dir)
	if out, err := exec.Command("cp", "-a", old, dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	st, _ = config.OpenState(dir, config.Options{Anchor: a})
	if _, err := st.Active(); !errors.Is(err, config.ErrRollback) {
		t.Fatalf("replayed state: %v, want ErrRollback", err)
	}

	// A wiped directory has nothing active and takes only versions above the anchor.
	os.RemoveAll(dir)
	config.InitState(dir, admin.Public())
	st, _ = config.OpenState(dir, config.Options{Anchor: a})
	if _, err := st.Active(); !errors.Is(err, config.ErrNoActiveConfig) {
		t.Fatalf("wiped state: %v", err)
	}
	if err := apply(5); !errors.Is(err, config.ErrRollback) {
		t.Fatalf("version 5 replayed into a wiped state: %v", err)
	}
	if err := apply(6); err != nil {
		t.Fatal(err)
	}

	// The base cannot be rewritten: it is write-locked for good.
	a.mu.Lock()
	rp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(DefaultVersionAnchorIndex + 1)}.Execute(a.tpm)
	if err != nil {
		a.mu.Unlock()
		t.Fatal(err)
	}
	h := tpm2.NamedHandle{Handle: tpm2.TPMHandle(DefaultVersionAnchorIndex + 1), Name: rp.NVName}
	_, err = tpm2.NVWrite{
		AuthHandle: tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    h, Data: tpm2.TPM2BMaxNVBuffer{Buffer: make([]byte, 8)},
	}.Execute(a.tpm)
	a.mu.Unlock()
	if !errors.Is(err, tpm2.TPMRCNVLocked) {
		t.Fatalf("writing the base: %v, want TPM_RC_NV_LOCKED", err)
	}
	if v, err := a.Read(); err != nil || v != 6 {
		t.Fatalf("anchor: %d, %v", v, err)
	}
}

// TestRootVersionAnchor: the visor's root shares its TPM connection with the anchor, and the
// anchor is independent of the µTPM counters' NV index.
func TestRootVersionAnchor(t *testing.T) {
	sw := swtpmtest.Start(t)
	r := mustOpen(t, sw, t.TempDir(), visorFile(t, "visor A"), nil)
	defer r.Close()
	a, err := r.VersionAnchor(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Advance(3); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Counters().Increment([32]byte{1}, 7); err != nil {
		t.Fatal(err)
	}
	if v, err := a.Read(); err != nil || v != 3 {
		t.Fatalf("anchor %d, %v", v, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Counters().Increment([32]byte{1}, 7); err != nil {
		t.Fatalf("closing the anchor closed the root's connection: %v", err)
	}
}

// TestVersionAnchorCompletesCreation: a first open stopped after defining the base index,
// before writing and locking it, is completed by the next open, from the counter's value.
func TestVersionAnchorCompletesCreation(t *testing.T) {
	sw := swtpmtest.Start(t)
	tp, err := OpenDevice(sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tp); err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		t.Fatal(err)
	}
	c := &Counters{tpm: tp}
	if _, err := c.ensureNV(DefaultVersionAnchorIndex); err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: DefaultVersionAnchorIndex + 1, NameAlg: tpm2.TPMAlgSHA256, DataSize: 8,
			Attributes: tpm2.TPMANV{AuthWrite: true, AuthRead: true, OwnerRead: true, NoDA: true,
				WriteDefine: true, NT: tpm2.TPMNTOrdinary},
		}),
	}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	a := openAnchor(t, sw)
	defer a.Close()
	if v, err := a.Read(); err != nil || v != 0 {
		t.Fatalf("completed anchor: %d, %v", v, err)
	}
	if err := a.Advance(2); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.Read(); v != 2 {
		t.Fatalf("anchor %d", v)
	}
}

// TestVersionAnchorRefusesForeignIndex: an NV index that is not Palisade's base is not used.
func TestVersionAnchorRefusesForeignIndex(t *testing.T) {
	sw := swtpmtest.Start(t)
	tp, err := OpenDevice(sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(tp)
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: DefaultVersionAnchorIndex + 1, NameAlg: tpm2.TPMAlgSHA256, DataSize: 8,
			Attributes: tpm2.TPMANV{AuthWrite: true, AuthRead: true, NT: tpm2.TPMNTOrdinary},
		}),
	}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	if _, err := OpenVersionAnchor(sw.Device(), 0); !errors.Is(err, ErrVersionAnchor) {
		t.Fatalf("foreign base index: %v", err)
	}
}

// TestVersionAnchorBinding: the TPM anchor's history digest is what config.HistoryExtend
// computes and only extends; the administrator key id is written once, locked, and replaced
// only by ReplaceAdmin, which leaves a trace in the digest.
func TestVersionAnchorBinding(t *testing.T) {
	sw := swtpmtest.Start(t)
	a := openAnchor(t, sw)
	defer a.Close()
	var zero config.Measurement
	if d, err := a.HistoryDigest(); err != nil || d != zero {
		t.Fatalf("new digest %x, %v", d, err)
	}
	e1, e2 := config.Measurement{1}, config.Measurement{2}
	for _, e := range []config.Measurement{e1, e2} {
		if err := a.ExtendHistory(e); err != nil {
			t.Fatal(err)
		}
	}
	want := config.HistoryExtend(config.HistoryExtend(zero, e1), e2)
	if d, err := a.HistoryDigest(); err != nil || d != want {
		t.Fatalf("digest %x, %v; want %x", d, err, want)
	}

	k1, k2 := config.KeyID{0x11}, config.KeyID{0x22}
	if _, ok, err := a.Admin(); err != nil || ok {
		t.Fatalf("new anchor holds an admin: %v %v", ok, err)
	}
	if err := a.BindAdmin(k1); err != nil {
		t.Fatal(err)
	}
	if err := a.BindAdmin(k1); err != nil {
		t.Fatalf("binding the same key again: %v", err)
	}
	if err := a.BindAdmin(k2); !errors.Is(err, config.ErrAdminNotAnchored) {
		t.Fatalf("binding another key: %v", err)
	}
	// Written once: a plain NV write is refused by the TPM.
	a.mu.Lock()
	_, h, err := a.readPublic(a.counter.Handle + offAdmin)
	if err == nil {
		_, err = tpm2.NVWrite{AuthHandle: nvAuth(h), NVIndex: h, Data: tpm2.TPM2BMaxNVBuffer{Buffer: k2[:]}}.Execute(a.tpm)
	}
	a.mu.Unlock()
	if !errors.Is(err, tpm2.TPMRCNVLocked) {
		t.Fatalf("rewriting the admin id: %v, want TPM_RC_NV_LOCKED", err)
	}
	// The ceremony names the key it replaces.
	if _, err := a.ReplaceAdmin(k2, k1); err == nil || !strings.Contains(err.Error(), "not "+k2.String()) {
		t.Fatalf("ReplaceAdmin with the wrong old key: %v", err)
	}
	// Replacing a key by itself is refused before anything changes.
	if _, err := a.ReplaceAdmin(k1, k1); !errors.Is(err, ErrVersionAnchor) || !strings.Contains(err.Error(), "the one it would replace") {
		t.Fatalf("ReplaceAdmin of a key by itself: %v", err)
	}
	if d, _ := a.HistoryDigest(); d != want {
		t.Fatal("a refused ceremony changed the history digest")
	}
	rec, err := a.ReplaceAdmin(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok, err := a.Admin(); err != nil || !ok || k != k2 {
		t.Fatalf("after the ceremony: %x %v %v", k, ok, err)
	}
	if d, _ := a.HistoryDigest(); d != config.HistoryExtend(want, rec) {
		t.Fatal("the ceremony left no trace in the history digest")
	}
	// Both survive a new connection.
	a.Close()
	a = openAnchor(t, sw)
	if k, ok, _ := a.Admin(); !ok || k != k2 {
		t.Fatalf("admin after reopening: %x", k)
	}
}

// TestTPMAnchoredState: a state applied with the TPM anchor refuses to open without it, a
// wiped directory pinning another administrator key is refused, and a history rewritten
// consistently in the directory no longer matches the TPM's digest.
func TestTPMAnchoredState(t *testing.T) {
	sw := swtpmtest.Start(t)
	a := openAnchor(t, sw)
	defer a.Close()
	admin, _ := config.GenerateKey("ed25519")
	dir := filepath.Join(t.TempDir(), "state")
	config.InitState(dir, admin.Public())
	st, err := config.OpenState(dir, config.Options{Anchor: a})
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 2; v++ {
		if _, _, err := st.Apply(signConfig(t, admin, v)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := config.OpenState(dir, config.Options{}); !errors.Is(err, config.ErrAnchorRequired) {
		t.Fatalf("opened without the TPM: %v", err)
	}
	// A version step the counter refuses is refused before the history digest moves, so the
	// state stays at version 2 and usable.
	before, _ := a.HistoryDigest()
	if _, _, err := st.Apply(signConfig(t, admin, 3+MaxVersionStep)); !errors.Is(err, ErrVersionAnchor) {
		t.Fatalf("huge step: %v", err)
	}
	if after, _ := a.HistoryDigest(); after != before {
		t.Fatal("a refused apply extended the history digest")
	}
	if act, err := st.Active(); err != nil || act.Version != 2 {
		t.Fatalf("after a refused step: %v, %v", act, err)
	}

	// History rewritten: entry 2's time changed, its hash, the pointer's head recomputed.
	saved := filepath.Join(t.TempDir(), "saved")
	if out, err := exec.Command("cp", "-a", dir, saved).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	configtest.RewriteLastEntry(t, dir)
	st, _ = config.OpenState(dir, config.Options{Anchor: a})
	if _, err := st.History(); !errors.Is(err, config.ErrTampered) {
		t.Fatalf("rewritten history: %v, want ErrTampered", err)
	}
	os.RemoveAll(dir)
	exec.Command("cp", "-a", saved, dir).Run()

	// Wiped and re-initialised with another administrator key.
	os.RemoveAll(dir)
	intruder, _ := config.GenerateKey("ed25519")
	config.InitState(dir, intruder.Public())
	if _, err := config.OpenState(dir, config.Options{Anchor: a}); !errors.Is(err, config.ErrAdminNotAnchored) {
		t.Fatalf("wiped state with another admin: %v", err)
	}
}
