package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/atomicfile"
	"github.com/palisade-project/palisade/internal/swtpmtest"
	"github.com/palisade-project/palisade/internal/utpm"
)

// visorFile writes a stand-in visor executable: only its bytes matter to the measurement.
func visorFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "palisaded")
	if err := os.WriteFile(p, []byte(content), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func open(t testing.TB, sw *swtpmtest.TPM, state, exe string, conf []byte, pcr int) (*Root, error) {
	t.Helper()
	return Open(context.Background(), Config{
		Device:   sw.Device(),
		StateDir: state,
		PCR:      pcr,
		Visor:    VisorInputs{Executable: exe, Configuration: conf},
	})
}

func mustOpen(t testing.TB, sw *swtpmtest.TPM, state, exe string, conf []byte) *Root {
	t.Helper()
	r, err := open(t, sw, state, exe, conf, 0)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

func TestOpenSealsThenUnsealsSameSecret(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exe := visorFile(t, "visor A")
	r1 := mustOpen(t, sw, state, exe, []byte("conf"))
	p1 := r1.Platform()
	secret := append([]byte(nil), p1.MasterSecret...)
	id1 := r1.identityDER
	if len(secret) != masterSecretSize || !p1.Rooted || r1.Mode() != "tpm" {
		t.Fatalf("platform: secret %d bytes, rooted %v, mode %q", len(secret), p1.Rooted, r1.Mode())
	}
	// The cap is extended: even this process cannot unseal any more.
	r1.mu.Lock()
	_, err := r1.masterSecret(Config{StateDir: state})
	r1.mu.Unlock()
	if !errors.Is(err, ErrPolicy) {
		t.Fatalf("unseal after cap: got %v, want ErrPolicy", err)
	}
	// The event log is exactly visor, identity, cap, and replays to the TPM's PCR.
	ev := r1.EventLog()
	wantVisor, _ := MeasureVisor(strings.NewReader("visor A"), []byte("conf"))
	if len(ev) != 3 || ev[0].Kind != EventVisor || ev[0].Digest != wantVisor ||
		ev[1].Kind != EventIdentity || ev[1].Digest != sha256.Sum256(id1) ||
		ev[2].Kind != EventCap || ev[2].Digest != CapDigest() {
		t.Fatalf("event log = %+v", ev)
	}
	r1.mu.Lock()
	pcr, err := r1.readPCR()
	r1.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := Replay(ev, DefaultPCR); got != pcr {
		t.Fatalf("replay %x != PCR %x", got, pcr)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := mustOpen(t, sw, state, exe, []byte("conf"))
	defer r2.Close()
	if !bytes.Equal(r2.Platform().MasterSecret, secret) {
		t.Fatal("second start unsealed a different master secret")
	}
	if bytes.Equal(r2.identityDER, id1) {
		t.Fatal("identity key not fresh at restart")
	}
	if !bytes.Equal(r2.AKPublic(), r1.AKPublic()) {
		t.Fatal("attestation key changed across restarts of the same TPM")
	}
}

func TestOtherVisorCannotUnseal(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exeA := visorFile(t, "visor A")
	r := mustOpen(t, sw, state, exeA, []byte("conf"))
	r.Close()
	for _, tc := range []struct {
		name string
		exe  string
		conf []byte
	}{
		{"other executable", visorFile(t, "visor B"), []byte("conf")},
		{"other configuration", exeA, []byte("conf, edited")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := open(t, sw, state, tc.exe, tc.conf, 0)
			if err == nil {
				r.Close()
				t.Fatal("a different visor unsealed the master secret")
			}
			if !errors.Is(err, ErrPolicy) || !errors.Is(err, tpm2.TPMRCPolicyFail) ||
				!strings.Contains(err.Error(), "PCR 23") {
				t.Fatalf("error does not name the PCR policy failure: %v", err)
			}
		})
	}
	// The original visor still can.
	r = mustOpen(t, sw, state, exeA, []byte("conf"))
	r.Close()
}

func TestNonResettablePCRNeedsReboot(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exe := visorFile(t, "visor A")
	r, err := open(t, sw, state, exe, nil, 15)
	if err != nil {
		t.Fatal(err)
	}
	if r.PCR() != 15 {
		t.Fatalf("PCR = %d", r.PCR())
	}
	r.Close()
	if _, err := open(t, sw, state, exe, nil, 15); !errors.Is(err, ErrPCRNotFresh) {
		t.Fatalf("restart without reboot: got %v, want ErrPCRNotFresh", err)
	}
	// A reboot of the TPM (swtpm restart on the same state) resets PCR 15.
	sw.Stop()
	sw2 := swtpmtest.Start(t, swtpmtest.WithStateDir(sw.Dir))
	r, err = open(t, sw2, state, exe, nil, 15)
	if err != nil {
		t.Fatalf("after reboot: %v", err)
	}
	r.Close()
}

func TestCountersPersistAndRefuseRollback(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exe := visorFile(t, "visor A")
	pal := utpm.Digest{1, 2, 3}
	file := filepath.Join(state, "counters")

	r := mustOpen(t, sw, state, exe, nil)
	c := r.Counters()
	for want := uint64(1); want <= 2; want++ {
		if v, err := c.Increment(pal, 7); err != nil || v != want {
			t.Fatalf("Increment = %d, %v; want %d", v, err, want)
		}
	}
	old, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Increment(pal, 7); err != nil || v != 3 {
		t.Fatalf("Increment = %d, %v", v, err)
	}
	r.Close()

	r = mustOpen(t, sw, state, exe, nil)
	if v, _ := r.Counters().Read(pal, 7); v != 3 {
		t.Fatalf("after restart counter = %d, want 3", v)
	}
	if v, _ := r.Counters().Read(pal, 8); v != 0 {
		t.Fatalf("untouched counter = %d", v)
	}
	r.Close()
	current, _ := os.ReadFile(file)

	tests := []struct {
		name    string
		install func()
		want    error
	}{
		{"restored old copy", func() { os.WriteFile(file, old, 0o600) }, ErrRollback},
		{"deleted", func() { os.Remove(file) }, ErrRollback},
		{"edited", func() {
			b := bytes.Clone(current)
			b[len(b)/2] ^= 1
			os.WriteFile(file, b, 0o600)
		}, ErrCounterState},
		{"garbage", func() { os.WriteFile(file, []byte("not cbor"), 0o600) }, ErrCounterState},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.install()
			r, err := open(t, sw, state, exe, nil, 0)
			if err == nil {
				r.Close()
				t.Fatal("Open accepted the state file")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
	os.WriteFile(file, current, 0o600)
	r = mustOpen(t, sw, state, exe, nil)
	r.Close()
}

// A visor that stopped after writing the state file but before incrementing the NV counter
// restarts with the file one ahead: the increment is completed, nothing is refused.
func TestCountersCompleteInterruptedWrite(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exe := visorFile(t, "visor A")
	pal := utpm.Digest{9}
	r := mustOpen(t, sw, state, exe, nil)
	c := r.Counters()
	c.mu.Lock()
	c.values[counterKey{pal, 1}] = 41
	c.anchor = c.nvVal + 1
	err := c.write()
	nv := c.nvVal
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r = mustOpen(t, sw, state, exe, nil)
	defer r.Close()
	c = r.Counters()
	if c.nvVal != nv+1 || c.anchor != c.nvVal {
		t.Fatalf("NV %d (was %d), anchor %d", c.nvVal, nv, c.anchor)
	}
	if v, _ := c.Read(pal, 1); v != 41 {
		t.Fatalf("counter = %d, want 41", v)
	}
	if v, err := c.Increment(pal, 1); err != nil || v != 42 {
		t.Fatalf("Increment = %d, %v", v, err)
	}
}

// Endorse and counter increments from many goroutines share one TPM connection.
func TestConcurrentEndorseAndCounters(t *testing.T) {
	sw := swtpmtest.Start(t)
	r := mustOpen(t, sw, t.TempDir(), visorFile(t, "visor A"), nil)
	defer r.Close()
	const workers, each = 4, 5
	errs := make(chan error, workers*each*2)
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < each; i++ {
				if _, err := r.Endorse(context.Background(), []byte{byte(w), byte(i)}); err != nil {
					errs <- err
				}
				if _, err := r.Counters().Increment(utpm.Digest{byte(w % 2)}, 1); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	a, _ := r.Counters().Read(utpm.Digest{0}, 1)
	b, _ := r.Counters().Read(utpm.Digest{1}, 1)
	if a+b != workers*each || a != b {
		t.Fatalf("counters %d + %d, want %d in total, evenly", a, b, workers*each)
	}
}

// Root with the owner auth undefines the NV counter and restores an old state file: the
// re-created counter starts at the highest value any counter had, so the file still looks old.
func TestCountersRollbackAfterNVUndefine(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exe := visorFile(t, "visor A")
	file := filepath.Join(state, "counters")
	r := mustOpen(t, sw, state, exe, nil)
	r.Counters().Increment(utpm.Digest{}, 1)
	old, _ := os.ReadFile(file)
	r.Counters().Increment(utpm.Digest{}, 1)
	r.Close()

	tp, err := OpenDevice(sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	rp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(DefaultNVCounterIndex)}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.NVUndefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: DefaultNVCounterIndex, Name: rp.NVName},
	}).Execute(tp); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	os.WriteFile(file, old, 0o600)
	if _, err := open(t, sw, state, exe, nil, 0); !errors.Is(err, ErrRollback) {
		t.Fatalf("old state after NV re-creation: got %v, want ErrRollback", err)
	} else {
		t.Log(err)
	}
}

// TestOpenStateDirectory: a visor killed between writing a state file's temporary
// copy and renaming it leaves the copy behind (atomicfile.TempPattern). The real file was
// never replaced by it, so it is garbage; a daemon killed now and then used to pile them up
// in rot-tpm for good (two after 40 SIGKILLs under load).
func TestOpenStateDirectory(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exe := visorFile(t, "visor A")
	r := mustOpen(t, sw, state, exe, nil)
	if _, err := r.Counters().Increment(utpm.Digest{9}, 1); err != nil {
		t.Fatal(err)
	}
	r.Close()
	stale := []string{".counters.tmp1597023411", ".master.sealed.tmp42"}
	for _, n := range stale {
		if err := os.WriteFile(filepath.Join(state, n), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r = mustOpen(t, sw, state, exe, nil)
	defer r.Close()
	if left, _ := filepath.Glob(filepath.Join(state, atomicfile.TempPattern)); len(left) != 0 {
		t.Fatalf("temporary files left after Open: %v", left)
	}
	if v, err := r.Counters().Increment(utpm.Digest{9}, 1); err != nil || v != 2 {
		t.Fatalf("Increment = %d, %v; want 2", v, err)
	}
	// A second visor on the same directory would write the counters file from its own view
	// and take back the first one's increments: refused while the first is open, before it
	// touches the TPM or the files.
	if r2, err := open(t, sw, state, exe, nil, 0); err == nil || !strings.Contains(err.Error(), "in use by another visor") {
		if r2 != nil {
			r2.Close()
		}
		t.Fatalf("second Open on the same state directory: %v", err)
	}
}

// TestOpenMalformedMasterSecretFile: a damaged master.sealed is refused with an error that
// names the file and what it is; it said "malformed endorsement", which sent an operator
// looking at evidence rather than at the state directory. Nothing is rewritten: the file
// put back, the visor starts with its secret.
func TestOpenMalformedMasterSecretFile(t *testing.T) {
	sw := swtpmtest.Start(t)
	state := t.TempDir()
	exe := visorFile(t, "visor A")
	mustOpen(t, sw, state, exe, nil).Close()
	path := filepath.Join(state, "master.sealed")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = open(t, sw, state, exe, nil, 0)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "sealed master secret") || strings.Contains(err.Error(), "endorsement") {
		t.Fatalf("Open with a truncated master.sealed: %v", err)
	}
	if b, _ := os.ReadFile(path); len(b) != len(good)/2 {
		t.Fatalf("master.sealed rewritten by a failed Open (%d bytes)", len(b))
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, sw, state, exe, nil).Close()
}
