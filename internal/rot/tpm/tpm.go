// Package tpm is the "tpm" root of trust (DESIGN §6): a TPM 2.0 reached through /dev/tpmrm0 or
// a swtpm Unix socket, driven with go-tpm's direct tpm2 API.
//
// At Open, as TrustVisor at boot: the visor PCR is reset (when resettable), the visor
// measurement extended, the µTPM master secret unsealed (it is sealed with PolicyPCR to that
// PCR value, or with PolicyAuthorize by an administrator key that signs visor builds' PCR
// policies; created on first run), a fresh identity key generated and its hash extended, and a
// cap extended so nothing can unseal the master secret while the visor runs. The extends are
// kept as an event log; Endorse quotes the PCR with an attestation key so a verifier can replay
// the log (attest.Verify).
package tpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/palisade-project/palisade/internal/atomicfile"
	"github.com/palisade-project/palisade/internal/rot"
	"github.com/palisade-project/palisade/internal/utpm"
)

// DefaultPCR is PCR 23: the PC Client profile lets locality 0 reset it, so the visor can
// restart without a reboot (docs/attestation.md §5 discusses the trade-off).
const DefaultPCR = 23

// DefaultDevice is the kernel's TPM resource manager.
const DefaultDevice = "/dev/tpmrm0"

// DefaultNVCounterIndex is the owner NV index of the counter that anchors persisted state.
const DefaultNVCounterIndex = 0x01805053

// Errors callers can test for.
var (
	// ErrPolicy: the master secret is sealed to another PCR state: this visor's executable or
	// configuration differs from the one that created it (or the PCR was tampered with).
	ErrPolicy = errors.New("tpm: master secret is sealed to another visor measurement (PCR policy check failed)")
	// ErrPCRNotFresh: a non-resettable PCR was already extended since boot.
	ErrPCRNotFresh = errors.New("tpm: visor PCR is not fresh (non-resettable PCR already extended since boot: reboot to restart the visor)")
	// ErrClosed: the root was closed.
	ErrClosed = errors.New("tpm: root of trust is closed")
)

// VisorInputs is what is measured as the visor.
type VisorInputs struct {
	Executable    string // path of the visor executable; "" means os.Executable()
	Configuration []byte // the configuration as loaded (its exact bytes)
}

// Config configures Open.
type Config struct {
	// Device is a TPM character device or "swtpm:/path/to/socket"; "" means DefaultDevice.
	Device string
	// StateDir holds the sealed master secret and the counter state; it must exist or be
	// creatable, and be private to the visor.
	StateDir string
	// PCR is the visor PCR in the SHA-256 bank; 0 means DefaultPCR. PCRs 16 and 23 are reset
	// at each Open; any other must still be zero (fresh from boot).
	PCR int
	// Visor is measured into the PCR.
	Visor VisorInputs
	// NVCounterIndex is the NV counter anchoring persisted state; 0 means the default.
	NVCounterIndex uint32
	// EKChain are the DER certificates between the EK certificate and the vendor's root,
	// issuer first, sent with the EK certificate in evidence (at most 8). Open checks that
	// each signs the one before it, starting with the EK certificate read from NV.
	EKChain [][]byte
	// Authority, when set, is the administrator key (ECDSA P-256) that authorizes visor
	// builds: a master secret created with it is sealed with TPM2_PolicyAuthorize by this key
	// instead of PolicyPCR, and any visor with an Authorization for its own measurement
	// unseals it (docs/attestation.md §6.1). Nil: plain PolicyPCR (the default).
	Authority *ecdsa.PublicKey
	// Authorizations are encoded Authorizations (AuthorizeVisor), besides the files of
	// StateDir/authorizations/; the one for this visor's measurement is used.
	Authorizations [][]byte
}

// Root is an opened TPM root of trust. It implements rot.RootOfTrust.
type Root struct {
	mu          sync.Mutex // serialises TPM commands
	tpm         transport.TPMCloser
	pcr         uint32
	visor       utpm.Digest
	master      []byte
	identity    *ecdsa.PrivateKey
	identityDER []byte
	events      []Event
	ak          tpm2.NamedHandle
	akPublic    []byte // TPMT_PUBLIC
	ekCert      []byte
	ekChain     [][]byte
	counters    *Counters
	flushed     int      // leftover objects and sessions flushed at Open
	lock        *os.File // flock of STATE_DIR/lock, held while the Root is open
	watch       *watchedTPM
	closed      bool
}

var _ rot.RootOfTrust = (*Root)(nil)

