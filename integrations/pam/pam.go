// Package pam is the host side of pam_palisade (docs/ssh.md): the password-checking PAL
// (pal/checker.c, Argon2id from RFC 9106 in C, shipped as pal/checker.wasm), its request
// encoding, and the state directory that `palisade passwd` writes and pam_palisade.so reads:
//
//	DIR/handle     the handle of the registered checking PAL ("pal-…")
//	DIR/passwd.db  the verifier database, sealed to the checking PAL's measurement
//	DIR/engine     which shipped build of the checking PAL the database belongs to: wasm or kvm
//
// Whoever rewrites passwd.db holds an exclusive flock(2) on DIR itself from reading it to
// storing the new one (State.Update here, pam_palisade.so likewise).
//
// The database exists in the clear only inside the PAL; the lockout counters are the PAL's
// µTPM monotonic counters (pal/checker.c states the protocol and the lockout rule).
package pam

//go:generate gcc -std=c11 -O2 -Wall -ffreestanding -fno-builtin -nostdlib -static -fno-pic -fno-pie -mno-red-zone -fno-stack-protector -fcf-protection=none -fno-asynchronous-unwind-tables -fno-exceptions -I../../sdk/c -s -o pal/checker.elf pal/checker.c pal/argon2.c ../../sdk/c/x86_64/entry.S ../../sdk/c/palisade.c ../../sdk/c/libc.c ../../sdk/c/sha256.c -no-pie -Wl,--build-id=none -Wl,-z,noexecstack -Wl,-z,norelro -Wl,-z,max-page-size=4096 -Wl,-T,../../sdk/c/x86_64/pal.ld -lgcc
//go:generate clang --target=wasm32 -nostdlib -ffreestanding -fno-builtin -O2 -Wall -Wextra -Werror -Wl,--no-entry -Wl,-z,stack-size=65536 -I ../../sdk/c -o pal/checker.wasm pal/checker.c pal/argon2.c ../../sdk/c/palisade.c ../../sdk/c/libc.c ../../sdk/c/sha256.c ../../sdk/c/wasm32/entry.c

import (
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/palisade-project/palisade/client"
)

// CheckerImage is the checking PAL for the wasm engine (pal/checker.wasm, rebuilt by go
// generate; TestCheckerReproduces checks it matches its source).
//
//go:embed pal/checker.wasm
var CheckerImage []byte

// CheckerKVMImage is the same checking PAL for the kvm engine: a native x86-64 ELF built from
// the same source with Debian 12's gcc and the flags of internal/engine/kvm/cbuild, stripped
// (-s: the symbol table would hold the random name of gcc's temporary object and make the
// build irreproducible; the engine reads no symbols). TestCheckerKVMReproduces checks it
// matches its source; go generate rebuilds it.
//
//go:embed pal/checker.elf
var CheckerKVMImage []byte

// Params are Argon2id's cost parameters (RFC 9106 names).
type Params struct {
	Time    uint32 // passes, t
	Memory  uint32 // KiB, m
	Threads uint32 // lanes, p
}

// DefaultParams are OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
var DefaultParams = Params{Time: 2, Memory: 19 * 1024, Threads: 1}

// Limits of the checking PAL.
const (
	MaxMemoryKiB = 32 * 1024
	MaxThreads   = 16
	MaxTime      = 64
	MaxUser      = 255
	MaxPassword  = 4096
	// DefaultMaxFailures is the lockout threshold of a new database.
	DefaultMaxFailures = 5
)

// Check checks p against the PAL's limits.
func (p Params) Check() error {
	if p.Time < 1 || p.Time > MaxTime || p.Threads < 1 || p.Threads > MaxThreads || p.Memory < 8*p.Threads || p.Memory > MaxMemoryKiB {
		return fmt.Errorf("Argon2id parameters t=%d m=%d p=%d: want 1 ≤ t ≤ %d, 1 ≤ p ≤ %d, 8p ≤ m ≤ %d KiB", p.Time, p.Memory, p.Threads, MaxTime, MaxThreads, MaxMemoryKiB)
	}
	return nil
}

// Errors of the checks.
var (
	ErrWrong  = errors.New("pam: wrong password or unknown user")
	ErrLocked = errors.New("pam: the user is locked out after too many failures")
)

// Status codes of the checking PAL.
const (
	statusWrong  = 4
	statusLocked = 5
)

// Checker calls a registered checking PAL.
type Checker struct {
	C      *client.Client
	Handle string
}

func (k Checker) call(ctx context.Context, in []byte) ([]byte, int32, error) {
	res, err := k.C.Call(ctx, k.Handle, in)
	if err != nil {
		return nil, 0, err
	}
	return res.Output, res.Status, nil
}

