package keys

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
	"github.com/palisade-project/palisade/pal"
)

// Limits of the service's inputs; a request beyond one fails with ErrBadRequest naming it.
const (
	MaxName      = 128     // bytes of a key name, [A-Za-z0-9._-], not starting with '.' or '-'
	MaxAllow     = 64      // uids, and gids, in a key's allow lists
	MaxDigest    = 4 << 10 // bytes to sign (an Ed25519 message)
	MaxPIN       = maxPIN  // bytes of a PIN
	MaxChain     = 8       // certificates in a key's chain
	MaxChainSize = 64 << 10
	// DefaultMaxTries is the number of incorrect PINs after which a key locks.
	DefaultMaxTries = 5
	keygenTimeout   = 2 * time.Minute
	// DefaultMaxKeysPerOwner is Config.MaxKeysPerOwner's default.
	DefaultMaxKeysPerOwner = 1024
)

// AuditEvent is one security-relevant event of the service, for the daemon's audit log.
type AuditEvent struct {
	Event  string // key_create, key_delete, key_update, key_sign, key_attest, key_denied
	Caller Caller
	Key    string
	Owner  uint32
	Op     string // the operation denied or failed
	Err    error  // nil: succeeded
}

// Config configures a Service.
type Config struct {
	Visor *visor.Visor
	DB    *bolt.DB // the daemon's state db; the service keeps its own buckets in it
	// Audit records an event; durable asks for it to be on disk before the operation is
	// acknowledged (everything but successful signatures, which come at handshake rate). An
	// error means it could not: the operation is then refused (ErrAudit), so that nothing is
	// done that the log does not show.
	Audit  func(ev AuditEvent, durable bool) error
	Admins []uint32 // may manage (not use) every key, as the daemon's access policy admins
	Logger *slog.Logger
	// Replicas is the number of instances of each signing PAL, i.e. how many signatures run
	// at once; 0 means GOMAXPROCS.
	Replicas int
	// MaxKeysPerOwner bounds the keys one uid may own (0: DefaultMaxKeysPerOwner), so that a
	// user of the socket cannot fill the daemon's state.
	MaxKeysPerOwner int
	// DefaultSigner is the signing PAL new keys are bound to; nil: the shipped SignerImage.
	// Tests set another to play a daemon upgrade that ships a new signing PAL.
	DefaultSigner []byte
}

// Service is palisaded's key service. It implements Signer. Safe for concurrent use.
type Service struct {
	v        *visor.Visor
	st       *store
	audit    func(AuditEvent, bool) error
	admins   []uint32
	log      *slog.Logger
	replicas int
	maxOwned int

	keygenM, signerM [32]byte // measurements of the shipped PALs
	signerImg        []byte   // the default signing PAL (SignerImage unless configured)
	importer         *utpm.TPM

	mu   sync.RWMutex
	keys map[string]*record // a record is never modified once in the map: changes replace it

	palMu   sync.Mutex // serialises registrations
	palsMu  sync.RWMutex
	pals    map[[32]byte]visor.Handle // registered key PALs by measurement
	handles map[visor.Handle]bool
}

var _ Signer = (*Service)(nil)

