package sshpass

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/integrations/pam"
)

// ErrLocked means the checking PAL refused to check: the user has had too many failed checks
// since their last success (the lockout of pam_palisade, lifted by `palisade passwd --unlock`
// or by the Unlock method).
var ErrLocked = errors.New("sshpass: too many failed attempts: the user is locked out until unlocked")

// PassDB is a Checker backed by pam_palisade's checking PAL (integrations/pam/pal/checker.c,
// the request format pam_palisade.so sends) and its state directory: the same handle and
// sealed database files that `palisade passwd` writes and pam_palisade.so reads, so the demo
// server and sshd with pam_palisade can share one database. Like pam_palisade.so, it reads
// the database file at every request, so changes made by `palisade passwd` (a new user, an
// unlock) apply at once, and holds the state's lock (pam.State.Update) from that read to
// storing a new database, so no writer undoes another's change; the PAL's handle is read
// once, when opened.
type PassDB struct {
	st pam.State
	k  pam.Checker
	// registered is whether OpenPassDB registered the PAL (Close unregisters only then).
	registered bool

	mu sync.Mutex // serialises this process's requests (the state's lock serialises processes)
}

// OpenPassDB opens the state directory dir as `palisade passwd` does: it reuses the checking
// PAL named by dir/handle if the daemon still has it, else registers image (the shipped
// pam.CheckerImage if nil) on engine ("" chooses by the image's kind) and records its handle.
func OpenPassDB(ctx context.Context, c *client.Client, dir string, image []byte, engine string) (*PassDB, error) {
	st := pam.State{Dir: dir}
	old, err := st.Handle()
	if err != nil {
		return nil, err
	}
	k, err := st.Ensure(ctx, c, image, engine)
	if err != nil {
		return nil, err
	}
	return &PassDB{st: st, k: k, registered: k.Handle != old}, nil
}

// Handle is the checking PAL's handle.
func (p *PassDB) Handle() string { return p.k.Handle }

// SealedDB returns the sealed database (nil before the first Enrol).
func (p *PassDB) SealedDB() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.DB()
}

// SetSealedDB installs a database sealed earlier (say, a copy of another state's).
func (p *PassDB) SetSealedDB(db []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.store(db)
}

// store writes a new sealed database; p.mu is held.
func (p *PassDB) store(db []byte) error { return p.st.Write("passwd.db", db) }

// Enrol adds or replaces user's password, as `palisade passwd USER` does. A zero params keeps
// the database's (a new database: pam.DefaultParams); maxFailures 0 keeps its threshold (a
// new database: pam.DefaultMaxFailures).
func (p *PassDB) Enrol(ctx context.Context, user string, password []byte, params pam.Params, maxFailures uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.Update(func(db []byte) ([]byte, error) {
		db, err := p.k.Enrol(ctx, db, user, password, params, maxFailures)
		if err != nil {
			return nil, fmt.Errorf("sshpass: enrol %q: %w", user, err)
		}
		return db, nil
	})
}

// Unlock lifts user's lockout, as `palisade passwd USER --unlock` does.
func (p *PassDB) Unlock(ctx context.Context, user string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.Update(func(db []byte) ([]byte, error) {
		db, err := p.k.Unlock(ctx, db, user)
		if err != nil {
			return nil, fmt.Errorf("sshpass: unlock %q: %w", user, err)
		}
		return db, nil
	})
}

// Check implements Checker: nil, ErrWrongPassword, ErrLocked, or another error. A success
// after failures moves the user's failure baseline; the new sealed database is stored, as
// pam_palisade.so does.
func (p *PassDB) Check(ctx context.Context, user string, password []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.Update(func(db []byte) ([]byte, error) {
		if db == nil {
			return nil, ErrWrongPassword // no user enrolled yet
		}
		newDB, err := p.k.Check(ctx, db, user, password)
		switch {
		case errors.Is(err, pam.ErrWrong):
			return nil, ErrWrongPassword
		case errors.Is(err, pam.ErrLocked):
			return nil, ErrLocked
		case err != nil:
			return nil, fmt.Errorf("sshpass: check: %w", err)
		}
		return newDB, nil // nil: nothing to store
	})
}

// Close unregisters the checking PAL if OpenPassDB registered it (a PAL found through the
// state's handle belongs to whoever registered it, such as `palisade passwd`).
func (p *PassDB) Close(ctx context.Context) error {
	if !p.registered {
		return nil
	}
	return p.k.C.Unregister(ctx, p.k.Handle)
}
