package sshpass

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"sync"

	"golang.org/x/crypto/argon2"

	"github.com/palisade-project/palisade/integrations/pam"
)

// Plain is the baseline `palisade bench` compares PassDB with: Argon2id verifiers with the
// checking PAL's default parameters (pam.DefaultParams), held and checked in the server's own
// memory (as sshd with /etc/shadow), natively (golang.org/x/crypto/argon2), with no lockout.
type Plain struct {
	mu    sync.RWMutex
	users map[string]plainEntry
}

const (
	plainSaltLen = 16
	plainTagLen  = 32
)

type plainEntry struct {
	salt [plainSaltLen]byte
	v    []byte
}

func plainHash(password []byte, salt [plainSaltLen]byte) []byte {
	p := pam.DefaultParams
	return argon2.IDKey(password, salt[:], p.Time, p.Memory, uint8(p.Threads), plainTagLen)
}

// Enrol adds or replaces user's password.
func (p *Plain) Enrol(user string, password []byte) {
	var e plainEntry
	rand.Read(e.salt[:])
	e.v = plainHash(password, e.salt)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.users == nil {
		p.users = map[string]plainEntry{}
	}
	p.users[user] = e
}

// Check implements Checker. An unknown user costs a hash too, so timing does not tell which
// names exist.
func (p *Plain) Check(_ context.Context, user string, password []byte) error {
	p.mu.RLock()
	e, ok := p.users[user]
	p.mu.RUnlock()
	v := plainHash(password, e.salt)
	if !ok || subtle.ConstantTimeCompare(v, e.v) != 1 {
		return ErrWrongPassword
	}
	return nil
}