// Open loads the keys in cfg.DB. The key PALs are registered when first needed.
func Open(cfg Config) (*Service, error) {
	if cfg.Visor == nil || cfg.DB == nil {
		return nil, errors.New("keys: Open needs a visor and a state db")
	}
	st, err := openStore(cfg.DB)
	if err != nil {
		return nil, err
	}
	s := &Service{
		v: cfg.Visor, st: st, audit: cfg.Audit, admins: cfg.Admins, log: cfg.Logger,
		replicas: cfg.Replicas, keys: map[string]*record{},
		pals: map[[32]byte]visor.Handle{}, handles: map[visor.Handle]bool{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.replicas <= 0 {
		s.replicas = runtime.GOMAXPROCS(0)
	}
	if s.maxOwned = cfg.MaxKeysPerOwner; s.maxOwned <= 0 {
		s.maxOwned = DefaultMaxKeysPerOwner
	}
	if s.keygenM, err = Measurement(KeyGenImage); err != nil {
		return nil, fmt.Errorf("keys: shipped key-generation PAL: %w", err)
	}
	s.signerImg = SignerImage
	if cfg.DefaultSigner != nil {
		s.signerImg = cfg.DefaultSigner
	}
	if s.signerM, err = Measurement(s.signerImg); err != nil {
		return nil, fmt.Errorf("keys: shipped signing PAL: %w", err)
	}
	s.importer = cfg.Visor.Platform().NewTPM(utpm.Digest(ImportMeasurement))
	recs, err := st.all()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		s.keys[r.Name] = r
	}
	return s, nil
}

// KeyGenMeasurement and SignerMeasurement are the measurements of the shipped PALs.
func (s *Service) KeyGenMeasurement() [32]byte { return s.keygenM }
func (s *Service) SignerMeasurement() [32]byte { return s.signerM }

// Internal reports whether h is one of the service's own PAL registrations (the daemon hides
// them from clients and audits their key uses as the service's events instead).
func (s *Service) Internal(h visor.Handle) bool {
	s.palsMu.RLock()
	defer s.palsMu.RUnlock()
	return s.handles[h]
}

// CheckName reports whether name is a valid key name.
func CheckName(name string) error {
	ok := len(name) > 0 && len(name) <= MaxName && name[0] != '.' && name[0] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: key name %q: want 1..%d bytes of [A-Za-z0-9._-], not starting with '.' or '-'", ErrBadRequest, name, MaxName)
	}
	return nil
}

// mayUse reports whether c may sign with r: its owner, or an allowed uid, gid or group.
func (r *record) mayUse(c Caller) bool {
	if c.UID == r.Owner || slices.Contains(r.AllowUIDs, c.UID) || slices.Contains(r.AllowGIDs, c.GID) {
		return true
	}
	for _, g := range c.Groups {
		if slices.Contains(r.AllowGIDs, g) {
			return true
		}
	}
	return false
}

// mayManage reports whether c may delete r or change its access, PIN or chain.
func (s *Service) mayManage(r *record, c Caller) bool {
	return c.UID == r.Owner || slices.Contains(s.admins, c.UID)
}

// record writes ev to the audit log before the operation it records is done or its result
// returned; an error (ErrAudit) means the operation must be refused.
func (s *Service) record(ev AuditEvent, durable bool) error {
	if s.audit == nil {
		return nil
	}
	if err := s.audit(ev, durable); err != nil {
		return fmt.Errorf("%w: %w", ErrAudit, err)
	}
	return nil
}

// recordRefusal records an operation that is refused or failed anyway (a denial, an incorrect
// PIN). If the log cannot take it, the operation stays refused with its own error, which says
// more to the caller; the log counts and reports its own failures.
func (s *Service) recordRefusal(ev AuditEvent) { _ = s.record(ev, true) }

// commit makes a change of the key service's state that ev records: the record first, on
// disk, then the change, so that no change is made that the log does not show (a change made
// first could not always be undone when the record then fails: undoing needs the same full
// disk). A change that fails after its record gets a second record, of the same event with
// the error, saying it was not made.
func (s *Service) commit(ev AuditEvent, change func() error) error {
	if err := s.record(ev, true); err != nil {
		return err
	}
	if err := change(); err != nil {
		ev.Err = err
		s.recordRefusal(ev)
		return err
	}
	return nil
}

// access is what an operation needs of its caller.
type access int

const (
	use    access = 1 << iota // owner, or an allowed uid, gid or group
	manage                    // owner or admin
	either = use | manage
)

// lookup finds name and checks that c has the access need to do op on it. A denial is audited.
func (s *Service) lookup(c Caller, name, op string, need access) (*record, error) {
	s.mu.RLock()
	r := s.keys[name]
	s.mu.RUnlock()
	if r == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	ok := need&use != 0 && r.mayUse(c) || need&manage != 0 && s.mayManage(r, c)
	if !ok {
		s.recordRefusal(AuditEvent{Event: "key_denied", Caller: c, Key: name, Owner: r.Owner, Op: op})
		return nil, fmt.Errorf("%w: uid %d may not %s key %q", ErrDenied, c.UID, op, name)
	}
	return r, nil
}

// Find implements Signer.
func (s *Service) Find(_ context.Context, c Caller, name string) (Info, error) {
	r, err := s.lookup(c, name, "use", use)
	if err != nil {
		return Info{}, err
	}
	return r.info(), nil
}

