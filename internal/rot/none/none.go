// Package none is the development root of trust (DESIGN §6, mode "none"): the µTPM master
// secret lives in a file, the identity key is fresh at every start and endorsed by nothing,
// and quotes say Rooted = false so that verifiers refuse them unless told otherwise.
//
// State directory layout:
//
//	master.key  the master secret (32 random bytes, mode 0600), created on first Open
//	counters    the monotonic counters (see FileCounters)
//	lock        held (flock) while a Root is open, so two visors never share counters
//
// What this mode does not protect: anyone who can read master.key can unseal every blob, and
// anyone who can write the state directory can roll the counters back by restoring an old
// counters file: rollback is NOT detected here. The "tpm" root anchors counters in TPM NV.
package none

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/palisade-project/palisade/internal/atomicfile"

	"github.com/palisade-project/palisade/internal/rot"
	"github.com/palisade-project/palisade/internal/utpm"
)

const masterSize = 32

// Root is the "none" root of trust.
type Root struct {
	lock     *os.File
	cfg      utpm.PlatformConfig
	counters *FileCounters
}

var _ rot.RootOfTrust = (*Root)(nil)

// Open opens (creating on first use) the state directory and returns the root for a visor
// whose measurement is visor. It fails if another Root holds the directory.
func Open(stateDir string, visor utpm.Digest) (*Root, error) {
	if err := atomicfile.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("rot/none: state dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(stateDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rot/none: lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("rot/none: state dir %s is in use by another visor: %w", stateDir, err)
	}
	// Temporary files left by a crash between write and rename are garbage: the real files
	// were never replaced by them.
	stale, _ := filepath.Glob(filepath.Join(stateDir, atomicfile.TempPattern))
	for _, f := range stale {
		os.Remove(f)
	}
	r, err := open(stateDir, visor)
	if err != nil {
		lock.Close()
		return nil, err
	}
	r.lock = lock
	return r, nil
}

func open(stateDir string, visor utpm.Digest) (*Root, error) {
	master, err := loadOrCreateMaster(filepath.Join(stateDir, "master.key"))
	if err != nil {
		return nil, err
	}
	id, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("rot/none: identity key: %w", err)
	}
	counters, err := OpenFileCounters(filepath.Join(stateDir, "counters"))
	if err != nil {
		return nil, err
	}
	return &Root{
		counters: counters,
		cfg: utpm.PlatformConfig{
			MasterSecret: master,
			Identity:     id,
			Visor:        visor,
			Rooted:       false,
			Counters:     counters,
		},
	}, nil
}

// loadOrCreateMaster reads the master secret, or creates it crash-safely on first run: a crash
// leaves either no file or a complete one, never a short secret.
func loadOrCreateMaster(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("rot/none: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("rot/none: %s has mode %v; it must be readable by its owner only", path, fi.Mode().Perm())
		}
		if len(b) != masterSize {
			return nil, fmt.Errorf("rot/none: %s has %d bytes, want %d (corrupt?)", path, len(b), masterSize)
		}
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rot/none: read master secret: %w", err)
	}
	b = make([]byte, masterSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("rot/none: master secret: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("rot/none: create master secret: %w", err)
	}
	return b, nil
}

// Mode is "none".
func (r *Root) Mode() string { return "none" }

// Platform returns the µTPM configuration: file master secret, fresh identity key, file
// counters, Rooted = false.
func (r *Root) Platform() utpm.PlatformConfig { return r.cfg }

// IdentityKey returns the identity key, fresh at every Open.
func (r *Root) IdentityKey() *ecdsa.PrivateKey { return r.cfg.Identity }

// Endorse returns nil, nil: nothing vouches for the identity key in this mode.
func (r *Root) Endorse(ctx context.Context, nonce []byte) ([]byte, error) { return nil, nil }

// Close releases the state directory.
func (r *Root) Close() error {
	if r.lock == nil {
		return nil
	}
	err := r.lock.Close() // closing the descriptor releases the flock
	r.lock = nil
	return err
}
