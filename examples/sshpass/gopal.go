package sshpass

// The Go checking PAL's client (checker/, Argon2id t=1 m=2 MiB, a time-based rate limit in PAL
// memory). The demo server and `palisade demo ssh` use PassDB (pam_palisade's C checking PAL)
// instead; this stays only because `palisade bench`'s SSH section (cmd/palisade/bench_ssh.go)
// still builds checker/ and calls NewPAL. Remove it with checker/ and verifier/ once the bench
// uses PassDB.

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/palisade-project/palisade/client"
)

// Status codes of the Go checking PAL (checker/main.go).
const (
	StatusWrong       = 4
	StatusRateLimited = 5
)

// PAL is a Checker backed by the Go checking PAL (checker/) through palisaded.
type PAL struct {
	c      *client.Client
	handle string
	mu     sync.RWMutex
	db     []byte // sealed to the checking PAL; opaque to this process
}

// NewPAL registers the checking PAL image and returns a Checker with an empty database.
func NewPAL(ctx context.Context, c *client.Client, image []byte, engine string) (*PAL, error) {
	info, err := c.Register(ctx, image, client.RegisterOptions{Name: "sshpass-checker", Engine: engine})
	if err != nil {
		return nil, fmt.Errorf("register checking PAL: %w", err)
	}
	return &PAL{c: c, handle: info.Handle}, nil
}

// Handle is the checking PAL's handle.
func (p *PAL) Handle() string { return p.handle }

// SealedDB returns the sealed database, which the server may keep on disk.
func (p *PAL) SealedDB() []byte {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return append([]byte(nil), p.db...)
}

// SetSealedDB installs a database sealed earlier.
func (p *PAL) SetSealedDB(db []byte) {
	p.mu.Lock()
	p.db = append([]byte(nil), db...)
	p.mu.Unlock()
}

func (p *PAL) request(op byte, user string, password []byte) ([]byte, error) {
	if len(user) == 0 || len(user) > 255 {
		return nil, fmt.Errorf("sshpass: user name of %d bytes", len(user))
	}
	p.mu.RLock()
	in := binary.LittleEndian.AppendUint32([]byte{op}, uint32(len(p.db)))
	in = append(in, p.db...)
	p.mu.RUnlock()
	in = append(append(append(in, byte(len(user))), user...), password...)
	return in, nil
}

// Enrol adds or replaces user's password.
func (p *PAL) Enrol(ctx context.Context, user string, password []byte) error {
	in, err := p.request('E', user, password)
	if err != nil {
		return err
	}
	res, err := p.c.Call(ctx, p.handle, in)
	if err != nil {
		return fmt.Errorf("enrol: %w", err)
	}
	if res.Status != 0 {
		return fmt.Errorf("enrol: PAL status %d: %s", res.Status, res.Output)
	}
	p.SetSealedDB(res.Output)
	return nil
}

// Check implements Checker.
func (p *PAL) Check(ctx context.Context, user string, password []byte) error {
	in, err := p.request('C', user, password)
	if err != nil {
		return err
	}
	res, err := p.c.Call(ctx, p.handle, in)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	switch res.Status {
	case 0:
		return nil
	case StatusWrong:
		return ErrWrongPassword
	case StatusRateLimited:
		if len(res.Output) == 12 {
			return fmt.Errorf("%w (retry in %d s; %d failures recorded for %q)", ErrRateLimited,
				binary.LittleEndian.Uint32(res.Output), binary.LittleEndian.Uint64(res.Output[4:]), user)
		}
		return ErrRateLimited
	}
	return fmt.Errorf("check: PAL status %d: %s", res.Status, res.Output)
}

// Close unregisters the checking PAL.
func (p *PAL) Close(ctx context.Context) error { return p.c.Unregister(ctx, p.handle) }
