package sshpass

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"sync"

	"github.com/palisade-project/palisade/examples/sshpass/verifier"
)

// Plain is the baseline the benchmark compares PAL with: the same Argon2id verifiers, held
// and checked in the server's own memory (as sshd with /etc/shadow), without rate limiting.
type Plain struct {
	mu    sync.RWMutex
	users map[string]plainEntry
}

type plainEntry struct {
	salt [verifier.SaltLen]byte
	v    [verifier.Len]byte
}

// Enrol adds or replaces user's password.
func (p *Plain) Enrol(user string, password []byte) {
	var e plainEntry
	rand.Read(e.salt[:])
	e.v = verifier.Hash(password, e.salt)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.users == nil {
		p.users = map[string]plainEntry{}
	}
	p.users[user] = e
}

// Check implements Checker.
func (p *Plain) Check(_ context.Context, user string, password []byte) error {
	p.mu.RLock()
	e, ok := p.users[user]
	p.mu.RUnlock()
	v := verifier.Hash(password, e.salt)
	if !ok || subtle.ConstantTimeCompare(v[:], e.v[:]) != 1 {
		return ErrWrongPassword
	}
	return nil
}
