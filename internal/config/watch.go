package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"github.com/palisade-project/palisade/internal/utpm"
)

// Watcher keeps the active configuration of a State in memory for a visor, and notices an
// apply made by another process: every call stats the active pointer, which Apply replaces by
// a rename, and reloads (verifying everything again) when it changed. A revocation therefore
// takes effect at the first check after the apply.
type Watcher struct {
	st    *State
	visor Measurement // the measurement of the visor that asks

	mu     sync.Mutex
	stamp  fileStamp
	active *Signed
}

type fileStamp struct {
	ino, size uint64
	mtime     int64
}

// NewWatcher watches st for the visor whose measurement is visor: the configuration's visors
// list decides whether that visor may serve anything under it (AuthorizePAL).
func NewWatcher(st *State, visor Measurement) *Watcher { return &Watcher{st: st, visor: visor} }

// ErrVisorNotListed: the active configuration does not list the measurement of the visor that
// asks, so it serves nothing that configuration decides. An empty visors list lists none.
var ErrVisorNotListed = errors.New("this visor's measurement is not listed in the active configuration's visors")

// Active returns the active configuration, reloading it if an apply happened since the last
// call; ErrNoActiveConfig if there is none.
func (w *Watcher) Active() (*Signed, error) {
	var fi syscall.Stat_t
	err := syscall.Stat(filepath.Join(w.st.dir, filePointer), &fi)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("state: %w", err)
	}
	stamp := fileStamp{ino: fi.Ino, size: uint64(fi.Size), mtime: fi.Mtim.Nano()}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active != nil && stamp == w.stamp {
		return w.active, nil
	}
	act, err := w.st.Active()
	if err != nil {
		w.active = nil
		return nil, err
	}
	// The stamp predates the load: a commit that raced it changes the stamp again, so the
	// next call reloads.
	w.stamp, w.active = stamp, act
	return act, nil
}

// AuthorizePAL reports whether a PAL with measurement m may act as the PAL name under the
// active configuration: that configuration is signed by signer, lists the watcher's visor and
// lists m under the PAL name. It is what the µTPM asks when a PAL unseals a blob sealed "to
// name N under signer K" (docs/configurations.md §8).
func (w *Watcher) AuthorizePAL(signer KeyID, name string, m Measurement) error {
	act, err := w.Active()
	if err != nil {
		return err
	}
	if act.KeyID != signer {
		return ErrWrongSigner
	}
	if !slices.Contains(act.Visors, w.visor) {
		return fmt.Errorf("visor %s, configuration version %d: %w", w.visor.Short(), act.Version, ErrVisorNotListed)
	}
	kind, _, ok := act.Lookup(name)
	if ok && kind != KindPAL {
		return fmt.Errorf("%q is an application, not a PAL: %w", name, ErrUnknownName)
	}
	return Check(act.Config, name, m)
}

// UTPMAuthorizer adapts AuthorizePAL to the µTPM (utpm.PlatformConfig.Authorize,
// utpm.Platform.SetAuthorizer): a PAL unseals a blob sealed to name N under signer K only if
// the active configuration is signed by K and lists the PAL's measurement under the PAL name
// N. Refusals (no active configuration, another signer, unknown name, measurement not listed)
// are returned as such; a state that cannot be read or verified is utpm.ErrInternal.
func (w *Watcher) UTPMAuthorizer() utpm.Authorizer {
	return func(signer utpm.Digest, name string, caller utpm.Digest) error {
		err := w.AuthorizePAL(KeyID(signer), name, Measurement(caller))
		if err == nil || isRefusal(err) {
			return err
		}
		return fmt.Errorf("%w: trusted configuration: %w", utpm.ErrInternal, err)
	}
}

func isRefusal(err error) bool {
	for _, r := range []error{ErrNoActiveConfig, ErrWrongSigner, ErrVisorNotListed, ErrUnknownName, ErrNotListed} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}
