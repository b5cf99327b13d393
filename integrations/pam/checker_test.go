package pam_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/palisade-project/palisade/integrations/pam"
	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/engine/kvm/cbuild"
)

// daemon starts an in-process palisaded (wasm engine) in dir ("" a temporary one) and
// registers the shipped checking PAL on it. stop stops the daemon (once; cleanup calls it).
func daemon(t testing.TB, dir string) (stop func() error, k pam.Checker) {
	t.Helper()
	ctx := context.Background()
	d, err := apps.StartDaemon(ctx, apps.DaemonOptions{Dir: dir, Engines: []string{"wasm"}})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() error {
		once.Do(func() { err = d.Close(context.Background()) })
		return err
	}
	t.Cleanup(func() { stop() })
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	k, err = pam.State{Dir: t.TempDir()}.Ensure(ctx, c, nil, "wasm")
	if err != nil {
		t.Fatal(err)
	}
	return stop, k
}

// TestHashMatchesXCrypto checks the PAL's Argon2id (written from RFC 9106) against
// golang.org/x/crypto/argon2 over parameters that exercise every path: one and several lanes,
// one and several passes, tags shorter and longer than 64 bytes, memory not a multiple of 4p.
func TestHashMatchesXCrypto(t *testing.T) {
	_, k := daemon(t, "")
	ctx := context.Background()
	for _, tc := range []struct {
		p        pam.Params
		pw, salt string
		tagLen   uint32
	}{
		{pam.Params{Time: 1, Memory: 64, Threads: 1}, "password", "somesalt", 32},
		{pam.Params{Time: 3, Memory: 100, Threads: 4}, "hello", "worldsalt", 64},
		{pam.Params{Time: 1, Memory: 8, Threads: 1}, "x", "saltsalt", 4},
		{pam.Params{Time: 2, Memory: 2050, Threads: 2}, "correct horse", "0123456789abcdef", 48},
		{pam.Params{Time: 1, Memory: 64, Threads: 1}, "", "saltsalt", 32},
		{pam.DefaultParams, "battery staple", "0123456789abcdef", 32},
	} {
		got, err := k.Hash(ctx, tc.p, []byte(tc.pw), []byte(tc.salt), tc.tagLen)
		if err != nil {
			t.Fatalf("%+v: %v", tc.p, err)
		}
		want := argon2.IDKey([]byte(tc.pw), []byte(tc.salt), tc.p.Time, tc.p.Memory, uint8(tc.p.Threads), tc.tagLen)
		if !bytes.Equal(got, want) {
			t.Errorf("%+v %q %q: PAL %x, x/crypto %x", tc.p, tc.pw, tc.salt, got, want)
		}
	}
	// Out-of-range parameters are refused by the PAL, not computed.
	if _, err := k.Hash(ctx, pam.Params{Time: 1, Memory: pam.MaxMemoryKiB + 1, Threads: 1}, []byte("a"), []byte("saltsalt"), 32); err == nil {
		t.Error("m above the arena was accepted")
	}
}