// List implements Signer.
func (s *Service) List(_ context.Context, c Caller) ([]Info, error) {
	s.mu.RLock()
	var out []Info
	for _, r := range s.keys {
		if r.mayUse(c) || s.mayManage(r, c) {
			out = append(out, r.info())
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// palFor returns the registration of the key PAL of measurement m, registering it on first use.
func (s *Service) palFor(ctx context.Context, m [32]byte) (visor.Handle, error) {
	s.palsMu.RLock()
	h, ok := s.pals[m]
	s.palsMu.RUnlock()
	if ok {
		return h, nil
	}
	s.palMu.Lock()
	defer s.palMu.Unlock()
	s.palsMu.RLock()
	h, ok = s.pals[m]
	s.palsMu.RUnlock()
	if ok {
		return h, nil
	}
	var (
		img      []byte
		name     = "key-signer"
		replicas = s.replicas
		lim      engine.Limits
		err      error
	)
	switch m {
	case s.keygenM:
		// RSA-3072 generation takes seconds, and its tail far more on a loaded machine: the
		// default call timeout (10 s) would fail creations that are only slow.
		img, name, replicas, lim = KeyGenImage, "key-keygen", 1, engine.Limits{Timeout: keygenTimeout}
	case s.signerM:
		img = s.signerImg
	default:
		if img, err = s.st.image(m); err != nil {
			return 0, fmt.Errorf("%w: signing PAL %x: %w", ErrUnavailable, m, err)
		}
	}
	info, err := s.v.Register(ctx, img, visor.RegisterOptions{Name: name, Replicas: replicas, Limits: lim})
	if err != nil {
		return 0, fmt.Errorf("%w: register %s PAL %x: %w", ErrUnavailable, name, m, err)
	}
	s.palsMu.Lock()
	s.pals[m] = info.Handle
	s.handles[info.Handle] = true
	s.palsMu.Unlock()
	return info.Handle, nil
}

// call runs one command of a key PAL and returns its output, or the error its status means.
func (s *Service) call(ctx context.Context, m [32]byte, what string, in []byte) ([]byte, error) {
	h, err := s.palFor(ctx, m)
	if err != nil {
		return nil, err
	}
	res, err := s.v.Call(ctx, h, in)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	if res.Status != statusOK {
		return nil, statusError(what, res.Status, res.Output)
	}
	return res.Output, nil
}

// Sign implements Signer.
func (s *Service) Sign(ctx context.Context, c Caller, name string, req SignRequest) ([]byte, error) {
	r, err := s.lookup(c, name, "sign", use)
	if err != nil {
		return nil, err
	}
	if len(req.Digest) == 0 || len(req.Digest) > MaxDigest {
		return nil, fmt.Errorf("%w: digest of %d bytes (1..%d)", ErrBadRequest, len(req.Digest), MaxDigest)
	}
	if len(req.PIN) > MaxPIN {
		return nil, fmt.Errorf("%w: PIN of %d bytes (max %d)", ErrBadRequest, len(req.PIN), MaxPIN)
	}
	var st []byte
	if len(r.PINState) > 0 {
		st = r.PINState
	} else if req.PIN != nil {
		req.PIN = nil // a key without a PIN ignores one
	}
	out, err := s.call(ctx, r.SignerPAL, "sign", signInput(req, r.Blob, st))
	var sig, renewed []byte
	if err == nil {
		sig, renewed, err = signOutput(out)
	}
	if err != nil {
		if !errors.Is(err, ErrPINRequired) {
			s.recordRefusal(AuditEvent{Event: "key_sign", Caller: c, Key: name, Owner: r.Owner, Op: "sign", Err: err})
		}
		return nil, err
	}
	if len(renewed) > 0 {
		// A concurrent renewal or PIN change wins: either state counts from the same counter.
		if err := s.update(name, r, true, func(n *record) { n.PINState = renewed }); err != nil && !errors.Is(err, errPINChanged) {
			s.log.Error("keys: store renewed PIN state", "key", name, "err", err)
		}
	}
	// The signature leaves only with its record (buffered: written now, on disk within the
	// log's flush interval).
	if err := s.record(AuditEvent{Event: "key_sign", Caller: c, Key: name, Owner: r.Owner, Op: "sign"}, false); err != nil {
		return nil, err
	}
	return sig, nil
}

// update replaces the key name's current record with a changed copy, in the store and the map.
// old is the record the caller read: the key must still be that key (same blob: not deleted,
// nor deleted and created again), else ErrNotFound. With samePIN, its PIN state must also be
// unchanged (errPINChanged): a PIN state is derived from the one it replaces.
func (s *Service) update(name string, old *record, samePIN bool, change func(*record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.keys[name]
	if cur == nil || !bytes.Equal(cur.Blob, old.Blob) {
		return fmt.Errorf("%w: %q was deleted meanwhile", ErrNotFound, name)
	}
	if samePIN && !bytes.Equal(cur.PINState, old.PINState) {
		return errPINChanged
	}
	n := *cur
	change(&n)
	if err := s.st.put(&n, false, nil); err != nil {
		return err
	}
	s.keys[name] = &n
	return nil
}

var errPINChanged = fmt.Errorf("%w: the key's PIN was changed meanwhile; try again", ErrUnavailable)

// CreateOptions describe a new key.
type CreateOptions struct {
	Name      string
	Alg       Alg
	AllowUIDs []uint32
	AllowGIDs []uint32
	// PIN, if not empty, must accompany every signature; MaxTries incorrect PINs lock the key
	// (0: DefaultMaxTries).
	PIN      []byte
	MaxTries uint8
	// SignerImage is the signing PAL to bind the key to; nil: the daemon's default. It must speak
	// the shipped PAL's protocol (docs/keys.md §3).
	SignerImage []byte
}

func checkAllow(uids, gids []uint32) error {
	if len(uids) > MaxAllow || len(gids) > MaxAllow {
		return fmt.Errorf("%w: allow lists of %d uids and %d gids (max %d each)", ErrBadRequest, len(uids), len(gids), MaxAllow)
	}
	return nil
}

// checkAccess checks the access lists and the PIN of a new key (Create and Import).
func (o CreateOptions) checkAccess() error {
	if err := checkAllow(o.AllowUIDs, o.AllowGIDs); err != nil {
		return err
	}
	if len(o.PIN) > MaxPIN {
		return fmt.Errorf("%w: PIN of %d bytes (max %d)", ErrBadRequest, len(o.PIN), MaxPIN)
	}
	return nil
}

// newKeySigner returns the signing PAL of a new key (signerFor) and refuses, before the costly
// work of making the key, a name already taken. finish checks the name again under the lock:
// this check only spares that work.
func (s *Service) newKeySigner(ctx context.Context, o CreateOptions) (m [32]byte, img []byte, err error) {
	if m, img, err = s.signerFor(ctx, o.SignerImage); err != nil {
		return m, nil, err
	}
	s.mu.RLock()
	_, dup := s.keys[o.Name]
	s.mu.RUnlock()
	if dup {
		return m, nil, fmt.Errorf("%w: %q", ErrExists, o.Name)
	}
	return m, img, nil
}

// Create generates a key in the key-generation PAL, bound to the signing PAL, owned by c.
func (s *Service) Create(ctx context.Context, c Caller, o CreateOptions) (Info, error) {
	if err := CheckName(o.Name); err != nil {
		return Info{}, err
	}
	alg, err := palAlg(o.Alg)
	if err != nil {
		return Info{}, err
	}
	if err := o.checkAccess(); err != nil {
		return Info{}, err
	}
	signer, signerImg, err := s.newKeySigner(ctx, o)
	if err != nil {
		return Info{}, err
	}
	var nonce [32]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return Info{}, err
	}
	out, err := s.call(ctx, s.keygenM, "key generation", keygenInput(alg, signer, nonce))
	if err != nil {
		return Info{}, err
	}
	pub, blob, quote, err := keygenOutput(out)
	if err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := checkPublic(o.Alg, pub); err != nil {
		return Info{}, err
	}
	creation, err := attest.Assemble(ctx, s.v.Root(), quote)
	if err != nil {
		return Info{}, fmt.Errorf("%w: creation evidence: %w", ErrUnavailable, err)
	}
	r := &record{
		Name: o.Name, Alg: o.Alg, Public: pub, Owner: c.UID,
		AllowUIDs: slices.Clone(o.AllowUIDs), AllowGIDs: slices.Clone(o.AllowGIDs), Blob: blob,
		KeyGenPAL: s.keygenM, SignerPAL: signer, Created: time.Now().UTC().Truncate(time.Second),
		Creation: creation,
	}
	return s.finish(ctx, c, r, o, signerImg, "key_create")
}

// signerFor returns the measurement of the signing PAL image (nil: the daemon's default) and
// the image, which is stored with the key: a later daemon that ships another default signing
// PAL (an upgrade) still runs the one the key is bound to. A caller's own PAL is registered now,
// so that one that does not load fails the operation rather than every later signature.
func (s *Service) signerFor(ctx context.Context, image []byte) (m [32]byte, img []byte, err error) {
	if image == nil {
		return s.signerM, s.signerImg, nil
	}
	p, err := pal.Parse(image)
	if err != nil {
		return m, nil, fmt.Errorf("%w: signing PAL: %w", ErrBadRequest, err)
	}
	if p.Measurement == s.signerM {
		return s.signerM, s.signerImg, nil
	}
	if err := s.registerCustom(ctx, p.Measurement, image); err != nil {
		return m, nil, err
	}
	return p.Measurement, image, nil
}

// finish sets the new key r's PIN, stores it with its signing PAL's image and audits event.
func (s *Service) finish(ctx context.Context, c Caller, r *record, o CreateOptions, signerImg []byte, event string) (Info, error) {
	if len(o.PIN) > 0 {
		tries := o.MaxTries
		if tries == 0 {
			tries = DefaultMaxTries
		}
		var err error
		if r.PINState, err = s.call(ctx, r.SignerPAL, "set PIN", pinInput(r.Blob, nil, nil, tries, o.PIN)); err != nil {
			return Info{}, err
		}
	}
	// Checked before the record, so that a refusal costs no record; checked again when the
	// key is stored, for a creation that raced this one.
	s.mu.RLock()
	err := s.admit(r)
	s.mu.RUnlock()
	if err != nil {
		return Info{}, err
	}
	err = s.commit(AuditEvent{Event: event, Caller: c, Key: r.Name, Owner: c.UID, Op: string(r.Alg)}, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.admit(r); err != nil {
			return err
		}
		if err := s.st.put(r, true, signerImg); err != nil {
			return err
		}
		s.keys[r.Name] = r
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	return r.info(), nil
}

// admit checks that the new key r may be stored: its name is free and its owner has room.
// s.mu is held.
func (s *Service) admit(r *record) error {
	owned := 0
	for _, k := range s.keys {
		if k.Owner == r.Owner {
			owned++
		}
	}
	if s.keys[r.Name] != nil {
		return fmt.Errorf("%w: %q", ErrExists, r.Name)
	}
	if owned >= s.maxOwned {
		return fmt.Errorf("%w: uid %d owns %d keys, the daemon's limit (max_keys_per_owner in its configuration)", ErrBadRequest, r.Owner, owned)
	}
	return nil
}

// registerCustom registers a user's signing PAL of measurement m; the image is stored with the
// first key bound to it.
func (s *Service) registerCustom(ctx context.Context, m [32]byte, img []byte) error {
	s.palsMu.RLock()
	_, ok := s.pals[m]
	s.palsMu.RUnlock()
	if ok {
		return nil
	}
	s.palMu.Lock()
	defer s.palMu.Unlock()
	if _, ok := s.pals[m]; ok {
		return nil
	}
	info, err := s.v.Register(ctx, img, visor.RegisterOptions{Name: "key-signer", Replicas: s.replicas})
	if err != nil {
		return fmt.Errorf("%w: signing PAL: %w", ErrBadRequest, err)
	}
	s.palsMu.Lock()
	s.pals[m] = info.Handle
	s.handles[info.Handle] = true
	s.palsMu.Unlock()
	return nil
}

// checkPublic checks that pub is a key of algorithm a.
func checkPublic(a Alg, pub []byte) error {
	k, err := x509.ParsePKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("%w: public key: %w", ErrUnavailable, err)
	}
	ok := false
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		ok = a == ECDSAP256 && k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		ok = a == Ed25519
	case *rsa.PublicKey:
		ok = a == RSA2048 && k.N.BitLen() == 2048 || a == RSA3072 && k.N.BitLen() == 3072
	}
	if !ok {
		return fmt.Errorf("%w: public key of type %T is not %s", ErrUnavailable, k, a)
	}
	return nil
}

// Delete removes the key name. Its blob is gone from the daemon's state; the µTPM cannot
// revoke a copy of it made before (a backup of the state db), which the signing PAL would
// still accept.
func (s *Service) Delete(_ context.Context, c Caller, name string) error {
	r, err := s.lookup(c, name, "delete", manage)
	if err != nil {
		return err
	}
	return s.commit(AuditEvent{Event: "key_delete", Caller: c, Key: name, Owner: r.Owner, Op: "delete"}, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.keys[name] != r {
			return fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		if err := s.st.delete(name, r.SignerPAL); err != nil {
			return err
		}
		delete(s.keys, name)
		return nil
	})
}

// SetAccess replaces the uids and gids allowed to use the key name.
func (s *Service) SetAccess(_ context.Context, c Caller, name string, uids, gids []uint32) (Info, error) {
	if err := checkAllow(uids, gids); err != nil {
		return Info{}, err
	}
	r, err := s.lookup(c, name, "change access of", manage)
	if err != nil {
		return Info{}, err
	}
	err = s.commit(AuditEvent{Event: "key_update", Caller: c, Key: name, Owner: r.Owner, Op: "access"}, func() error {
		return s.update(name, r, false, func(n *record) { n.AllowUIDs, n.AllowGIDs = slices.Clone(uids), slices.Clone(gids) })
	})
	if err != nil {
		return Info{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys[name].info(), nil
}

// SetPIN sets, changes or (with newPIN empty) removes the PIN of the key name. A key that has
// a PIN needs the current one, checked by the signing PAL like a signature's (an incorrect
// one counts towards the lockout). maxTries 0 means DefaultMaxTries.
func (s *Service) SetPIN(ctx context.Context, c Caller, name string, oldPIN, newPIN []byte, maxTries uint8) (Info, error) {
	if len(oldPIN) > MaxPIN || len(newPIN) > MaxPIN {
		return Info{}, fmt.Errorf("%w: PIN longer than %d bytes", ErrBadRequest, MaxPIN)
	}
	r, err := s.lookup(c, name, "change the PIN of", manage)
	if err != nil {
		return Info{}, err
	}
	if maxTries == 0 {
		maxTries = DefaultMaxTries
	}
	st, err := s.call(ctx, r.SignerPAL, "set PIN", pinInput(r.Blob, r.PINState, oldPIN, maxTries, newPIN))
	if err != nil {
		if !errors.Is(err, ErrPINRequired) {
			s.recordRefusal(AuditEvent{Event: "key_update", Caller: c, Key: name, Owner: r.Owner, Op: "pin", Err: err})
		}
		return Info{}, err
	}
	err = s.commit(AuditEvent{Event: "key_update", Caller: c, Key: name, Owner: r.Owner, Op: "pin"}, func() error {
		return s.update(name, r, true, func(n *record) { n.PINState = st })
	})
	if err != nil {
		return Info{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys[name].info(), nil
}

// ProcGroups returns the supplementary groups of process pid, read from /proc/PID/status. The
// daemon calls it when it accepts a connection, right after SO_PEERCRED: a process that exits
// and whose pid is reused in between would lend its successor's groups, which is why a front
// end reads them at accept (the peer is still connected) and never later.
func ProcGroups(pid int32) ([]uint32, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		var out []uint32
		for _, f := range strings.Fields(rest) {
			g, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("groups of pid %d: %q: %w", pid, f, err)
			}
			out = append(out, uint32(g))
		}
		return out, nil
	}
	return nil, fmt.Errorf("groups of pid %d: no Groups line", pid)
}

// Show returns the key name to whoever may use or manage it (`palisade key show`): unlike
// Find, an admin who may not sign with a key may still see it.
func (s *Service) Show(c Caller, name string) (Info, error) {
	r, err := s.lookup(c, name, "show", either)
	if err != nil {
		return Info{}, err
	}
	return r.info(), nil
}

// SetChain stores the certificate chain of the key name (DER, leaf first; empty removes it).
// The leaf must certify the key's public key; the rest is not verified (a CA's chain is the
// relying party's to check).
func (s *Service) SetChain(_ context.Context, c Caller, name string, chain [][]byte) (Info, error) {
	size := 0
	for _, der := range chain {
		size += len(der)
	}
	if len(chain) > MaxChain || size > MaxChainSize {
		return Info{}, fmt.Errorf("%w: chain of %d certificates, %d bytes (max %d, %d bytes)", ErrBadRequest, len(chain), size, MaxChain, MaxChainSize)
	}
	for i, der := range chain {
		if _, err := x509.ParseCertificate(der); err != nil {
			return Info{}, fmt.Errorf("%w: certificate %d: %w", ErrBadRequest, i, err)
		}
	}
	r, err := s.lookup(c, name, "set the chain of", manage)
	if err != nil {
		return Info{}, err
	}
	if len(chain) > 0 {
		leaf, _ := x509.ParseCertificate(chain[0])
		pub, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
		if err != nil || !bytes.Equal(pub, r.Public) {
			return Info{}, fmt.Errorf("%w: the first certificate (subject %q) is not for key %q's public key", ErrBadRequest, leaf.Subject.String(), name)
		}
	}
	cp := make([][]byte, len(chain))
	for i, der := range chain {
		cp[i] = bytes.Clone(der)
	}
	err = s.commit(AuditEvent{Event: "key_update", Caller: c, Key: name, Owner: r.Owner, Op: "chain"}, func() error {
		return s.update(name, r, false, func(n *record) { n.Chain = cp })
	})
	if err != nil {
		return Info{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys[name].info(), nil
}

// ImportMeasurement is the pseudo-measurement of the µTPM that imports keys: SHA-256 of
// "palisade key import v1". No PAL image measures to it (a measurement hashes a domain-separated
// encoding of an image), so a blob it made is known to hold an imported key.
var ImportMeasurement = sha256.Sum256([]byte("palisade key import v1"))

// ImportOptions describe a key to import: an existing private key, as PKCS#8 DER, and the
// same access, PIN and signing PAL as CreateOptions (whose Alg is ignored: the key has one).
type ImportOptions struct {
	CreateOptions
	PKCS8 []byte
}

// Import makes an existing private key a named key bound to the signing PAL, owned by c, and
// marks it imported wherever it shows (Info.Imported, key attestation). The key existed
// outside the µTPM before: Palisade cannot vouch for where else it is. The daemon clears
// o.PKCS8 after sealing it.
func (s *Service) Import(ctx context.Context, c Caller, o ImportOptions) (Info, error) {
	defer clear(o.PKCS8)
	if err := CheckName(o.Name); err != nil {
		return Info{}, err
	}
	if err := o.checkAccess(); err != nil {
		return Info{}, err
	}
	if len(o.PKCS8) == 0 || len(o.PKCS8) > 16<<10 {
		return Info{}, fmt.Errorf("%w: private key of %d bytes (PKCS#8 DER, 1..16384)", ErrBadRequest, len(o.PKCS8))
	}
	signer, signerImg, err := s.newKeySigner(ctx, o.CreateOptions)
	if err != nil {
		return Info{}, err
	}
	blob, pub, alg, err := s.importer.KeyImport(o.PKCS8, utpm.Policy{Target: utpm.Digest(signer)})
	if err != nil {
		if errors.Is(err, utpm.ErrInvalid) || errors.Is(err, utpm.ErrUnsupported) {
			return Info{}, fmt.Errorf("%w: %w (want ECDSA P-256, Ed25519, RSA-2048 or RSA-3072 in PKCS#8)", ErrBadRequest, err)
		}
		return Info{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	r := &record{
		Name: o.Name, Alg: algOf(alg), Public: pub, Owner: c.UID,
		AllowUIDs: slices.Clone(o.AllowUIDs), AllowGIDs: slices.Clone(o.AllowGIDs), Blob: blob,
		Imported: true, SignerPAL: signer, Created: time.Now().UTC().Truncate(time.Second),
	}
	return s.finish(ctx, c, r, o.CreateOptions, signerImg, "key_import")
}

func algOf(a utpm.KeyAlg) Alg {
	switch a {
	case utpm.KeyECDSAP256:
		return ECDSAP256
	case utpm.KeyEd25519:
		return Ed25519
	case utpm.KeyRSA2048:
		return RSA2048
	}
	return RSA3072
}
