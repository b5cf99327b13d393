package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/palisade-project/palisade/internal/config"
)

// DefaultVersionAnchorIndex is the NV counter that anchors trusted-configuration versions; the
// index after it (DefaultVersionAnchorIndex+1) holds the counter's base. Both are separate
// from the µTPM counters' index (DefaultNVCounterIndex), so the CLI can advance configuration
// versions without the visor's master secret.
const DefaultVersionAnchorIndex = 0x01805054

// MaxVersionStep bounds one Advance: each version step is one TPM2_NV_Increment (a few
// milliseconds on a real TPM), so configuration versions should count 1, 2, 3, … rather than
// encode dates.
const MaxVersionStep = 4096

// ErrVersionAnchor: the anchor refused an operation (a step larger than MaxVersionStep, a
// version below the anchor) or its NV indices are not what Palisade created.
var ErrVersionAnchor = errors.New("tpm: configuration version anchor")

// VersionAnchor is a config.VersionAnchor backed by a TPM NV counter (TPM_NT_COUNTER), which
// the TPM only ever increments: the anchored version is the counter's value minus a base.
//
// A TPM counter starts at the highest value any counter of the TPM ever had, not at zero, so
// the base (the counter's value when the anchor was created, version 0) is kept in a second,
// ordinary NV index written once and then write-locked for good (TPMA_NV_WRITEDEFINE +
// TPM2_NV_WriteLock): neither a restored state directory nor a write to the TPM lowers the
// anchored version. Only undefining the indices does, which needs the owner hierarchy's
// authorization (docs/configurations.md §4).
type VersionAnchor struct {
	mu      *sync.Mutex // serialises TPM commands; shared with a Root when made by one
	tpm     transport.TPM
	closer  transport.TPMCloser // set when the anchor owns the connection
	counter tpm2.NamedHandle
	base    uint64
}

var _ config.VersionAnchor = (*VersionAnchor)(nil)

// OpenVersionAnchor opens the anchor at NV index (0: DefaultVersionAnchorIndex) on device
// ("/dev/tpmrm0" or "swtpm:/path/to/socket", "" meaning DefaultDevice), creating its two NV
// indices on first use. It holds its own TPM connection: Close it. For use where no visor
// root is open (the CLI); a visor uses Root.VersionAnchor.
func OpenVersionAnchor(device string, index uint32) (*VersionAnchor, error) {
	if device == "" {
		device = DefaultDevice
	}
	t, err := OpenDevice(device)
	if err != nil {
		return nil, fmt.Errorf("tpm: version anchor: %w", err)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(t); err != nil &&
		!errors.Is(err, tpm2.TPMRCInitialize) {
		t.Close()
		return nil, fmt.Errorf("tpm: startup: %w", err)
	}
	a, err := newVersionAnchor(&sync.Mutex{}, t, index)
	if err != nil {
		t.Close()
		return nil, err
	}
	a.closer = t
	return a, nil
}

// VersionAnchor returns the configuration version anchor at NV index (0: the default) over
// the root's TPM connection.
func (r *Root) VersionAnchor(index uint32) (*VersionAnchor, error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return newVersionAnchor(&r.mu, r.tpm, index)
}

// Close closes the TPM connection of an anchor made by OpenVersionAnchor (a no-op for one made
// by a Root).
func (a *VersionAnchor) Close() error {
	if a.closer == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.closer
	a.closer = nil
	return c.Close()
}

func newVersionAnchor(mu *sync.Mutex, t transport.TPM, index uint32) (*VersionAnchor, error) {
	if index == 0 {
		index = DefaultVersionAnchorIndex
	}
	mu.Lock()
	defer mu.Unlock()
	a := &VersionAnchor{mu: mu, tpm: t}
	// The counter first, then the base: the base is written from the counter's value before
	// any Advance, so a crash between the steps is completed by the next open.
	nvc := &Counters{tpm: t}
	if _, err := nvc.ensureNV(tpm2.TPMHandle(index)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVersionAnchor, err)
	}
	a.counter = nvc.nv
	base, err := a.ensureBase(tpm2.TPMHandle(index + 1))
	if err != nil {
		return nil, err
	}
	a.base = base
	return a, nil
}

