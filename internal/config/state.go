package config

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/palisade-project/palisade/internal/atomicfile"
)

// VersionAnchor holds the highest configuration version ever applied, somewhere an attacker
// who can rewrite the state directory cannot roll back. Advance never lowers the value.
//
// FileAnchor is the development anchor: a file, so it only detects a rollback of the state
// that leaves the file alone. The TPM root of trust provides an anchor backed by a TPM NV
// counter (rot/tpm), which cannot be rolled back; pass it in Options.Anchor.
type VersionAnchor interface {
	Read() (uint64, error)
	Advance(to uint64) error
}

// ErrRollback is returned for a configuration version that is not newer than the active one
// (or than the anchor), and for a state that is older than its anchor.
var ErrRollback = errors.New("configuration rollback refused")

// FileAnchor is a VersionAnchor in a file (decimal version), replaced atomically.
type FileAnchor struct{ Path string }

func (a FileAnchor) Read() (uint64, error) {
	b, err := os.ReadFile(a.Path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("anchor: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("anchor %s: %w", a.Path, err)
	}
	return v, nil
}

func (a FileAnchor) Advance(to uint64) error {
	cur, err := a.Read()
	if err != nil {
		return err
	}
	if to < cur {
		return fmt.Errorf("anchor: %w: advance to %d below %d", ErrRollback, to, cur)
	}
	if to == cur {
		return nil
	}
	return writeFileAtomic(a.Path, []byte(strconv.FormatUint(to, 10)+"\n"), 0o600)
}

// Files of a state directory (docs/configurations.md §4).
const (
	fileAdminKey = "admin.pub"
	fileAnchor   = "anchor"
	fileHistory  = "history"
	filePointer  = "active"
	fileLock     = "lock"
	dirConfigs   = "configs"
	dirSecrets   = "secrets"
)

// Pointer is the commit record of a state: which configuration is active and which history
// prefix belongs to it. It is replaced by one rename, the commit point of Apply.
type Pointer struct {
	Seq        uint64      `cbor:"1,keyasint"` // = the active history entry's Seq
	Version    uint64      `cbor:"2,keyasint"`
	Config     Measurement `cbor:"3,keyasint"` // hash of the active configuration's payload
	Head       Measurement `cbor:"4,keyasint"` // hash of the last history entry
	HistoryLen uint64      `cbor:"5,keyasint"` // bytes of the history file that are committed
	// AnchorPrev is, for a state bound to a BindingAnchor, the anchor's history digest
	// before Head was folded into it: the anchor's digest is HistoryExtend(AnchorPrev, Head).
	AnchorPrev Measurement `cbor:"6,keyasint"`
}

// Options of a State.
type Options struct {
	// Anchor defaults to a FileAnchor in the state directory.
	Anchor VersionAnchor
	// Now defaults to time.Now; it stamps history entries.
	Now func() time.Time
}

// State is a state directory: the pinned administrator key, the active configuration, its
// history and the version anchor. Every operation takes an exclusive lock on the directory,
// so CLI invocations and a daemon can share it.
type State struct {
	dir    string
	admin  crypto.PublicKey
	kid    KeyID
	anchor VersionAnchor
	now    func() time.Time
}

// InitState creates dir (0700) and pins the administrator public key in it. Pinning the same
// key again is a no-op; a different key is refused (rotating the administrator key is not
// supported: it would let whoever writes the directory replace the admin).
func InitState(dir string, admin crypto.PublicKey) error {
	pem, err := MarshalPublicKey(admin)
	if err != nil {
		return err
	}
	if _, err := PublicKeyID(admin); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, dirConfigs), 0o700); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	// Under the lock, like every write to the directory, so that an apply that removes
	// temporary files never removes this one.
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	p := filepath.Join(dir, fileAdminKey)
	old, err := os.ReadFile(p)
	switch {
	case err == nil && bytes.Equal(old, pem):
		return nil
	case err == nil:
		pinned := "another key"
		if pub, perr := ParsePublicKey(old); perr == nil {
			k, _ := PublicKeyID(pub)
			pinned = "key " + k.String()
		}
		kid, _ := PublicKeyID(admin)
		return fmt.Errorf("state %s pins administrator %s, not %s: a state accepts the one key it pins (a new administrator starts a new state directory: palisade config replace-admin)",
			dir, pinned, kid)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("state: %w", err)
	}
	return writeFileAtomic(p, pem, 0o644)
}

