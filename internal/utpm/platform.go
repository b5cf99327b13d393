package utpm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/veraison/go-cose"
)

// Platform holds what all µTPMs of one visor share: keys derived from the master secret, the
// identity key, the counter store. It is safe for concurrent use.
type Platform struct {
	prk      []byte  // HKDF-Extract of the master secret; every key is expanded from it
	id       [8]byte // platformID written into every blob, so foreign blobs are recognised
	identity *ecdsa.PrivateKey
	idPub    []byte // DER SubjectPublicKeyInfo
	kid      []byte // SHA-256(idPub), the COSE key id of quotes
	signer   cose.Signer
	visor    Digest
	rooted   bool
	counters CounterStore
	now      func() time.Time
	rand     io.Reader
	authz    atomic.Pointer[Authorizer]

	aeads aeadCache
	keys  keyCache
}

// hkdfSalt separates Palisade's use of the master secret from any other use of the same bytes.
const hkdfSalt = "palisade.utpm.v1"

// NewPlatform checks cfg and derives the platform's keys.
//
// cfg.Counters may be nil: counter operations then fail with ErrUnsupported instead of
// pretending to persist anything.
func NewPlatform(cfg PlatformConfig) (*Platform, error) {
	if len(cfg.MasterSecret) < 32 {
		return nil, fmt.Errorf("utpm: master secret has %d bytes, need at least 32", len(cfg.MasterSecret))
	}
	if cfg.Identity == nil || cfg.Identity.Curve != elliptic.P256() {
		return nil, errors.New("utpm: identity key must be an ECDSA P-256 private key")
	}
	prk, err := hkdf.Extract(sha256.New, cfg.MasterSecret, []byte(hkdfSalt))
	if err != nil {
		return nil, fmt.Errorf("utpm: derive keys: %w", err)
	}
	p := &Platform{
		prk:      prk,
		identity: cfg.Identity,
		visor:    cfg.Visor,
		rooted:   cfg.Rooted,
		counters: cfg.Counters,
		now:      cfg.Now,
		rand:     cfg.Rand,
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.SetAuthorizer(cfg.Authorize)
	if p.rand == nil {
		p.rand = rand.Reader
	}
	pid, err := hkdf.Expand(sha256.New, prk, "palisade.utpm.platform-id.v1", len(p.id))
	if err != nil {
		return nil, fmt.Errorf("utpm: derive platform id: %w", err)
	}
	copy(p.id[:], pid)
	p.idPub, err = x509.MarshalPKIXPublicKey(&cfg.Identity.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("utpm: encode identity key: %w", err)
	}
	kid := sha256.Sum256(p.idPub)
	p.kid = kid[:]
	p.signer, err = cose.NewSigner(cose.AlgorithmES256, cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("utpm: identity signer: %w", err)
	}
	return p, nil
}

// SetAuthorizer replaces the Authorizer consulted for blobs sealed to a name under a signer
// (nil: such blobs are refused with ErrUnsupported). Safe to call while PALs run: each
// UNSEAL and KEY_SIGN uses the authorizer current at that moment.
func (p *Platform) SetAuthorizer(a Authorizer) {
	if a == nil {
		p.authz.Store(nil)
		return
	}
	p.authz.Store(&a)
}

func (p *Platform) authorizer() Authorizer {
	if a := p.authz.Load(); a != nil {
		return *a
	}
	return nil
}

// IdentityPublic is the DER SubjectPublicKeyInfo of the identity key. Callers must not modify
// the returned slice.
func (p *Platform) IdentityPublic() []byte { return p.idPub }

// NewTPM creates the µTPM of a PAL with measurement m: PCRs zero, then PCR0 = Extend(0, m).
func (p *Platform) NewTPM(m Digest) *TPM {
	t := &TPM{p: p, m: m}
	t.pcrs[0] = extend(Digest{}, m)
	return t
}

// TPM is one PAL's µTPM. Its methods are safe for concurrent use (replicas of one registration
// share nothing, but the visor may quote a PAL while it runs).
type TPM struct {
	p *Platform
	m Digest

	mu   sync.RWMutex
	pcrs [NumPCRs]Digest

	audit AuditSink // set once, before the PAL runs
}

// AuditSink records one key-object operation of a µTPM — op "key-create", "key-sign" or
// "key-import" — with its outcome (err nil: it succeeded). It is the µTPM's whole view of the
// visor's audit log: it must not block for long, and it returns an error when it could not
// record the operation (the log's disk is full, say), which makes the µTPM refuse it.
type AuditSink func(op string, err error) error

// OnKeyUse makes sink the audit of every key-object operation on this µTPM. Call it before the
// PAL runs. Each operation is done first, then given to sink before its result leaves the
// µTPM: when sink fails, a successful operation is undone as far as the caller can tell (the
// key blob made or the signature is dropped, never returned) and fails with ErrAudit, so that
// no key is made and no signature leaves without its record. An operation that failed anyway
// keeps its own error: nothing was done that a record would have to account for.
func (t *TPM) OnKeyUse(sink AuditSink) { t.audit = sink }

// audited gives the outcome *err of op to the audit sink and reports whether the operation's
// result may be returned; if not, *err says why (ErrAudit).
func (t *TPM) audited(op string, err *error) bool {
	if t.audit == nil {
		return true
	}
	aerr := t.audit(op, *err)
	if aerr == nil || *err != nil {
		return aerr == nil
	}
	*err = fmt.Errorf("%s: %w: %w", op, ErrAudit, aerr)
	return false
}

// Measurement is the identity of the PAL this µTPM belongs to.
func (t *TPM) Measurement() Digest { return t.m }

// Platform is the platform the µTPM was created by.
func (t *TPM) Platform() *Platform { return t.p }

func extend(old, d Digest) Digest {
	var buf [64]byte
	copy(buf[:32], old[:])
	copy(buf[32:], d[:])
	return sha256.Sum256(buf[:])
}

// Extend sets PCR[pcr] = SHA-256(PCR[pcr] ‖ d). PCR0 holds the PAL's identity and is never
// writable: pcr 0 or out of range → ErrPCR.
func (t *TPM) Extend(pcr int, d Digest) error {
	if pcr <= 0 || pcr >= NumPCRs {
		return fmt.Errorf("extend PCR %d: %w", pcr, ErrPCR)
	}
	t.mu.Lock()
	t.pcrs[pcr] = extend(t.pcrs[pcr], d)
	t.mu.Unlock()
	return nil
}

// PCR reads one PCR; out of range → ErrPCR.
func (t *TPM) PCR(pcr int) (Digest, error) {
	if pcr < 0 || pcr >= NumPCRs {
		return Digest{}, fmt.Errorf("read PCR %d: %w", pcr, ErrPCR)
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.pcrs[pcr], nil
}

// PCRs is a consistent snapshot of all PCRs.
func (t *TPM) PCRs() [NumPCRs]Digest {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.pcrs
}

// Random fills b from the platform's random source; len(b) > MaxRandom → ErrTooLarge.
func (t *TPM) Random(b []byte) error {
	if len(b) > MaxRandom {
		return fmt.Errorf("random: %d bytes: %w", len(b), ErrTooLarge)
	}
	if _, err := io.ReadFull(t.p.rand, b); err != nil {
		return fmt.Errorf("random: %w: %w", ErrInternal, err)
	}
	return nil
}

// CounterRead reads counter id of this PAL (0 if it was never incremented).
func (t *TPM) CounterRead(id uint32) (uint64, error) {
	if t.p.counters == nil {
		return 0, fmt.Errorf("counter read: no counter store: %w", ErrUnsupported)
	}
	v, err := t.p.counters.Read(t.m, id)
	if err != nil {
		return 0, fmt.Errorf("counter %d read: %w: %w", id, ErrInternal, err)
	}
	return v, nil
}

// CounterIncrement increments counter id of this PAL and returns the new value, once it is
// persisted.
func (t *TPM) CounterIncrement(id uint32) (uint64, error) {
	if t.p.counters == nil {
		return 0, fmt.Errorf("counter increment: no counter store: %w", ErrUnsupported)
	}
	v, err := t.p.counters.Increment(t.m, id)
	if err != nil {
		return 0, fmt.Errorf("counter %d increment: %w: %w", id, ErrInternal, err)
	}
	return v, nil
}

// Code maps an error from this package to its ABI error code (docs/abi.md §4); unknown errors
// map to E_INTERNAL (12), nil to 0.
func Code(err error) int32 {
	if err == nil {
		return 0
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return 12
}

// codes puts ErrInternal first: an internal failure wraps its cause, and the cause must not
// turn it into a policy error the PAL would not retry.
var codes = []struct {
	err  error
	code int32
}{
	{ErrInternal, 12},
	{ErrInvalid, 1},
	{ErrPCR, 4},
	{ErrTampered, 5},
	{ErrForeign, 6},
	{ErrWrongPAL, 7},
	{ErrPCRMismatch, 8},
	{ErrWrongType, 9},
	{ErrUnsupported, 10},
	{ErrTooLarge, 11},
	{ErrMalformed, 13},
	{ErrNotAuthorized, 14},
	{ErrAudit, 15},
}