func (a *VersionAnchor) ensureBase(idx tpm2.TPMHandle) (uint64, error) {
	want := tpm2.TPMSNVPublic{
		NVIndex: idx,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			AuthWrite: true, AuthRead: true, OwnerRead: true, NoDA: true, WriteDefine: true,
			NT: tpm2.TPMNTOrdinary,
		},
		DataSize: 8,
	}
	auth := func(h tpm2.NamedHandle) tpm2.AuthHandle {
		return tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)}
	}
	var pub tpm2.TPMSNVPublic
	rp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(a.tpm)
	switch {
	case err == nil:
		got, err := rp.NVPublic.Contents()
		if err != nil {
			return 0, fmt.Errorf("%w: NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
		}
		if got.Attributes.NT != tpm2.TPMNTOrdinary || got.DataSize != 8 || !got.Attributes.WriteDefine {
			return 0, fmt.Errorf("%w: NV index %#x exists but is not Palisade's version base", ErrVersionAnchor, uint32(idx))
		}
		pub = *got
	case errors.Is(err, tpm2.TPMRCHandle):
		if _, err := (tpm2.NVDefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			PublicInfo: tpm2.New2B(want),
		}).Execute(a.tpm); err != nil {
			return 0, fmt.Errorf("%w: define NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
		}
		pub = want
	default:
		return 0, fmt.Errorf("%w: NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
	}
	name, err := tpm2.NVName(&pub)
	if err != nil {
		return 0, fmt.Errorf("%w: NV name: %w", ErrVersionAnchor, err)
	}
	h := tpm2.NamedHandle{Handle: idx, Name: *name}
	if !pub.Attributes.Written {
		c, err := a.readCounter()
		if err != nil {
			return 0, err
		}
		if _, err := (tpm2.NVWrite{
			AuthHandle: auth(h), NVIndex: h,
			Data: tpm2.TPM2BMaxNVBuffer{Buffer: binary.BigEndian.AppendUint64(nil, c)},
		}).Execute(a.tpm); err != nil {
			return 0, fmt.Errorf("%w: write version base: %w", ErrVersionAnchor, err)
		}
		// The name changes once written.
		if rp, err = (tpm2.NVReadPublic{NVIndex: idx}).Execute(a.tpm); err != nil {
			return 0, fmt.Errorf("%w: NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
		}
		h.Name = rp.NVName
		p, _ := rp.NVPublic.Contents()
		pub = *p
	}
	if !pub.Attributes.WriteLocked {
		if _, err := (tpm2.NVWriteLock{AuthHandle: auth(h), NVIndex: h}).Execute(a.tpm); err != nil {
			return 0, fmt.Errorf("%w: lock version base: %w", ErrVersionAnchor, err)
		}
		if rp, err = (tpm2.NVReadPublic{NVIndex: idx}).Execute(a.tpm); err != nil {
			return 0, fmt.Errorf("%w: NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
		}
		h.Name = rp.NVName
	}
	rsp, err := tpm2.NVRead{AuthHandle: auth(h), NVIndex: h, Size: 8}.Execute(a.tpm)
	if err != nil {
		return 0, fmt.Errorf("%w: read version base: %w", ErrVersionAnchor, err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("%w: version base of %d bytes", ErrVersionAnchor, len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}

func (a *VersionAnchor) readCounter() (uint64, error) {
	c := Counters{tpm: a.tpm, nv: a.counter}
	v, err := c.readNV()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrVersionAnchor, err)
	}
	return v, nil
}

// Read implements config.VersionAnchor: the highest version ever advanced to (0 at first).
func (a *VersionAnchor) Read() (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.read()
}

func (a *VersionAnchor) read() (uint64, error) {
	c, err := a.readCounter()
	if err != nil {
		return 0, err
	}
	if c < a.base {
		return 0, fmt.Errorf("%w: NV counter %#x at %d is below its base %d", ErrVersionAnchor, uint32(a.counter.Handle), c, a.base)
	}
	return c - a.base, nil
}

// Advance implements config.VersionAnchor: it increments the NV counter until the anchored
// version is to. A crash part way leaves a version between the old and to, which
// config.State treats as an apply in progress (docs/configurations.md §4). to below the
// anchored version, or more than MaxVersionStep above it, is refused before any increment.
func (a *VersionAnchor) Advance(to uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, err := a.read()
	if err != nil {
		return err
	}
	switch {
	case to < cur:
		return fmt.Errorf("%w: advance to %d below %d: %w", ErrVersionAnchor, to, cur, config.ErrRollback)
	case to-cur > MaxVersionStep:
		return fmt.Errorf("%w: advance from %d to %d is more than %d steps (one NV increment each): number configuration versions consecutively",
			ErrVersionAnchor, cur, to, MaxVersionStep)
	}
	c := Counters{tpm: a.tpm, nv: a.counter}
	for ; cur < to; cur++ {
		if _, err := (tpm2.NVIncrement{
			AuthHandle: tpm2.AuthHandle{Handle: c.nv.Handle, Name: c.nv.Name, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    c.nv,
		}).Execute(a.tpm); err != nil {
			return fmt.Errorf("%w: increment NV counter %#x: %w", ErrVersionAnchor, uint32(c.nv.Handle), err)
		}
	}
	return nil
}