// OpenState opens a state directory made by InitState.
func OpenState(dir string, o Options) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, fileAdminKey))
	if err != nil {
		return nil, fmt.Errorf("state %s: no pinned administrator key (pin one: 'palisade config init --state-dir DIR', or 'palisade config apply --admin-pub ADMIN.pub' the first time): %w", dir, err)
	}
	pub, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", dir, err)
	}
	kid, _ := PublicKeyID(pub)
	s := &State{dir: dir, admin: pub, kid: kid, anchor: o.Anchor, now: o.Now}
	if s.anchor == nil {
		s.anchor = FileAnchor{Path: filepath.Join(dir, fileAnchor)}
	}
	if err := checkBinding(dir, kid, s.anchor); err != nil {
		return nil, err
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Dir returns the state directory.
func (s *State) Dir() string { return s.dir }

// AdminKey returns the pinned administrator key and its id.
func (s *State) AdminKey() (crypto.PublicKey, KeyID) { return s.admin, s.kid }

// SecretsDir is where a SecretStore of this state keeps its blobs.
func (s *State) SecretsDir() string { return filepath.Join(s.dir, dirSecrets) }

func (s *State) lock() (func(), error) { return lockDir(s.dir) }

// lockDir takes the exclusive lock of a state directory; call the function it returns to
// release it.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, fileLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("state lock: %w", err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// snapshot is what a load found: the active configuration (nil if none), the pointer and the
// committed history.
type snapshot struct {
	ptr     Pointer
	active  *Signed
	history []Entry
}

// Active returns the active configuration, or ErrNoActiveConfig. It completes an apply that
// was interrupted after its point of no return (see Apply).
func (s *State) Active() (*Signed, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	snap, err := s.load()
	if err != nil {
		return nil, err
	}
	if snap.active == nil {
		return nil, ErrNoActiveConfig
	}
	return snap.active, nil
}

// Head returns the commit record (sequence, version, configuration hash, history head) to
// include in evidence; Seq is 0 when nothing was ever applied.
func (s *State) Head() (Pointer, error) {
	unlock, err := s.lock()
	if err != nil {
		return Pointer{}, err
	}
	defer unlock()
	snap, err := s.load()
	return snap.ptr, err
}

// Statement is what a visor's evidence says of its trusted configuration
// (attest.ConfigHead): the commit record, who signed the active configuration, and whether
// that configuration lists the visor.
type Statement struct {
	Pointer
	Signer      KeyID
	VisorListed bool
}

// Statement returns the commit record with the administrator key id and whether the active
// configuration lists visor; Seq is 0 (and VisorListed false) when nothing was ever applied.
func (s *State) Statement(visor Measurement) (Statement, error) {
	unlock, err := s.lock()
	if err != nil {
		return Statement{}, err
	}
	defer unlock()
	snap, err := s.load()
	if err != nil {
		return Statement{}, err
	}
	st := Statement{Pointer: snap.ptr, Signer: s.kid}
	if snap.active != nil {
		st.VisorListed = slices.Contains(snap.active.Visors, visor)
	}
	return st, nil
}

// History returns the verified committed history.
func (s *State) History() ([]Entry, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	snap, err := s.load()
	return snap.history, err
}

// load reads and checks the committed state, rolls an interrupted apply forward when the
// anchor shows it passed its point of no return, and repairs an anchor that lags behind.
// The caller holds the lock.
func (s *State) load() (snapshot, error) {
	var snap snapshot
	pb, err := os.ReadFile(filepath.Join(s.dir, filePointer))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return snap, fmt.Errorf("state: %w", err)
	default:
		if err := decMode.Unmarshal(pb, &snap.ptr); err != nil {
			return snap, fmt.Errorf("%w: active pointer: %v", ErrHistory, err)
		}
	}
	hist, err := os.ReadFile(filepath.Join(s.dir, fileHistory))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return snap, fmt.Errorf("state: %w", err)
	}
	if snap.ptr.HistoryLen > uint64(len(hist)) {
		return snap, fmt.Errorf("%w: pointer commits %d bytes, file has %d", ErrHistory, snap.ptr.HistoryLen, len(hist))
	}
	committed, pending := hist[:snap.ptr.HistoryLen], hist[snap.ptr.HistoryLen:]
	if snap.history, err = DecodeHistory(committed); err != nil {
		return snap, err
	}
	if err := s.checkHead(&snap); err != nil {
		return snap, err
	}

	anchor, err := s.anchor.Read()
	if err != nil {
		return snap, err
	}
	if ba, ok := s.anchor.(BindingAnchor); ok {
		return s.loadBound(ba, snap, pending, anchor)
	}
	// Bound by another process (an apply with the TPM) since this State was opened: from now
	// on it is read only with that anchor.
	if err := checkBinding(s.dir, s.kid, s.anchor); err != nil {
		return snap, err
	}
	switch {
	case anchor > snap.ptr.Version:
		// Apply advances the anchor only after the new configuration and its history entry
		// are durable; a pending entry at or above the anchor is such an apply, interrupted
		// before its pointer was written (above: during the advance, for an anchor that
		// advances step by step, such as a TPM counter). Anything else is a state older than
		// the anchor.
		next, err := s.pendingEntry(snap, pending, anchor)
		if err != nil && snap.ptr.Seq == 0 {
			// A new (or wiped) state under an anchor that kept its value, such as a TPM NV
			// counter: nothing is active, and Apply accepts only versions above the anchor.
			return snap, nil
		}
		if err != nil {
			return snap, fmt.Errorf("%w: the state is at version %d but the version anchor is at %d, so the state directory is older than the last apply (restored from a copy?): %v",
				ErrRollback, snap.ptr.Version, anchor, err)
		}
		return s.completeApply(snap, next)
	case anchor < snap.ptr.Version:
		if err := s.anchor.Advance(snap.ptr.Version); err != nil {
			return snap, err
		}
	}
	return snap, nil
}