// Hash returns Argon2id(password, salt) computed in the PAL (a tag of tagLen bytes).
func (k Checker) Hash(ctx context.Context, p Params, password, salt []byte, tagLen uint32) ([]byte, error) {
	in := []byte{'H'}
	for _, v := range []uint32{p.Time, p.Memory, p.Threads, tagLen, uint32(len(password))} {
		in = binary.LittleEndian.AppendUint32(in, v)
	}
	in = append(append(in, password...), salt...)
	out, st, err := k.call(ctx, in)
	if err != nil {
		return nil, err
	}
	if st != 0 {
		return nil, fmt.Errorf("pam: checking PAL: status %d: %s", st, out)
	}
	return out, nil
}

func request(op byte, db []byte, user string) ([]byte, error) {
	if user == "" || len(user) > MaxUser {
		return nil, fmt.Errorf("pam: user name of %d bytes (1..%d)", len(user), MaxUser)
	}
	in := []byte{op}
	in = binary.LittleEndian.AppendUint32(in, uint32(len(db)))
	in = append(in, db...)
	in = append(in, byte(len(user)))
	return append(in, user...), nil
}

// Enrol sets user's password in db (nil: a new database) and returns the new sealed database.
// A zero p keeps the database's parameters; maxFailures 0 keeps its threshold.
func (k Checker) Enrol(ctx context.Context, db []byte, user string, password []byte, p Params, maxFailures uint32) ([]byte, error) {
	if p != (Params{}) {
		if err := p.Check(); err != nil {
			return nil, err
		}
	}
	if len(password) > MaxPassword {
		return nil, fmt.Errorf("pam: password of %d bytes (at most %d)", len(password), MaxPassword)
	}
	in, err := request('E', db, user)
	if err != nil {
		return nil, err
	}
	for _, v := range []uint32{p.Time, p.Memory, p.Threads, maxFailures} {
		in = binary.LittleEndian.AppendUint32(in, v)
	}
	in = append(in, password...)
	return k.sealedResult(ctx, in)
}

func (k Checker) sealedResult(ctx context.Context, in []byte) ([]byte, error) {
	out, st, err := k.call(ctx, in)
	if err != nil {
		return nil, err
	}
	if st != 0 {
		return nil, fmt.Errorf("pam: checking PAL: status %d: %s", st, out)
	}
	return out, nil
}

// Unlock lifts user's lockout and returns the new sealed database.
func (k Checker) Unlock(ctx context.Context, db []byte, user string) ([]byte, error) {
	in, err := request('U', db, user)
	if err != nil {
		return nil, err
	}
	return k.sealedResult(ctx, in)
}

// Delete removes user and returns the new sealed database.
func (k Checker) Delete(ctx context.Context, db []byte, user string) ([]byte, error) {
	in, err := request('D', db, user)
	if err != nil {
		return nil, err
	}
	return k.sealedResult(ctx, in)
}

// Check checks user's password: nil if right (with newDB non-nil when the database must be
// replaced, the failure baseline having moved), ErrWrong or ErrLocked.
func (k Checker) Check(ctx context.Context, db []byte, user string, password []byte) (newDB []byte, err error) {
	in, err := request('C', db, user)
	if err != nil {
		return nil, err
	}
	out, st, err := k.call(ctx, append(in, password...))
	switch {
	case err != nil:
		return nil, err
	case st == 0:
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	case st == statusWrong:
		return nil, ErrWrong
	case st == statusLocked:
		return nil, ErrLocked
	}
	return nil, fmt.Errorf("pam: checking PAL: status %d: %s", st, out)
}

// State is pam_palisade's state directory.
type State struct{ Dir string }

// DefaultDir is the state directory of pam_palisade without dir= in its pam.d line.
const DefaultDir = "/var/lib/palisade/pam"

func (s State) path(name string) string { return filepath.Join(s.Dir, name) }

