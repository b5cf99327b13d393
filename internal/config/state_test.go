package config

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/atomicfile"
)

func newState(t *testing.T, admin crypto.Signer) *State {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := InitState(dir, admin.Public()); err != nil {
		t.Fatal(err)
	}
	st, err := OpenState(dir, Options{Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustApply(t *testing.T, st *State, raw []byte) Entry {
	t.Helper()
	_, e, err := st.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestApplyTransitions(t *testing.T) {
	admin := newKey(t, "ed25519")
	st := newState(t, admin)
	if _, err := st.Active(); !errors.Is(err, ErrNoActiveConfig) {
		t.Fatalf("fresh state: %v", err)
	}
	v1, v2, v3 := baseConfig(1), baseConfig(2), baseConfig(3)
	v2.PALs["signer"] = append(v2.PALs["signer"], meas("signer-2"))
	v3.PALs["signer"] = []Measurement{meas("signer-2")}
	r1, r2, r3 := mustSign(t, v1, admin), mustSign(t, v2, admin), mustSign(t, v3, admin)

	mustApply(t, st, r1)
	mustApply(t, st, r2)

	// Replays and stale versions are refused and change nothing.
	for _, raw := range [][]byte{r1, r2, mustSign(t, baseConfig(2), admin)} {
		if _, _, err := st.Apply(raw); !errors.Is(err, ErrRollback) {
			t.Fatalf("replay: got %v, want ErrRollback", err)
		}
	}
	// Foreign-signed and tampered documents are refused.
	if _, _, err := st.Apply(mustSign(t, baseConfig(9), newKey(t, "es256"))); !errors.Is(err, ErrForeignKey) {
		t.Fatalf("foreign: %v", err)
	}
	bad := bytes.Clone(r3)
	bad[len(bad)/2] ^= 1
	if _, _, err := st.Apply(bad); err == nil {
		t.Fatal("tampered document applied")
	}
	act, err := st.Active()
	if err != nil || act.Version != 2 {
		t.Fatalf("active after refusals: %v %v", act, err)
	}

	e3 := mustApply(t, st, r3)
	if !strings.Contains(strings.Join(e3.Changes, "\n"), "pal signer: - "+meas("signer-1").String()+" (revoked)") {
		t.Fatalf("history entry does not record the revocation: %q", e3.Changes)
	}
	hist, err := st.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 || hist[2].Prev != hist[1].Hash() || hist[0].Prev != (Measurement{}) {
		t.Fatalf("history: %+v", hist)
	}
	head, _ := st.Head()
	if head.Seq != 3 || head.Version != 3 || head.Head != hist[2].Hash() {
		t.Fatalf("head %+v", head)
	}
	if a, _ := (FileAnchor{Path: filepath.Join(st.Dir(), fileAnchor)}).Read(); a != 3 {
		t.Fatalf("anchor %d", a)
	}
}

func TestInitStatePinsOneKey(t *testing.T) {
	a, b := newKey(t, "ed25519"), newKey(t, "ed25519")
	dir := t.TempDir()
	// Before a key is pinned, the error says both ways to pin one (it named only config
	// init, although the first config apply pins with --admin-pub).
	if _, err := OpenState(dir, Options{}); err == nil || !strings.Contains(err.Error(), "config apply --admin-pub") {
		t.Fatalf("OpenState without a pinned key: %v", err)
	}
	if err := InitState(dir, a.Public()); err != nil {
		t.Fatal(err)
	}
	if err := InitState(dir, a.Public()); err != nil {
		t.Fatalf("re-pinning the same key: %v", err)
	}
	if err := InitState(dir, b.Public()); err == nil {
		t.Fatal("a second admin key was pinned")
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// A copy of an older state put back is refused as long as the anchor is not rolled back
// with it (here: the anchor lives outside the directory, as a TPM NV counter would).
func TestStateRollbackDetectedByAnchor(t *testing.T) {
	admin := newKey(t, "ed25519")
	dir := filepath.Join(t.TempDir(), "state")
	InitState(dir, admin.Public())
	anchor := FileAnchor{Path: filepath.Join(t.TempDir(), "nv")}
	st, _ := OpenState(dir, Options{Anchor: anchor})
	mustApply(t, st, mustSign(t, baseConfig(1), admin))
	old := filepath.Join(t.TempDir(), "old")
	copyDir(t, dir, old)
	mustApply(t, st, mustSign(t, baseConfig(2), admin))

	os.RemoveAll(dir)
	copyDir(t, old, dir)
	st, _ = OpenState(dir, Options{Anchor: anchor})
	_, err := st.Active()
	if !errors.Is(err, ErrRollback) {
		t.Fatalf("rolled-back state: got %v, want ErrRollback", err)
	}
	// The history is intact: the refusal says what is wrong, not that something is corrupt.
	if errors.Is(err, ErrHistory) || strings.Contains(err.Error(), "corrupt") ||
		!strings.Contains(err.Error(), "at version 1 but the version anchor is at 2") {
		t.Fatalf("rollback refusal %q does not say the state is older than the anchor", err)
	}
}

func TestStateDetectsCorruption(t *testing.T) {
	admin := newKey(t, "ed25519")
	for _, tc := range []struct {
		name   string
		break_ func(dir string) error
	}{
		{"history byte flipped", func(dir string) error {
			p := filepath.Join(dir, fileHistory)
			b, _ := os.ReadFile(p)
			b[len(b)-3] ^= 1
			return os.WriteFile(p, b, 0o644)
		}},
		{"history truncated", func(dir string) error {
			p := filepath.Join(dir, fileHistory)
			fi, _ := os.Stat(p)
			return os.Truncate(p, fi.Size()-1)
		}},
		{"config replaced", func(dir string) error {
			ents, _ := os.ReadDir(filepath.Join(dir, dirConfigs))
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			// Put configuration 1's bytes under configuration 2's hash.
			b0, _ := os.ReadFile(filepath.Join(dir, dirConfigs, names[0]))
			b1, _ := os.ReadFile(filepath.Join(dir, dirConfigs, names[1]))
			os.WriteFile(filepath.Join(dir, dirConfigs, names[0]), b1, 0o644)
			return os.WriteFile(filepath.Join(dir, dirConfigs, names[1]), b0, 0o644)
		}},
		{"pointer garbage", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, filePointer), []byte("junk"), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newState(t, admin)
			mustApply(t, st, mustSign(t, baseConfig(1), admin))
			mustApply(t, st, mustSign(t, baseConfig(2), admin))
			if err := tc.break_(st.Dir()); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Active(); err == nil {
				t.Fatal("corrupt state accepted")
			}
		})
	}
}

// Crash points of Apply, in order, and whether the new configuration must be active after a
// kill at that point.
// Under a binding anchor the history extension is the point of no return and the version
// advance comes after it; "-" marks a step that the mode does not pass.
var crashSteps = []struct {
	step        string
	file, bound string // "old", "new" or "-"
}{
	{"temp-written:CONFIG", "old", "old"},
	{"config-written", "old", "old"},
	{"history-torn", "old", "old"},
	{"history-appended", "old", "old"},
	{"temp-written:" + fileAnchored, "-", "old"},
	{"anchor-marked", "-", "old"},
	{"history-anchored", "-", "new"},
	{"temp-written:version", "-", "new"},
	{"temp-written:" + fileAnchor, "old", "-"},
	{"anchor-advanced", "new", "new"},
	{"temp-written:" + filePointer, "new", "new"},
	{"committed", "new", "new"},
}

// TestApplyCrashHelper is not a test: TestApplyCrash runs the test binary with it to apply a
// configuration in a child process that SIGKILLs itself at PALISADE_CRASH_AT.
func TestApplyCrashHelper(t *testing.T) {
	dir := os.Getenv("PALISADE_CRASH_STATE")
	if dir == "" {
		t.Skip("helper process only")
	}
	at := os.Getenv("PALISADE_CRASH_AT")
	crashHook = func(step string) {
		if step == at {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	raw, err := os.ReadFile(os.Getenv("PALISADE_CRASH_DOC"))
	if err != nil {
		t.Fatal(err)
	}
	var o Options
	if d := os.Getenv("PALISADE_CRASH_BOUND"); d != "" {
		o.Anchor = outsideAnchor{FileAnchor: FileAnchor{Path: filepath.Join(d, "version")}, dir: d}
	}
	st, err := OpenState(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(raw); err != nil {
		t.Fatal(err)
	}
	os.Exit(3) // the crash point was never reached
}

func TestApplyCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	admin := newKey(t, "ed25519")
	r1 := mustSign(t, baseConfig(1), admin)
	v2 := baseConfig(2)
	v2.Apps["web"] = []Measurement{meas("web-2")}
	r2 := mustSign(t, v2, admin)
	h2, _ := v2.Hash()
	doc := filepath.Join(t.TempDir(), "v2.cose")
	os.WriteFile(doc, r2, 0o644)

	for _, mode := range []string{"file", "bound"} {
		for _, cs := range crashSteps {
			step := strings.Replace(cs.step, "CONFIG", h2.String()+".cose", 1)
			after := cs.file
			if mode == "bound" {
				after = cs.bound
			}
			if after == "-" {
				continue
			}
			t.Run(mode+"/"+cs.step, func(t *testing.T) {
				var o Options
				var anchorPath string
				env := []string{}
				if mode == "bound" {
					a := newOutsideAnchor(t)
					o.Anchor, anchorPath = a, a.Path
					env = append(env, "PALISADE_CRASH_BOUND="+a.dir)
				}
				st := newState(t, admin)
				if o.Anchor != nil {
					st, _ = OpenState(st.Dir(), o)
				} else {
					anchorPath = filepath.Join(st.Dir(), fileAnchor)
				}
				mustApply(t, st, r1)
				// Leave garbage from an earlier crashed apply behind too, to check it is dropped.
				cmd := exec.Command(os.Args[0], "-test.run=^TestApplyCrashHelper$")
				cmd.Env = append(append(os.Environ(), env...), "PALISADE_CRASH_STATE="+st.Dir(), "PALISADE_CRASH_AT="+step, "PALISADE_CRASH_DOC="+doc)
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("child was not killed at %s: %v\n%s", step, err, out)
				}

				st2, err := OpenState(st.Dir(), o)
				if err != nil {
					t.Fatal(err)
				}
				act, err := st2.Active()
				if err != nil {
					t.Fatalf("state after a crash at %s: %v", step, err)
				}
				want := uint64(1)
				if after == "new" {
					want = 2
				}
				if act.Version != want {
					t.Fatalf("crash at %s: version %d active, want %d", step, act.Version, want)
				}
				hist, err := st2.History()
				if err != nil || uint64(len(hist)) != want || hist[len(hist)-1].Config != act.Hash {
					t.Fatalf("crash at %s: history %d entries (%v) for version %d", step, len(hist), err, want)
				}
				if a, _ := (FileAnchor{Path: anchorPath}).Read(); a != want {
					t.Fatalf("crash at %s: anchor %d", step, a)
				}
				// The state keeps working: the interrupted update or a newer one applies.
				if after == "old" {
					mustApply(t, st2, r2)
				}
				mustApply(t, st2, mustSign(t, baseConfig(3), admin))
				if hist, err := st2.History(); err != nil || len(hist) != 3 {
					t.Fatalf("after recovery: %d entries, %v", len(hist), err)
				}
				// The next apply removed the temporary files the killed one left.
				for _, d := range []string{st.Dir(), filepath.Join(st.Dir(), dirConfigs)} {
					if left, _ := filepath.Glob(filepath.Join(d, atomicfile.TempPattern)); len(left) != 0 {
						t.Fatalf("crash at %s: temporary files left after the next apply: %v", step, left)
					}
				}
				if ba, ok := o.Anchor.(BindingAnchor); ok {
					d, _ := ba.HistoryDigest()
					if p, _ := st2.Head(); d != HistoryExtend(p.AnchorPrev, p.Head) {
						t.Fatalf("crash at %s: the anchor's digest is not the head's", step)
					}
				}
			})
		}
	}
}

// TestApplyKilledAnywhere kills a child that applies versions in a loop at an arbitrary
// moment, several times, and checks the state each time.
func TestApplyKilledAnywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	admin := newKey(t, "ed25519")
	st := newState(t, admin)
	docs := t.TempDir()
	for v := uint64(1); v <= 40; v++ {
		os.WriteFile(filepath.Join(docs, strconv.FormatUint(v, 10)), mustSign(t, baseConfig(v), admin), 0o644)
	}
	for round, delay := range []time.Duration{0, 5 * time.Millisecond, 15 * time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond, 80 * time.Millisecond} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestApplyLoopHelper$")
		cmd.Env = append(os.Environ(), "PALISADE_LOOP_STATE="+st.Dir(), "PALISADE_LOOP_DOCS="+docs)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20*time.Millisecond + delay)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		act, err := st.Active()
		if errors.Is(err, ErrNoActiveConfig) {
			if hist, err := st.History(); err != nil || len(hist) != 0 {
				t.Fatalf("round %d: no active configuration but history %d, %v", round, len(hist), err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		hist, err := st.History()
		if err != nil || hist[len(hist)-1].Version != act.Version {
			t.Fatalf("round %d: history does not end at the active version %d: %v", round, act.Version, err)
		}
		t.Logf("round %d: killed at version %d (%d entries)", round, act.Version, len(hist))
	}
}

func TestApplyLoopHelper(t *testing.T) {
	dir := os.Getenv("PALISADE_LOOP_STATE")
	if dir == "" {
		t.Skip("helper process only")
	}
	st, err := OpenState(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 40; v++ {
		raw, _ := os.ReadFile(filepath.Join(os.Getenv("PALISADE_LOOP_DOCS"), strconv.Itoa(v)))
		st.Apply(raw) // versions already applied are refused; keep going
	}
	os.Exit(0)
}

// FuzzDecodeHistory: no input crashes the history decoder, and whatever it accepts is a
// well-formed chain that re-encodes to the same bytes.
func FuzzDecodeHistory(f *testing.F) {
	var chain []byte
	var prev Measurement
	for i := uint64(1); i <= 3; i++ {
		e := Entry{Seq: i, Version: i * 2, Config: meas("c" + strconv.FormatUint(i, 10)), Prev: prev, Time: 1700000000, Changes: []string{"pal x: added"}}
		rec, err := encodeRecord(e)
		if err != nil {
			f.Fatal(err)
		}
		chain = append(chain, rec...)
		prev = e.Hash()
	}
	f.Add(chain)
	f.Add(chain[:len(chain)-1])
	f.Add([]byte{1, 0, 0, 0, 0xa0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := DecodeHistory(b)
		if err != nil {
			return
		}
		var again []byte
		for i, e := range es {
			if e.Seq != uint64(i+1) {
				t.Fatalf("accepted sequence %d at %d", e.Seq, i)
			}
			rec, err := encodeRecord(e)
			if err != nil {
				t.Fatal(err)
			}
			again = append(again, rec...)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("accepted history does not re-encode to the same bytes")
		}
	})
}

func BenchmarkApply(b *testing.B) {
	admin := newKey(b, "ed25519")
	dir := filepath.Join(b.TempDir(), "s")
	InitState(dir, admin.Public())
	st, _ := OpenState(dir, Options{})
	docs := make([][]byte, b.N)
	for i := range docs {
		docs[i] = mustSign(b, baseConfig(uint64(i+1)), admin)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := st.Apply(docs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	admin := newKey(b, "ed25519")
	raw := mustSign(b, baseConfig(1), admin)
	for b.Loop() {
		if _, err := Verify(raw, admin.Public()); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecodeHistoryReportsBrokenLink(t *testing.T) {
	var recs [][]byte
	var prev Measurement
	var es []Entry
	for i := uint64(1); i <= 3; i++ {
		e := Entry{Seq: i, Version: i, Config: meas(strconv.FormatUint(i, 10)), Prev: prev}
		es = append(es, e)
		prev = e.Hash()
	}
	es[1].Changes = []string{"rewritten"} // entry 2 changed: entry 3's link breaks
	for _, e := range es {
		r, _ := encodeRecord(e)
		recs = append(recs, r)
	}
	got, err := DecodeHistory(bytes.Join(recs, nil))
	// Entry 2 was modified: only entry 1 is still vouched for.
	if !errors.Is(err, ErrHistory) || !strings.Contains(err.Error(), "entry 3: broken link") ||
		!strings.Contains(err.Error(), "entry 2 or entry 3 was modified") || len(got) != 1 {
		t.Fatalf("got %d entries, %v", len(got), err)
	}
	es[1].Changes, es[2].Seq = nil, 4
	recs = recs[:0]
	for _, e := range es {
		r, _ := encodeRecord(e)
		recs = append(recs, r)
	}
	if _, err := DecodeHistory(bytes.Join(recs, nil)); err == nil || !strings.Contains(err.Error(), "sequence number 4") {
		t.Fatalf("sequence gap: %v", err)
	}
}

// TestHistoryReportsOnlyVouchedEntries: config history printed a modified entry among the
// ones it said were verified ("NOT verified after 2 entries" with entry 2 rewritten, or the
// last entry rewritten): only entries the chain and the active pointer still vouch for are
// returned with the error.
func TestHistoryReportsOnlyVouchedEntries(t *testing.T) {
	admin := newKey(t, "ed25519")
	for _, tc := range []struct {
		name     string
		modify   uint64 // the entry whose recorded changes are rewritten
		vouched  int
		inReport string
	}{
		{"middle entry", 2, 1, "entry 2 or entry 3 was modified"},
		{"last entry", 3, 2, "entry 3 or the pointer was modified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newState(t, admin)
			for v := uint64(1); v <= 3; v++ {
				c := baseConfig(v)
				c.Apps["web"] = append(c.Apps["web"], meas(fmt.Sprint("web-v", v)))
				mustApply(t, st, mustSign(t, c, admin))
			}
			p := filepath.Join(st.Dir(), fileHistory)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			// Every entry records "app web: + <hex of web-vN>": rewrite one hex digit of entry N's.
			h := []byte(meas(fmt.Sprint("web-v", tc.modify)).String())
			i := bytes.Index(b, h)
			if i < 0 {
				t.Fatal("change line not found")
			}
			b[i] ^= 0x01
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := st.History()
			if !errors.Is(err, ErrHistory) || !strings.Contains(err.Error(), tc.inReport) || len(got) != tc.vouched {
				t.Fatalf("got %d entries, %v; want %d and %q", len(got), err, tc.vouched, tc.inReport)
			}
		})
	}
}

// A wiped state under an anchor that survived (a TPM NV counter) has nothing active and
// accepts only versions above the anchor: the old configurations cannot be replayed into it.
func TestFreshStateUnderAdvancedAnchor(t *testing.T) {
	admin := newKey(t, "ed25519")
	anchor := FileAnchor{Path: filepath.Join(t.TempDir(), "nv")}
	if err := anchor.Advance(5); err != nil {
		t.Fatal(err)
	}
	if err := anchor.Advance(4); !errors.Is(err, ErrRollback) {
		t.Fatalf("anchor went back: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	InitState(dir, admin.Public())
	st, _ := OpenState(dir, Options{Anchor: anchor})
	if _, err := st.Active(); !errors.Is(err, ErrNoActiveConfig) {
		t.Fatalf("fresh state: %v", err)
	}
	if _, _, err := st.Apply(mustSign(t, baseConfig(5), admin)); !errors.Is(err, ErrRollback) {
		t.Fatalf("version at the anchor applied: %v", err)
	}
	mustApply(t, st, mustSign(t, baseConfig(6), admin))
	if v, _ := anchor.Read(); v != 6 {
		t.Fatalf("anchor %d", v)
	}
}

// stoppingAnchor stands for an anchor that advances one step at a time (a TPM NV counter)
// and whose process dies part way: it advances half way to the target, then fails.
type stoppingAnchor struct{ FileAnchor }

func (a stoppingAnchor) Advance(to uint64) error {
	cur, err := a.Read()
	if err != nil {
		return err
	}
	if err := a.FileAnchor.Advance(cur + (to-cur)/2); err != nil {
		return err
	}
	return errors.New("killed during the advance")
}

// An apply interrupted in the middle of advancing the anchor has passed its point of no
// return (the anchor is above the old version): the next load completes it.
func TestApplyInterruptedDuringAdvance(t *testing.T) {
	admin := newKey(t, "ed25519")
	dir := filepath.Join(t.TempDir(), "state")
	InitState(dir, admin.Public())
	anchor := FileAnchor{Path: filepath.Join(t.TempDir(), "nv")}
	st, _ := OpenState(dir, Options{Anchor: anchor})
	mustApply(t, st, mustSign(t, baseConfig(1), admin))

	v9 := baseConfig(9)
	v9.PALs["signer"] = []Measurement{meas("signer-9")}
	st, _ = OpenState(dir, Options{Anchor: stoppingAnchor{anchor}})
	if _, _, err := st.Apply(mustSign(t, v9, admin)); err == nil {
		t.Fatal("apply succeeded through a failing anchor")
	}
	if v, _ := anchor.Read(); v != 5 {
		t.Fatalf("anchor at %d, want half way (5)", v)
	}
	st, _ = OpenState(dir, Options{Anchor: anchor})
	act, err := st.Active()
	if err != nil {
		t.Fatal(err)
	}
	if act.Version != 9 {
		t.Fatalf("active version %d, want 9 (rolled forward)", act.Version)
	}
	if v, _ := anchor.Read(); v != 9 {
		t.Fatalf("anchor at %d after roll forward", v)
	}
	if h, err := st.History(); err != nil || len(h) != 2 {
		t.Fatalf("history: %d entries, %v", len(h), err)
	}
}