// completeApply completes, at load, an apply of next interrupted before its pointer was
// written: the anchor advances to next's version, then next is committed. On failure the
// state stays at snap.
func (s *State) completeApply(snap, next snapshot) (snapshot, error) {
	if err := s.anchor.Advance(next.ptr.Version); err != nil {
		return snap, err
	}
	if err := s.commit(next.ptr); err != nil {
		return snap, err
	}
	return next, nil
}

// loadBound is the end of load for a state under a BindingAnchor: besides the version, the
// anchor's history digest must be that of the committed head (or of a pending entry, whose
// apply is then completed).
func (s *State) loadBound(ba BindingAnchor, snap snapshot, pending []byte, anchor uint64) (snapshot, error) {
	digest, err := ba.HistoryDigest()
	if err != nil {
		return snap, err
	}
	mark, err := readMark(s.dir)
	if err != nil {
		return snap, err
	}
	// An apply interrupted after its extension (its point of no return): the pending entry
	// is what the digest folded in last.
	if mark != nil && len(pending) > 0 {
		if next, err := s.pendingEntry(snap, pending, snap.ptr.Version+1); err == nil &&
			digest == HistoryExtend(mark.Prev, next.ptr.Head) {
			next.ptr.AnchorPrev = mark.Prev
			return s.completeApply(snap, next)
		}
	}
	var matches bool
	switch {
	case snap.ptr.Seq == 0:
		// Nothing committed (new, or wiped under an anchor that kept its digest): nothing to
		// compare, and Apply accepts only versions above the anchor.
		matches = true
	case mark == nil:
		// Never bound: acceptable only while the anchor has never recorded a history (a state
		// made before its anchor was); the next apply binds it. An anchor that has recorded
		// one belongs to another history, this directory's or not.
		matches = digest == Measurement{}
	default:
		matches = digest == HistoryExtend(snap.ptr.AnchorPrev, snap.ptr.Head)
	}
	switch {
	case anchor > snap.ptr.Version && snap.ptr.Seq == 0:
		return snap, nil
	case anchor > snap.ptr.Version && !matches:
		return snap, fmt.Errorf("%w: the state is at version %d but the version anchor %s is at %d, so the state directory is older than the last apply (restored from a copy?)",
			ErrRollback, snap.ptr.Version, ba.ID(), anchor)
	case !matches:
		return snap, fmt.Errorf("%w: the history of state %s (head %s, version %d) is not the one %s recorded: it was rewritten or replaced",
			ErrTampered, s.dir, snap.ptr.Head.Short(), snap.ptr.Version, ba.ID())
	case anchor > snap.ptr.Version:
		// The counter moved without the digest (an apply by an earlier Palisade that was
		// interrupted during its advance): complete the pending entry at or above it, else
		// this is a state older than its anchor.
		next, err := s.pendingEntry(snap, pending, anchor)
		if err != nil {
			return snap, fmt.Errorf("%w: the state is at version %d but the version anchor %s is at %d, so the state directory is older than the last apply (restored from a copy?): %v",
				ErrRollback, snap.ptr.Version, ba.ID(), anchor, err)
		}
		if next.ptr.AnchorPrev, err = s.extend(ba, next.ptr.Head); err != nil {
			return snap, err
		}
		return s.completeApply(snap, next)
	case anchor < snap.ptr.Version:
		if err := s.anchor.Advance(snap.ptr.Version); err != nil {
			return snap, err
		}
	}
	return snap, nil
}