// Open runs the visor start sequence on the TPM. It fails with ErrPolicy (wrapped) when the
// visor measurement differs from the one the master secret was sealed to.
func Open(ctx context.Context, cfg Config) (*Root, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("tpm: Config.StateDir is required")
	}
	if cfg.PCR == 0 {
		cfg.PCR = DefaultPCR
	}
	if cfg.PCR < 0 || cfg.PCR > 23 {
		return nil, fmt.Errorf("tpm: PCR %d out of range 1..23", cfg.PCR)
	}
	if cfg.Device == "" {
		cfg.Device = DefaultDevice
	}
	if cfg.NVCounterIndex == 0 {
		cfg.NVCounterIndex = DefaultNVCounterIndex
	}
	// Durable before the TPM is touched: an NV counter defined for a state directory whose
	// entry a crash of the machine then lost would refuse every start as a rollback.
	if err := atomicfile.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("tpm: state dir: %w", err)
	}
	// One Root per state directory: two would each write the counters file from their own
	// view of it, and the later write would take back the other's increments.
	lock, err := os.OpenFile(filepath.Join(cfg.StateDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tpm: lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("tpm: state dir %s is in use by another visor: %w", cfg.StateDir, err)
	}
	// Temporary files left by a visor killed between writing and renaming are garbage: the
	// real files were never replaced by them, and under the lock none is being written now.
	stale, _ := filepath.Glob(filepath.Join(cfg.StateDir, atomicfile.TempPattern))
	for _, f := range stale {
		os.Remove(f)
	}
	visor, err := measureVisorInputs(cfg.Visor)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("tpm: %w", err)
	}
	t, err := OpenDevice(cfg.Device)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("tpm: %w", err)
	}
	w := watch(t)
	r := &Root{tpm: w, watch: w, lock: lock, pcr: uint32(cfg.PCR), visor: visor, ekChain: cfg.EKChain}
	if err := r.start(ctx, cfg); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func measureVisorInputs(v VisorInputs) (utpm.Digest, error) {
	exe := v.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return utpm.Digest{}, fmt.Errorf("visor executable: %w", err)
		}
	}
	f, err := os.Open(exe)
	if err != nil {
		return utpm.Digest{}, fmt.Errorf("visor executable: %w", err)
	}
	defer f.Close()
	return MeasureVisor(f, v.Configuration)
}

func (r *Root) start(ctx context.Context, cfg Config) error {
	// A real TPM is started by firmware; a fresh swtpm may not be.
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(r.tpm); err != nil &&
		!errors.Is(err, tpm2.TPMRCInitialize) {
		return fmt.Errorf("tpm: startup: %w", err)
	}
	if !hasResourceManager(cfg.Device) {
		n, err := flushLeftovers(r.tpm)
		if err != nil {
			return err
		}
		r.flushed = n
	}
	if err := r.freshPCR(); err != nil {
		return err
	}
	if err := r.extend(r.visor, EventVisor); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	master, err := r.masterSecret(cfg)
	if err != nil {
		return err
	}
	r.master = master
	if r.identity, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return fmt.Errorf("tpm: identity key: %w", err)
	}
	if r.identityDER, err = x509.MarshalPKIXPublicKey(&r.identity.PublicKey); err != nil {
		return fmt.Errorf("tpm: identity key: %w", err)
	}
	if err := r.extend(sha256.Sum256(r.identityDER), EventIdentity); err != nil {
		return err
	}
	if err := r.extend(CapDigest(), EventCap); err != nil {
		return err
	}
	if err := r.loadAK(); err != nil {
		return err
	}
	r.ekCert = r.readEKCert()
	if err := checkEKChain(r.ekCert, cfg.EKChain); err != nil {
		return err
	}
	macKey, err := hkdf.Key(sha256.New, master, nil, "palisade.rot.counters.v1", 32)
	if err != nil {
		return fmt.Errorf("tpm: derive counter key: %w", err)
	}
	r.counters, err = openCounters(&r.mu, r.tpm, filepath.Join(cfg.StateDir, "counters"),
		tpm2.TPMHandle(cfg.NVCounterIndex), macKey)
	return err
}

func (r *Root) pcrSelection() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(uint(r.pcr)),
	}}}
}