// Handle reads the registered PAL's handle ("" if none yet).
func (s State) Handle() (string, error) {
	b, err := os.ReadFile(s.path("handle"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(b)), err
}

// DB reads the sealed database (nil if none yet). An empty file is an error, not "no
// database": no sealed database is empty, and the checking PAL takes a database of length 0
// for a new one, so enrolling into a truncated file would silently start a database holding
// one user, with the default parameters and threshold.
func (s State) DB() ([]byte, error) {
	b, err := os.ReadFile(s.path("passwd.db"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err == nil && len(b) == 0 {
		return nil, fmt.Errorf("pam: %s is empty, not a sealed database (truncated?): restore it, or remove it to start a new database and enrol every user again", s.path("passwd.db"))
	}
	return b, err
}

// Update replaces the sealed database with f(the current one), holding the state's lock from
// the read to the write: f gets the database (nil if none yet) and returns the new one (nil:
// nothing to store). Every read-modify-write of passwd.db must go through the lock, which
// pam_palisade.so takes too: without it two writers each store a database derived from the
// same old one and one change is lost (an enrolment, a deletion, an unlock, a failure
// baseline moved by a success).
func (s State) Update(f func(db []byte) ([]byte, error)) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	db, err := s.DB()
	if err != nil {
		return err
	}
	if db, err = f(db); err != nil || db == nil {
		return err
	}
	return s.Write("passwd.db", db)
}

// lock takes the state's lock: an exclusive flock(2) on the state directory itself (created
// 0700 if missing), the lock pam_palisade.so takes. It waits as long as the holder takes; the
// holders are logins and `palisade passwd` runs, each holding it for one call of the checking
// PAL.
func (s State) lock() (unlock func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	d, err := os.Open(s.Dir)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(d.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("pam: lock %s: %w", s.Dir, err)
	}
	return func() { d.Close() }, nil
}

// Write replaces a file of the state atomically and durably (0600 in a 0700 directory): the
// data and then the directory entry are synced, so after a crash the file is the old one or
// the new one, and a new one stays.
func (s State) Write(name string, data []byte) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, "."+name+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path(name)); err != nil {
		return err
	}
	d, err := os.Open(s.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Ensure returns a Checker on the registered checking PAL, registering one if the state has
// no handle or the daemon no longer has it: image on engine ("" by image kind) if image is
// non-nil, else a shipped build (ShippedEngine chooses which).
func (s State) Ensure(ctx context.Context, c *client.Client, image []byte, engine string) (Checker, error) {
	h, err := s.Handle()
	if err != nil {
		return Checker{}, err
	}
	if h != "" {
		pals, err := c.List(ctx)
		if err != nil {
			return Checker{}, err
		}
		for _, p := range pals {
			if p.Handle == h {
				return Checker{C: c, Handle: h}, nil
			}
		}
	}
	if image == nil {
		if engine, err = s.ShippedEngine(ctx, c, engine); err != nil {
			return Checker{}, err
		}
		image = map[string][]byte{"wasm": CheckerImage, "kvm": CheckerKVMImage}[engine]
	}
	info, err := c.Register(ctx, image, client.RegisterOptions{Name: "pam_palisade", Engine: engine, Limits: client.Limits{MemoryMiB: 64}})
	if err != nil {
		return Checker{}, fmt.Errorf("register the checking PAL: %w", err)
	}
	if err := s.Write("handle", []byte(info.Handle+"\n")); err != nil {
		return Checker{}, err
	}
	return Checker{C: c, Handle: info.Handle}, nil
}

// ShippedEngine chooses the shipped build of the checking PAL to register: want if given
// ("wasm" or "kvm"); else the one the state recorded (DIR/engine); else wasm for a state
// that already has a database but no record (written before the kvm build shipped); else,
// for a new state, kvm where the daemon offers it (hardware isolation, native speed) and wasm
// otherwise. The choice is recorded, because the database is sealed to the PAL's measurement
// and the two builds measure differently: a database sealed by one cannot be opened by the
// other, so a state must keep its build when palisaded restarts with other engines.
func (s State) ShippedEngine(ctx context.Context, c *client.Client, want string) (string, error) {
	if want != "" && want != "wasm" && want != "kvm" {
		return "", fmt.Errorf("pam: engine %q: the shipped checking PAL is built for wasm and kvm", want)
	}
	b, err := os.ReadFile(s.path("engine"))
	recorded := strings.TrimSpace(string(b))
	switch {
	case err == nil && recorded != "wasm" && recorded != "kvm":
		return "", fmt.Errorf("pam: %s: engine %q, want wasm or kvm", s.path("engine"), recorded)
	case err == nil && want != "" && want != recorded:
		return "", fmt.Errorf("pam: the database in %s is sealed to the %s build of the checking PAL, not %s", s.Dir, recorded, want)
	case err == nil:
		return recorded, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	engine := want
	if engine == "" {
		db, err := s.DB()
		if err != nil {
			return "", err
		}
		engine = "wasm"
		if db == nil {
			h, err := c.Health(ctx)
			if err != nil {
				return "", err
			}
			if slices.Contains(h.Engines, "kvm") {
				engine = "kvm"
			}
		}
	}
	return engine, s.Write("engine", []byte(engine+"\n"))
}