// extend records the anchor's digest in the state's mark, durably, then folds head into the
// anchor, and returns the digest it extended (the new pointer's AnchorPrev). A crash between
// the two leaves a mark whose Prev the next load recognises.
func (s *State) extend(ba BindingAnchor, head Measurement) (Measurement, error) {
	prev, err := ba.HistoryDigest()
	if err != nil {
		return prev, err
	}
	if err := writeMark(s.dir, anchorMark{ID: ba.ID(), Prev: prev}); err != nil {
		return prev, err
	}
	crashPoint("anchor-marked")
	if err := ba.ExtendHistory(head); err != nil {
		return prev, err
	}
	crashPoint("history-anchored")
	return prev, nil
}

// checkHead verifies that the pointer, the last committed history entry and the stored
// configuration agree, and loads that configuration.
func (s *State) checkHead(snap *snapshot) error {
	p := snap.ptr
	if len(snap.history) == 0 {
		if p != (Pointer{}) {
			return fmt.Errorf("%w: pointer without history", ErrHistory)
		}
		return nil
	}
	last := snap.history[len(snap.history)-1]
	if last.Hash() != p.Head || last.Seq != p.Seq || last.Version != p.Version || last.Config != p.Config {
		// Nothing vouches for the last entry any more: it is not reported as part of the
		// verified history.
		snap.history = snap.history[:len(snap.history)-1]
		return fmt.Errorf("%w: active pointer does not match the last history entry (entry %d or the pointer was modified)", ErrHistory, last.Seq)
	}
	act, err := s.readConfig(p.Config, p.Version)
	if err != nil {
		return err
	}
	snap.active = act
	return nil
}