// freshPCR resets a resettable PCR, or checks that another one is still zero.
func (r *Root) freshPCR() error {
	if r.pcr == 16 || r.pcr == 23 {
		_, err := tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{
			Handle: tpm2.TPMHandle(r.pcr), Auth: tpm2.PasswordAuth(nil)}}.Execute(r.tpm)
		if err != nil {
			return fmt.Errorf("tpm: reset PCR %d: %w", r.pcr, err)
		}
		return nil
	}
	v, err := r.readPCR()
	if err != nil {
		return err
	}
	if v != (utpm.Digest{}) {
		return fmt.Errorf("%w: PCR %d = %x", ErrPCRNotFresh, r.pcr, v)
	}
	return nil
}

func (r *Root) readPCR() (utpm.Digest, error) {
	rsp, err := tpm2.PCRRead{PCRSelectionIn: r.pcrSelection()}.Execute(r.tpm)
	if err != nil {
		return utpm.Digest{}, fmt.Errorf("tpm: read PCR %d: %w", r.pcr, err)
	}
	if len(rsp.PCRValues.Digests) != 1 || len(rsp.PCRValues.Digests[0].Buffer) != 32 {
		return utpm.Digest{}, fmt.Errorf("tpm: read PCR %d: SHA-256 bank not active", r.pcr)
	}
	return utpm.Digest(rsp.PCRValues.Digests[0].Buffer), nil
}

func (r *Root) extend(d utpm.Digest, kind string) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(r.pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}.Execute(r.tpm)
	if err != nil {
		return fmt.Errorf("tpm: extend PCR %d (%s): %w", r.pcr, kind, err)
	}
	r.events = append(r.events, Event{PCR: r.pcr, Digest: d, Kind: kind})
	return nil
}

// Mode implements rot.RootOfTrust.
func (r *Root) Mode() string { return "tpm" }

// IdentityKey implements rot.RootOfTrust: the identity key, fresh at every Open.
func (r *Root) IdentityKey() *ecdsa.PrivateKey { return r.identity }

// Platform implements rot.RootOfTrust.
func (r *Root) Platform() utpm.PlatformConfig {
	return utpm.PlatformConfig{
		MasterSecret: r.master,
		Identity:     r.identity,
		Visor:        r.visor,
		Rooted:       true,
		Counters:     r.counters,
	}
}

// Visor is the visor measurement extended at Open.
func (r *Root) Visor() utpm.Digest { return r.visor }

// PCR is the visor PCR.
func (r *Root) PCR() int { return int(r.pcr) }

// EventLog is a copy of the extends done at Open, in order.
func (r *Root) EventLog() []Event { return append([]Event(nil), r.events...) }

// AKPublic is the attestation key's TPMT_PUBLIC.
func (r *Root) AKPublic() []byte { return r.akPublic }

// EKCertificate is the DER EK certificate read from NV, or nil.
func (r *Root) EKCertificate() []byte { return r.ekCert }

// LeftoversFlushed is how many transient objects and sessions Open found loaded and flushed
// on a TPM without a resource manager (swtpm's socket, /dev/tpm0): non-zero means a previous
// client, such as a palisaded killed with SIGKILL, died holding them.
func (r *Root) LeftoversFlushed() int { return r.flushed }

// Counters is the NV-anchored counter store (also in Platform().Counters).
func (r *Root) Counters() *Counters { return r.counters }

// Endorse implements rot.RootOfTrust: a TPM2_Quote of the visor PCR by the AK, qualified with
// QualifyingData(identity, nonce), plus the event log and the AK public (docs/attestation.md).
func (r *Root) Endorse(ctx context.Context, nonce []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(nonce) > utpm.MaxNonce {
		return nil, fmt.Errorf("tpm: endorse: nonce of %d bytes (max %d)", len(nonce), utpm.MaxNonce)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	q, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: r.ak.Handle, Name: r.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: QualifyingData(r.identityDER, nonce)},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      r.pcrSelection(),
	}.Execute(r.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: quote: %w", err)
	}
	e := Endorsement{
		Quoted:    q.Quoted.Bytes(),
		Signature: tpm2.Marshal(q.Signature),
		AKPublic:  r.akPublic,
		PCR:       r.pcr,
		Events:    r.events,
		EKCert:    r.ekCert,
	}
	if r.ekCert != nil {
		e.EKChain = r.ekChain
	}
	return e.Marshal()
}

// Close flushes the AK and closes the TPM connection. The PCR keeps the cap: nothing can
// unseal the master secret until the next Open resets it (or, for other PCRs, a reboot).
func (r *Root) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.ak.Handle != 0 {
		_, _ = tpm2.FlushContext{FlushHandle: r.ak.Handle}.Execute(r.tpm)
	}
	clear(r.master)
	err := r.tpm.Close()
	r.lock.Close() // closing the descriptor releases the flock
	return err
}
