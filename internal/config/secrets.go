package config

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Secret blobs (docs/configurations.md §5):
//
//	"PLCS" ‖ u8 version=1 ‖ nonce[12] ‖ AES-256-GCM(key, nonce, value, ad)
//	key = HKDF-SHA256(master, salt="", info="palisade.config.secrets.v1\x00" ‖ admin kid)
//	ad  = "PLCS" ‖ u8 version ‖ admin kid ‖ secret name
//
// A secret is bound to a signer (the administrator key), not to a measurement: it is released
// to whatever the active configuration signed by that key allows, so a signed update that
// keeps a name keeps access without re-encrypting, and a revocation takes effect at apply.
const (
	secretMagic   = "PLCS"
	secretVersion = 1
	secretNonce   = 12
	secretSuffix  = ".sealed"
	// MaxSecretSize bounds a secret value.
	MaxSecretSize = 1 << 20
)

var (
	ErrSecretNotFound = errors.New("secret is not in the store")
	ErrSecretTampered = errors.New("secret blob failed its integrity check (tampered, renamed, or another master key or signer)")
	ErrWrongSigner    = errors.New("active configuration is signed by another key than the secrets' signer")
)

// SecretStore keeps secret values encrypted in a directory and releases one only when
// Authorize allows it under the configuration that active returns at that moment.
type SecretStore struct {
	dir    string
	aead   cipher.AEAD
	signer KeyID
	active func() (*Signed, error)
}

// OpenSecretStore opens (creating it 0700 if needed) the store in dir. master is the secret
// the visor's root of trust supplies (≥ 32 bytes); signer is the administrator key the
// secrets are bound to; active returns the active configuration and is called at every
// release, so that what it returns decides.
func OpenSecretStore(dir string, master []byte, signer KeyID, active func() (*Signed, error)) (*SecretStore, error) {
	if len(master) < 32 {
		return nil, fmt.Errorf("secret store: master key of %d bytes, need at least 32", len(master))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secret store: %w", err)
	}
	key, err := hkdf.Key(sha256.New, master, nil, "palisade.config.secrets.v1\x00"+string(signer[:]), 32)
	if err != nil {
		return nil, fmt.Errorf("secret store: %w", err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	return &SecretStore{dir: dir, aead: aead, signer: signer, active: active}, nil
}

func (s *SecretStore) ad(name string) []byte {
	ad := append([]byte(secretMagic), secretVersion)
	ad = append(ad, s.signer[:]...)
	return append(ad, name...)
}

func (s *SecretStore) path(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("secret %q: %w", name, err)
	}
	return filepath.Join(s.dir, name+secretSuffix), nil
}

// Put stores value under name, replacing any previous value atomically.
func (s *SecretStore) Put(name string, value []byte) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	if len(value) > MaxSecretSize {
		return fmt.Errorf("secret %q: %d bytes exceeds %d", name, len(value), MaxSecretSize)
	}
	nonce := make([]byte, secretNonce)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	blob := append([]byte(secretMagic), secretVersion)
	blob = append(blob, nonce...)
	blob = s.aead.Seal(blob, nonce, value, s.ad(name))
	if err := writeFileAtomic(p, blob, 0o600); err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return nil
}

// List returns the names of the stored secrets.
func (s *SecretStore) List() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), secretSuffix); ok && checkName(n) == nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Release returns the value of secret for code with measurement m running as name, if the
// active configuration allows it (Authorize); otherwise an error wrapping the reason.
func (s *SecretStore) Release(secret, name string, m Measurement) ([]byte, error) {
	act, err := s.active()
	if err != nil {
		return nil, fmt.Errorf("release %q: %w", secret, err)
	}
	if act == nil {
		return nil, fmt.Errorf("release %q: %w", secret, ErrNoActiveConfig)
	}
	if act.KeyID != s.signer {
		return nil, fmt.Errorf("release %q: %w", secret, ErrWrongSigner)
	}
	if err := Authorize(act.Config, secret, name, m); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	return s.open(secret)
}

func (s *SecretStore) open(secret string) ([]byte, error) {
	p, err := s.path(secret)
	if err != nil {
		return nil, err
	}
	blob, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("release %q: %w", secret, ErrSecretNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("release %q: %w", secret, err)
	}
	hl := len(secretMagic) + 1 + secretNonce
	if len(blob) < hl+s.aead.Overhead() || string(blob[:4]) != secretMagic || blob[4] != secretVersion {
		return nil, fmt.Errorf("release %q: %w", secret, ErrSecretTampered)
	}
	v, err := s.aead.Open(nil, blob[5:hl], blob[hl:], s.ad(secret))
	if err != nil {
		return nil, fmt.Errorf("release %q: %w", secret, ErrSecretTampered)
	}
	return v, nil
}