func (s *State) readConfig(h Measurement, version uint64) (*Signed, error) {
	raw, err := os.ReadFile(filepath.Join(s.dir, dirConfigs, h.String()+".cose"))
	if err != nil {
		return nil, fmt.Errorf("state: configuration %s: %w", h.Short(), err)
	}
	sc, err := Verify(raw, s.admin)
	if err != nil {
		return nil, fmt.Errorf("state: configuration %s: %w", h.Short(), err)
	}
	if sc.Hash != h || sc.Version != version {
		return nil, fmt.Errorf("%w: stored configuration %s does not match its history entry", ErrHistory, h.Short())
	}
	return sc, nil
}

// pendingEntry checks that pending starts with a complete entry that extends snap at a
// version of at least want (the anchor) and whose configuration is stored and verifies, and
// returns the state it commits.
func (s *State) pendingEntry(snap snapshot, pending []byte, want uint64) (snapshot, error) {
	if len(pending) == 0 {
		return snap, errors.New("no interrupted apply to complete follows its history")
	}
	e, n, err := decodeRecord(pending)
	if err != nil {
		return snap, fmt.Errorf("what follows its history is not an interrupted apply: %w", err)
	}
	var prev Measurement
	if len(snap.history) > 0 {
		prev = snap.ptr.Head
	}
	if err := checkLink(snap.history, prev, e); err != nil {
		return snap, err
	}
	if e.Version < want {
		return snap, fmt.Errorf("the interrupted apply that follows its history is of version %d, below the anchor", e.Version)
	}
	act, err := s.readConfig(e.Config, e.Version)
	if err != nil {
		return snap, err
	}
	next := snapshot{
		ptr: Pointer{Seq: e.Seq, Version: e.Version, Config: e.Config, Head: e.Hash(),
			HistoryLen: snap.ptr.HistoryLen + uint64(n)},
		active:  act,
		history: append(snap.history, e),
	}
	return next, nil
}

// Apply makes the signed configuration raw active if it verifies against the pinned key and
// its version is greater than the active one's and the anchor's. It returns the new history
// entry.
//
// Steps, each durable before the next: (1) store the configuration under its hash; (2)
// append the history entry (after dropping any uncommitted tail); (3) advance the anchor,
// the point of no return; (4) write the pointer to a temporary file and rename it over the
// active pointer. A crash before (3) leaves the old configuration active; after (3), the
// next load finds the entry that matches the anchor and commits it.
func (s *State) Apply(raw []byte) (*Signed, Entry, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, Entry{}, err
	}
	defer unlock()
	snap, err := s.load()
	if err != nil {
		return nil, Entry{}, err
	}
	sc, err := Verify(raw, s.admin)
	if err != nil {
		return nil, Entry{}, err
	}
	if err := s.removeTemps(); err != nil {
		return nil, Entry{}, err
	}
	anchor, err := s.anchor.Read()
	if err != nil {
		return nil, Entry{}, err
	}
	if floor := max(anchor, snap.ptr.Version); sc.Version <= floor {
		what := fmt.Sprintf("the active version %d", floor)
		if anchor > snap.ptr.Version {
			what = fmt.Sprintf("version %d, the highest the version anchor has seen applied", anchor)
		}
		return nil, Entry{}, fmt.Errorf("%w: version %d is not greater than %s (every apply needs a version above all versions applied before)",
			ErrRollback, sc.Version, what)
	}
	// An advance the anchor would refuse is refused before anything is written: under a
	// binding anchor the history extension, which comes first, cannot be undone.
	if ba, ok := s.anchor.(BindingAnchor); ok {
		if err := ba.CheckAdvance(sc.Version); err != nil {
			return nil, Entry{}, fmt.Errorf("apply: %w", err)
		}
	}
	var old *Config
	if snap.active != nil {
		old = snap.active.Config
	}
	e := Entry{
		Seq: snap.ptr.Seq + 1, Version: sc.Version, Config: sc.Hash, Prev: snap.ptr.Head,
		Time: s.now().Unix(), Changes: Diff(old, sc.Config).Lines(),
	}
	rec, err := encodeRecord(e)
	if err != nil {
		return nil, Entry{}, err
	}

	// (1) the configuration, content-addressed, so a half-done apply never changes a file
	// that the active pointer refers to.
	if err := writeFileAtomic(filepath.Join(s.dir, dirConfigs, sc.Hash.String()+".cose"), sc.Raw, 0o644); err != nil {
		return nil, Entry{}, fmt.Errorf("apply: %w", err)
	}
	crashPoint("config-written")

	// (2) the history entry.
	if err := s.appendHistory(snap.ptr.HistoryLen, rec); err != nil {
		return nil, Entry{}, fmt.Errorf("apply: %w", err)
	}
	crashPoint("history-appended")

	// (3) the point of no return: under a binding anchor, the administrator key is bound
	// (if it was not) and the entry folded into the anchor's history digest before the
	// version advances; otherwise the version advance is the point of no return.
	var anchorPrev Measurement
	if ba, ok := s.anchor.(BindingAnchor); ok {
		if _, has, err := ba.Admin(); err != nil {
			return nil, Entry{}, fmt.Errorf("apply: %w", err)
		} else if !has {
			if err := ba.BindAdmin(s.kid); err != nil {
				return nil, Entry{}, fmt.Errorf("apply: %w", err)
			}
		}
		if anchorPrev, err = s.extend(ba, e.Hash()); err != nil {
			return nil, Entry{}, fmt.Errorf("apply: %w", err)
		}
	}
	if err := s.anchor.Advance(sc.Version); err != nil {
		return nil, Entry{}, fmt.Errorf("apply: %w", err)
	}
	crashPoint("anchor-advanced")

	// (4) commit.
	ptr := Pointer{Seq: e.Seq, Version: e.Version, Config: e.Config, Head: e.Hash(),
		HistoryLen: snap.ptr.HistoryLen + uint64(len(rec)), AnchorPrev: anchorPrev}
	if err := s.commit(ptr); err != nil {
		return nil, Entry{}, fmt.Errorf("apply: %w", err)
	}
	crashPoint("committed")
	return sc, e, nil
}

