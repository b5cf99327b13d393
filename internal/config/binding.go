package config

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// BindingAnchor is a VersionAnchor that also anchors who administers the state and what its
// history is, where whoever can write the state directory cannot change them (the TPM anchor,
// rot/tpm). A state opened with one:
//
//   - remembers it (the file STATE/anchored), and refuses afterwards to be opened without an
//     anchor of the same ID, so that a command that forgets the anchor cannot be fooled by a
//     rolled-back directory;
//   - refuses a pinned administrator key other than the one the anchor holds (Admin), which
//     the first apply binds (BindAdmin) and only an explicit replacement changes;
//   - folds every applied history entry's hash into the anchor's digest (ExtendHistory), so a
//     history rewritten consistently (chain and head recomputed) no longer matches it.
//
// docs/configurations.md §4 describes the protocol.
type BindingAnchor interface {
	VersionAnchor
	// ID names the anchor (for the TPM: its device kind and NV index); a state bound to it
	// records it.
	ID() string
	// Admin returns the administrator key id the anchor holds; ok is false while none is
	// bound.
	Admin() (kid KeyID, ok bool, err error)
	// BindAdmin makes kid the anchored administrator key if none is; it fails if another is.
	BindAdmin(kid KeyID) error
	// HistoryDigest returns the digest of every ExtendHistory so far: zero before the first,
	// then SHA-256(previous digest ‖ entry hash) for each (HistoryExtend).
	HistoryDigest() (Measurement, error)
	// ExtendHistory folds an entry hash into the digest. It cannot be undone.
	ExtendHistory(entry Measurement) error
	// CheckAdvance reports, changing nothing, whether Advance(to) would be refused (a step
	// too large for the TPM counter): the extension, the point of no return, comes first.
	CheckAdvance(to uint64) error
}

// Errors of a state bound to a BindingAnchor.
var (
	// ErrAnchorRequired: the state was bound to an anchor and is opened without it (or with
	// another).
	ErrAnchorRequired = errors.New("configuration state is anchored: open it with its anchor")
	// ErrAdminNotAnchored: the pinned administrator key is not the one the anchor holds.
	ErrAdminNotAnchored = errors.New("configuration state pins an administrator key the anchor does not hold")
	// ErrTampered: the state's history is not the one the anchor's digest records.
	ErrTampered = errors.New("configuration history does not match its anchor")
)

// HistoryExtend is the digest after folding entry into prev: SHA-256(prev ‖ entry), what
// TPM2_NV_Extend computes for an SHA-256 extend index.
func HistoryExtend(prev, entry Measurement) Measurement {
	return sha256.Sum256(append(prev[:len(prev):len(prev)], entry[:]...))
}

const fileAnchored = "anchored"

// anchorMark is STATE/anchored: which anchor the state is bound to, and the anchor's history
// digest before the last extension an apply made or is about to make (Prev), so that an apply
// interrupted after its extension can be recognised and completed.
type anchorMark struct {
	ID   string      `cbor:"1,keyasint"`
	Prev Measurement `cbor:"2,keyasint"`
}

// readMark returns the state's anchor mark, nil if it has none.
func readMark(dir string) (*anchorMark, error) {
	b, err := os.ReadFile(filepath.Join(dir, fileAnchored))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var m anchorMark
	if err := decMode.Unmarshal(b, &m); err != nil || m.ID == "" {
		return nil, fmt.Errorf("%w: %s is not an anchor mark (%v)", ErrHistory, fileAnchored, err)
	}
	return &m, nil
}

func writeMark(dir string, m anchorMark) error {
	b, err := encMode.Marshal(m)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, fileAnchored), b, 0o644)
}

// checkBinding is what OpenState checks of an anchored state: a state that was bound is opened
// with the same anchor, and that anchor holds the pinned administrator key if it holds one.
func checkBinding(dir string, kid KeyID, a VersionAnchor) error {
	mark, err := readMark(dir)
	if err != nil {
		return err
	}
	ba, ok := a.(BindingAnchor)
	if mark != nil && (!ok || ba.ID() != mark.ID) {
		with := "the state's own anchor file"
		if ok {
			with = ba.ID()
		}
		return fmt.Errorf("%w: state %s is anchored in %s, opened with %s (palisade: pass --tpm DEVICE)", ErrAnchorRequired, dir, mark.ID, with)
	}
	if !ok {
		return nil
	}
	bound, has, err := ba.Admin()
	if err != nil {
		return err
	}
	if has && bound != kid {
		return fmt.Errorf("%w: %s holds administrator key %s, state %s pins %s (replacing the administrator is 'palisade config replace-admin')",
			ErrAdminNotAnchored, ba.ID(), bound, dir, kid)
	}
	return nil
}