// TestEnrolCheckLockout: the right password passes, a wrong one and an unknown user fail,
// MaxFailures failures lock the user even against the right password, a database rolled back
// to an older copy stays locked, the lockout survives a daemon restart (the µTPM counter is
// persistent), and Unlock lifts it.
func TestEnrolCheckLockout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	stop, k := daemon(t, dir)
	fast := pam.Params{Time: 1, Memory: 64, Threads: 1}
	db, err := k.Enrol(ctx, nil, "alice", []byte("right"), fast, 3)
	if err != nil {
		t.Fatal(err)
	}
	if db, err = k.Enrol(ctx, db, "bob", []byte("bobs"), pam.Params{}, 0); err != nil {
		t.Fatal(err)
	}
	old := db
	for _, tc := range []struct {
		user, pw string
		want     error
	}{
		{"alice", "right", nil}, {"bob", "bobs", nil}, {"alice", "bobs", pam.ErrWrong},
		{"carol", "right", pam.ErrWrong}, {"alice", "right", nil},
	} {
		newDB, err := k.Check(ctx, db, tc.user, []byte(tc.pw))
		if !errors.Is(err, tc.want) {
			t.Fatalf("check %s/%s: %v, want %v", tc.user, tc.pw, err, tc.want)
		}
		if newDB != nil {
			db = newDB
		}
	}
	for i := 0; i < 3; i++ {
		if _, err := k.Check(ctx, db, "alice", []byte("guess")); !errors.Is(err, pam.ErrWrong) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := k.Check(ctx, db, "alice", []byte("right")); !errors.Is(err, pam.ErrLocked) {
		t.Fatalf("after 3 failures: %v, want ErrLocked", err)
	}
	if _, err := k.Check(ctx, old, "alice", []byte("right")); !errors.Is(err, pam.ErrLocked) {
		t.Fatalf("rolled-back db: %v, want ErrLocked", err)
	}
	if _, err := k.Check(ctx, db, "bob", []byte("bobs")); err != nil {
		t.Fatalf("bob while alice is locked: %v", err)
	}
	// A user enrolled after failures under unknown names (carol's, above) starts unlocked: the
	// baseline is read from the new user's own counter, not the unknown names' shared one
	// (found by running examples/sshpass's tests twice in one process).
	if db, err = k.Enrol(ctx, db, "dave", []byte("daves"), pam.Params{}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Check(ctx, db, "dave", []byte("daves")); err != nil {
		t.Fatalf("dave, enrolled after an unknown name failed: %v", err)
	}

	// A restart: a new daemon on the same state, the PAL registered again.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, k = daemon(t, dir)
	if _, err := k.Check(ctx, db, "alice", []byte("right")); !errors.Is(err, pam.ErrLocked) {
		t.Fatalf("after a restart: %v, want ErrLocked", err)
	}
	if db, err = k.Unlock(ctx, db, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Check(ctx, db, "alice", []byte("right")); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	if db, err = k.Delete(ctx, db, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Check(ctx, db, "alice", []byte("right")); !errors.Is(err, pam.ErrWrong) {
		t.Fatalf("deleted user: %v", err)
	}
}

// TestFullDatabase fills databases to their limits. With short names, 256 users and a 257th
// refused, naming the limit. With names of 255 bytes the sealed database reaches the 64 KiB a
// PAL can seal first (at 200 users): the next enrolment is refused naming that limit (it was
// "seal failed"), and every user enrolled still checks.
func TestFullDatabase(t *testing.T) {
	_, k := daemon(t, "")
	ctx := context.Background()
	fast := pam.Params{Time: 1, Memory: 8, Threads: 1}
	for _, tc := range []struct {
		name    string
		user    func(i int) string
		fit     int    // users that fit
		refusal string // the next one's error
	}{
		{"short names", func(i int) string { return fmt.Sprintf("user%d", i) }, 256, "the db holds 256 users"},
		{"255-byte names", func(i int) string { return fmt.Sprintf("%03d", i) + strings.Repeat("u", pam.MaxUser-3) }, 200, "64 KiB a PAL can seal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var db []byte
			for i := 0; i < tc.fit; i++ {
				next, err := k.Enrol(ctx, db, tc.user(i), []byte(tc.user(i)), fast, 0)
				if err != nil {
					t.Fatalf("user %d: %v", i, err)
				}
				db = next
			}
			if _, err := k.Enrol(ctx, db, tc.user(tc.fit), []byte("pw"), pam.Params{}, 0); err == nil || !strings.Contains(err.Error(), tc.refusal) {
				t.Errorf("user %d: %v, want an error with %q", tc.fit, err, tc.refusal)
			}
			for _, i := range []int{0, tc.fit / 2, tc.fit - 1} {
				if _, err := k.Check(ctx, db, tc.user(i), []byte(tc.user(i))); err != nil {
					t.Errorf("user %d of a full database: %v", i, err)
				}
			}
		})
	}
}

// TestSeparateDatabases: two databases of the same checking PAL (two state directories, or the
// demo's and sshd's) keep separate lockouts. The failure counters were named by the user name
// alone, so failures against alice in one database locked alice out of every other; each
// database now draws a random id that names its counters.
func TestSeparateDatabases(t *testing.T) {
	_, k := daemon(t, "")
	ctx := context.Background()
	fast := pam.Params{Time: 1, Memory: 8, Threads: 1}
	var dbs [2][]byte
	for i := range dbs {
		var err error
		if dbs[i], err = k.Enrol(ctx, nil, "alice", []byte("right"), fast, 2); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := k.Check(ctx, dbs[1], "alice", []byte("guess")); !errors.Is(err, pam.ErrWrong) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := k.Check(ctx, dbs[1], "alice", []byte("right")); !errors.Is(err, pam.ErrLocked) {
		t.Fatalf("the database the failures were against: %v, want ErrLocked", err)
	}
	if _, err := k.Check(ctx, dbs[0], "alice", []byte("right")); err != nil {
		t.Errorf("the other database: %v, want nil (its own lockout)", err)
	}
	// Only an enrolment starts a database (and so new counters): a check against none is refused.
	if _, err := k.Check(ctx, []byte{}, "alice", []byte("right")); err == nil || !strings.Contains(err.Error(), "no db") {
		t.Errorf("a check against no database: %v, want the PAL's refusal", err)
	}
}

// TestCheckerReproduces rebuilds pal/checker.wasm with the go:generate command and checks the
// committed (embedded) image matches its source.
func TestCheckerReproduces(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	out := filepath.Join(t.TempDir(), "checker.wasm")
	sdk := "../../sdk/c/"
	cmd := exec.Command("clang", "--target=wasm32", "-nostdlib", "-ffreestanding", "-fno-builtin", "-O2",
		"-Wall", "-Wextra", "-Werror", "-Wl,--no-entry", "-Wl,-z,stack-size=65536", "-I", sdk, "-o", out,
		"pal/checker.c", "pal/argon2.c", sdk+"palisade.c", sdk+"libc.c", sdk+"sha256.c", sdk+"wasm32/entry.c")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pam.CheckerImage) {
		t.Error("pal/checker.wasm does not match its source: run go generate ./integrations/pam")
	}
}

// BenchmarkArgon2id runs the same Argon2id (32-byte tag) natively with
// golang.org/x/crypto/argon2 and in the wasm checking PAL through the daemon, in one run, for
// DefaultParams (OWASP's minimum) and for a small setting (t=1, m=2 MiB) where the fixed cost
// of a call weighs more. (`palisade bench --sections ssh` measures the same native time beside
// real logins.)
func BenchmarkArgon2id(b *testing.B) {
	_, k := daemon(b, "")
	ctx := context.Background()
	pw, salt := []byte("correct horse battery staple"), []byte("0123456789abcdef")
	for _, pc := range []struct {
		name string
		p    pam.Params
	}{{"m=19MiB,t=2", pam.DefaultParams}, {"m=2MiB,t=1", pam.Params{Time: 1, Memory: 2048, Threads: 1}}} {
		p := pc.p
		b.Run(pc.name+"/native-x-crypto", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				argon2.IDKey(pw, salt, p.Time, p.Memory, uint8(p.Threads), 32)
			}
		})
		b.Run(pc.name+"/wasm-pal", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := k.Hash(ctx, p, pw, salt, 32); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzCheckerRequest sends arbitrary requests to the checking PAL: whatever the bytes, the PAL
// answers with one of its statuses (0, 2 bad request, 4 wrong, 5 locked) and never traps or
// runs out of memory. Seeds are well-formed requests of each op.
func FuzzCheckerRequest(f *testing.F) {
	_, k := daemon(f, "")
	ctx := context.Background()
	fast := pam.Params{Time: 1, Memory: 8, Threads: 1}
	db, err := k.Enrol(ctx, nil, "alice", []byte("pw"), fast, 3)
	if err != nil {
		f.Fatal(err)
	}
	req := func(op byte, user string, rest []byte) []byte {
		in := []byte{op}
		in = binary.LittleEndian.AppendUint32(in, uint32(len(db)))
		in = append(append(in, db...), byte(len(user)))
		return append(append(in, user...), rest...)
	}
	var hash []byte
	hash = append(hash, 'H')
	for _, v := range []uint32{1, 8, 1, 32, 2} {
		hash = binary.LittleEndian.AppendUint32(hash, v)
	}
	f.Add(append(hash, "pwsaltsalt"...))
	f.Add(req('C', "alice", []byte("pw")))
	f.Add(req('C', "bob", []byte("pw")))
	f.Add(req('U', "alice", nil))
	f.Add(req('D', "alice", nil))
	f.Add(req('E', "carol", append(make([]byte, 16), "pw"...)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		// Keep Argon2id cheap: a fuzzed H or E may ask for up to 32 MiB and 64 passes, which
		// would hit the call timeout; requests costing more than 4 MiB·pass are skipped.
		if costly(in) {
			return
		}
		res, err := k.C.Call(ctx, k.Handle, in)
		if err != nil {
			t.Fatalf("request %x: %v", in, err)
		}
		switch res.Status {
		case 0, 2, 4, 5:
		default:
			t.Fatalf("request %x: status %d", in, res.Status)
		}
	})
}

// costly reports whether an H or E request asks for Argon2id over more than 4 MiB·pass.
func costly(in []byte) bool {
	if len(in) == 0 {
		return false
	}
	p := in[1:]
	switch in[0] {
	case 'H':
	case 'E':
		if len(p) < 4 {
			return false
		}
		n := uint64(binary.LittleEndian.Uint32(p))
		if n+5 > uint64(len(p)) {
			return false
		}
		p = p[4+n:]
		if len(p) == 0 || int(p[0]) > len(p)-1 {
			return false
		}
		p = p[1+int(p[0]):]
	default:
		return false
	}
	if len(p) < 8 {
		return false
	}
	return uint64(binary.LittleEndian.Uint32(p))*uint64(binary.LittleEndian.Uint32(p[4:])) > 4096
}

// TestCheckerKVMReproduces rebuilds pal/checker.elf (the kvm engine's build) with
// internal/engine/kvm/cbuild's flags plus -s, as the go:generate line does, and checks the
// committed (embedded) image matches its source.
func TestCheckerKVMReproduces(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	img, err := cbuild.Build(context.Background(), t.TempDir(), "checker.elf", []string{"pal/checker.c", "pal/argon2.c"}, "-s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, pam.CheckerKVMImage) {
		t.Error("pal/checker.elf does not match its source: run go generate ./integrations/pam (Debian 12's gcc)")
	}
}

// TestCheckerKVM runs the shipped kvm build where /dev/kvm exists: a new state on a daemon
// offering kvm chooses it (DIR/engine records kvm), and its Argon2id matches x/crypto.
// Without /dev/kvm it skips: the build is checked by TestCheckerKVMReproduces.
func TestCheckerKVM(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm to run the kvm build of the checking PAL")
	}
	ctx := context.Background()
	d, err := apps.StartDaemon(ctx, apps.DaemonOptions{Engines: []string{"wasm", "kvm"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := pam.State{Dir: t.TempDir()}
	k, err := st.Ensure(ctx, c, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(st.Dir, "engine")); string(b) != "kvm\n" {
		t.Fatalf("engine recorded %q, want kvm", b)
	}
	p := pam.DefaultParams
	got, err := k.Hash(ctx, p, []byte("pw"), []byte("0123456789abcdef"), 32)
	if err != nil {
		t.Fatal(err)
	}
	if want := argon2.IDKey([]byte("pw"), []byte("0123456789abcdef"), p.Time, p.Memory, uint8(p.Threads), 32); !bytes.Equal(got, want) {
		t.Errorf("kvm PAL %x, x/crypto %x", got, want)
	}
	db, err := k.Enrol(ctx, nil, "alice", []byte("pw"), pam.Params{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Check(ctx, db, "alice", []byte("pw")); err != nil {
		t.Fatal(err)
	}
}

// TestShippedEngine checks which shipped build a state registers, on a daemon offering only
// wasm: a new state records wasm; a recorded build is kept, and asking for the other is
// refused (the database is sealed to the recorded one's measurement); a state with a
// database but no record (from before the kvm build shipped) is wasm's; a bad record or
// engine name is an error naming the rule.
func TestShippedEngine(t *testing.T) {
	ctx := context.Background()
	d, err := apps.StartDaemon(ctx, apps.DaemonOptions{Engines: []string{"wasm"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tt := range []struct {
		name           string
		files          map[string]string // state files before
		want, got, err string
	}{
		{name: "new state", got: "wasm"},
		{name: "new state, asked kvm", want: "kvm", got: "kvm"},
		{name: "recorded wasm", files: map[string]string{"engine": "wasm\n"}, got: "wasm"},
		{name: "recorded kvm", files: map[string]string{"engine": "kvm\n"}, got: "kvm"},
		{name: "recorded wasm, asked kvm", files: map[string]string{"engine": "wasm\n"}, want: "kvm", err: "sealed to the wasm build"},
		{name: "database without record", files: map[string]string{"passwd.db": "x"}, got: "wasm"},
		{name: "bad record", files: map[string]string{"engine": "sgx\n"}, err: `engine "sgx", want wasm or kvm`},
		{name: "bad engine", want: "sgx", err: "built for wasm and kvm"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := pam.State{Dir: t.TempDir()}
			for name, data := range tt.files {
				if err := st.Write(name, []byte(data)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := st.ShippedEngine(ctx, c, tt.want)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %q, %v; want an error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.got {
				t.Fatalf("got %q, %v; want %q", got, err, tt.got)
			}
			if b, _ := os.ReadFile(filepath.Join(st.Dir, "engine")); string(b) != got+"\n" {
				t.Errorf("recorded %q, want %q", b, got)
			}
		})
	}
}

// TestUnknownUserCostsFullCheck: a check for a user not in the database takes as long as a
// wrong password for one who is (the PAL runs Argon2id against a dummy entry with the
// database's parameters), so timing does not tell which names exist. With the default
// parameters the check is tens of milliseconds and a skipped hash would be ~1 ms: the test
// asks for at least half the known user's median.
func TestUnknownUserCostsFullCheck(t *testing.T) {
	_, k := daemon(t, "")
	ctx := context.Background()
	db, err := k.Enrol(ctx, nil, "alice", []byte("right"), pam.DefaultParams, 100)
	if err != nil {
		t.Fatal(err)
	}
	timeIt := func(user string) time.Duration {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			if _, err := k.Check(ctx, db, user, []byte("wrong")); !errors.Is(err, pam.ErrWrong) {
				t.Fatalf("%s: %v", user, err)
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	known, unknown := timeIt("alice"), timeIt("mallory")
	t.Logf("median wrong-password check: known user %v, unknown user %v", known, unknown)
	if unknown < known/2 {
		t.Errorf("an unknown user's check (%v) is much cheaper than a known user's (%v)", unknown, known)
	}
}