// removeTemps deletes the temporary files that an apply killed before one of its renames left
// in the state directory and configs/. Every file there is written under the lock, which the
// caller holds, so none of them belongs to a write in progress. (secrets/ is not cleaned: a
// SecretStore writes there without the state's lock.)
func (s *State) removeTemps() error {
	for _, d := range []string{s.dir, filepath.Join(s.dir, dirConfigs)} {
		stale, err := filepath.Glob(filepath.Join(d, atomicfile.TempPattern))
		if err != nil {
			return err
		}
		for _, f := range stale {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("apply: remove a temporary file an interrupted apply left: %w", err)
			}
		}
	}
	return nil
}

func (s *State) appendHistory(committed uint64, rec []byte) error {
	f, err := os.OpenFile(filepath.Join(s.dir, fileHistory), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	// Drop what an interrupted apply left after the committed prefix.
	if err := f.Truncate(int64(committed)); err != nil {
		return err
	}
	if _, err := f.Seek(int64(committed), io.SeekStart); err != nil {
		return err
	}
	half := len(rec) / 2
	if _, err := f.Write(rec[:half]); err != nil {
		return err
	}
	crashPoint("history-torn") // a kill here leaves a torn record behind the committed prefix
	if _, err := f.Write(rec[half:]); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

func (s *State) commit(p Pointer) error {
	b, err := encMode.Marshal(p)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, filePointer), b, 0o644)
}

// writeFileAtomic is atomicfile.WriteFile with a crash point between the durable temporary
// file and the rename, for the crash tests.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteFileHook(path, data, perm, func() { crashPoint("temp-written:" + filepath.Base(path)) })
}

// crashHook is set only by tests that run Apply in a child process and kill it at a step.
var crashHook func(step string)

func crashPoint(step string) {
	if crashHook != nil {
		crashHook(step)
	}
}
