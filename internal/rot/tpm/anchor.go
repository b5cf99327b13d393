package tpm

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/palisade-project/palisade/internal/config"
)

// DefaultVersionAnchorIndex is the NV counter that anchors trusted-configuration versions; the
// indices after it hold the counter's base (+1), the history digest (+2, an extend index) and
// the administrator key id (+3). All are separate from the µTPM counters' index
// (DefaultNVCounterIndex), so the CLI can advance configuration versions without the visor's
// master secret.
const DefaultVersionAnchorIndex = 0x01805054

// Offsets of the anchor's NV indices from its counter's.
const (
	offBase    = 1
	offHistory = 2
	offAdmin   = 3
)

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

var _ config.BindingAnchor = (*VersionAnchor)(nil)

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
	base, err := a.ensureBase(tpm2.TPMHandle(index + offBase))
	if err != nil {
		return nil, err
	}
	a.base = base
	for _, want := range []tpm2.TPMSNVPublic{a.historyPublic(), a.adminPublic()} {
		if _, err := a.ensureIndex(want); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// historyPublic is the history digest: an SHA-256 extend index, which only TPM2_NV_Extend
// changes (config.BindingAnchor.ExtendHistory).
func (a *VersionAnchor) historyPublic() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: a.counter.Handle + offHistory,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			AuthWrite: true, AuthRead: true, OwnerRead: true, NoDA: true, NT: tpm2.TPMNTExtend,
		},
		DataSize: 32,
	}
}

// adminPublic is the administrator key id: written once and then write-locked for good, like
// the base; only undefining it (owner authorization: ReplaceAdmin) changes it.
func (a *VersionAnchor) adminPublic() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: a.counter.Handle + offAdmin,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			AuthWrite: true, AuthRead: true, OwnerRead: true, NoDA: true, WriteDefine: true,
			NT: tpm2.TPMNTOrdinary,
		},
		DataSize: 32,
	}
}

// ensureIndex defines the NV index want describes if it does not exist, checks that an
// existing one has its type, size and write-once-ness, and returns its current public area.
func (a *VersionAnchor) ensureIndex(want tpm2.TPMSNVPublic) (*tpm2.TPMSNVPublic, error) {
	got, _, err := a.readPublic(want.NVIndex)
	if errors.Is(err, tpm2.TPMRCHandle) {
		if _, err := (tpm2.NVDefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			PublicInfo: tpm2.New2B(want),
		}).Execute(a.tpm); err != nil {
			return nil, fmt.Errorf("%w: define NV index %#x: %w", ErrVersionAnchor, uint32(want.NVIndex), err)
		}
		return &want, nil
	}
	if err != nil {
		return nil, err
	}
	if got.Attributes.NT != want.Attributes.NT || got.DataSize != want.DataSize ||
		got.Attributes.WriteDefine != want.Attributes.WriteDefine || got.NameAlg != want.NameAlg {
		return nil, fmt.Errorf("%w: NV index %#x exists but is not Palisade's (type %d, %d bytes)",
			ErrVersionAnchor, uint32(want.NVIndex), got.Attributes.NT, got.DataSize)
	}
	return got, nil
}

// readPublic returns an NV index's public area and its handle with its current name (which
// changes when it is first written and when it is locked).
func (a *VersionAnchor) readPublic(idx tpm2.TPMHandle) (*tpm2.TPMSNVPublic, tpm2.NamedHandle, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(a.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, tpm2.NamedHandle{}, err
		}
		return nil, tpm2.NamedHandle{}, fmt.Errorf("%w: NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, tpm2.NamedHandle{}, fmt.Errorf("%w: NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
	}
	return pub, tpm2.NamedHandle{Handle: idx, Name: rp.NVName}, nil
}

func nvAuth(h tpm2.NamedHandle) tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)}
}

// read32 reads a 32-byte NV index; ok is false while it has never been written.
func (a *VersionAnchor) read32(idx tpm2.TPMHandle) (v [32]byte, ok bool, err error) {
	pub, h, err := a.readPublic(idx)
	if err != nil {
		return v, false, err
	}
	if !pub.Attributes.Written {
		return v, false, nil
	}
	rsp, err := tpm2.NVRead{AuthHandle: nvAuth(h), NVIndex: h, Size: 32}.Execute(a.tpm)
	if err != nil {
		return v, false, fmt.Errorf("%w: read NV index %#x: %w", ErrVersionAnchor, uint32(idx), err)
	}
	if len(rsp.Data.Buffer) != 32 {
		return v, false, fmt.Errorf("%w: NV index %#x returned %d bytes", ErrVersionAnchor, uint32(idx), len(rsp.Data.Buffer))
	}
	copy(v[:], rsp.Data.Buffer)
	return v, true, nil
}

// ID implements config.BindingAnchor: the anchor's counter index.
func (a *VersionAnchor) ID() string {
	return fmt.Sprintf("TPM NV index %#x", uint32(a.counter.Handle))
}

// Admin implements config.BindingAnchor. An id written but not yet locked (a bind
// interrupted between the two) is locked now.
func (a *VersionAnchor) Admin() (config.KeyID, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.admin()
}

func (a *VersionAnchor) admin() (config.KeyID, bool, error) {
	idx := a.counter.Handle + offAdmin
	v, ok, err := a.read32(idx)
	if err != nil || !ok {
		return v, ok, err
	}
	pub, h, err := a.readPublic(idx)
	if err != nil {
		return v, false, err
	}
	if !pub.Attributes.WriteLocked {
		if _, err := (tpm2.NVWriteLock{AuthHandle: nvAuth(h), NVIndex: h}).Execute(a.tpm); err != nil {
			return v, false, fmt.Errorf("%w: lock administrator key id: %w", ErrVersionAnchor, err)
		}
	}
	return v, true, nil
}

// BindAdmin implements config.BindingAnchor: it writes kid and write-locks it, if no id is
// bound; it fails if another is.
func (a *VersionAnchor) BindAdmin(kid config.KeyID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bindAdmin(kid)
}

func (a *VersionAnchor) bindAdmin(kid config.KeyID) error {
	got, ok, err := a.admin()
	switch {
	case err != nil:
		return err
	case ok && got != kid:
		return fmt.Errorf("%w: administrator key %s is bound, not %s: %w", ErrVersionAnchor, got, kid, config.ErrAdminNotAnchored)
	case ok:
		return nil
	}
	_, h, err := a.readPublic(a.counter.Handle + offAdmin)
	if err != nil {
		return err
	}
	if _, err := (tpm2.NVWrite{AuthHandle: nvAuth(h), NVIndex: h, Data: tpm2.TPM2BMaxNVBuffer{Buffer: kid[:]}}).Execute(a.tpm); err != nil {
		return fmt.Errorf("%w: write administrator key id: %w", ErrVersionAnchor, err)
	}
	_, _, err = a.admin() // locks it
	return err
}

// HistoryDigest implements config.BindingAnchor: zero until the first ExtendHistory.
func (a *VersionAnchor) HistoryDigest() (config.Measurement, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, _, err := a.read32(a.counter.Handle + offHistory)
	return v, err
}

// ExtendHistory implements config.BindingAnchor with TPM2_NV_Extend: the index becomes
// SHA-256(old ‖ entry), all zeros standing for the value before the first extension.
func (a *VersionAnchor) ExtendHistory(entry config.Measurement) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.extendHistory(entry[:])
}

func (a *VersionAnchor) extendHistory(data []byte) error {
	_, h, err := a.readPublic(a.counter.Handle + offHistory)
	if err != nil {
		return err
	}
	if err := nvExtend(a.tpm, h.Handle, data); err != nil {
		return fmt.Errorf("%w: extend the history digest: %w", ErrVersionAnchor, err)
	}
	return nil
}

// nvExtend sends TPM2_NV_Extend (TPM 2.0 Part 3 §31.7), which go-tpm does not provide, with
// the index's own empty password authorizing it.
func nvExtend(t transport.TPM, idx tpm2.TPMHandle, data []byte) error {
	if len(data) > 1024 {
		return fmt.Errorf("NV_Extend of %d bytes", len(data))
	}
	var cmd []byte
	cmd = binary.BigEndian.AppendUint16(cmd, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, 0) // size, set below
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCNVExtend))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(idx)) // authHandle: the index
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(idx)) // nvIndex
	// One password session: handle, empty nonce, attributes, empty password.
	cmd = binary.BigEndian.AppendUint32(cmd, 9)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRSPW))
	cmd = binary.BigEndian.AppendUint16(cmd, 0)
	cmd = append(cmd, 0)
	cmd = binary.BigEndian.AppendUint16(cmd, 0)
	cmd = binary.BigEndian.AppendUint16(cmd, uint16(len(data)))
	cmd = append(cmd, data...)
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
	rsp, err := t.Send(cmd)
	if err != nil {
		return err
	}
	if len(rsp) < 10 {
		return fmt.Errorf("NV_Extend: response of %d bytes", len(rsp))
	}
	if rc := binary.BigEndian.Uint32(rsp[6:]); rc != 0 {
		return tpm2.TPMRC(rc)
	}
	return nil
}

// adminReplaced is what ReplaceAdmin folds into the history digest, so the TPM's digest keeps
// a trace of the replacement.
const adminReplacedTag = "palisade.admin-replaced.v1\x00"

// ReplaceAdmin is the administrator replacement ceremony: if the anchor holds old (or no key),
// it undefines the write-locked id (which needs the owner hierarchy's authorization, empty by
// default), binds next in its place, and folds SHA-256(tag ‖ old ‖ next) into the history
// digest. It returns that record's hash. A state bound to the old key's history no longer
// matches the digest afterwards: the ceremony is for a new state directory.
func (a *VersionAnchor) ReplaceAdmin(old, next config.KeyID) (config.Measurement, error) {
	if next == old {
		// The history would record a replacement that did not happen, and the key's own
		// state would then be refused as rewritten (found through the CLI, which refuses it
		// too; the anchor is the place that must).
		return config.Measurement{}, fmt.Errorf("%w: the new administrator key is the one it would replace (%s)", ErrVersionAnchor, old)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	got, ok, err := a.admin()
	if err != nil {
		return config.Measurement{}, err
	}
	if ok && got != old {
		return config.Measurement{}, fmt.Errorf("%w: the anchor holds administrator key %s, not %s", ErrVersionAnchor, got, old)
	}
	if ok {
		_, h, err := a.readPublic(a.counter.Handle + offAdmin)
		if err != nil {
			return config.Measurement{}, err
		}
		if _, err := (tpm2.NVUndefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    h,
		}).Execute(a.tpm); err != nil {
			return config.Measurement{}, fmt.Errorf("%w: undefine the administrator key id (owner authorization): %w", ErrVersionAnchor, err)
		}
		if _, err := a.ensureIndex(a.adminPublic()); err != nil {
			return config.Measurement{}, err
		}
	}
	if err := a.bindAdmin(next); err != nil {
		return config.Measurement{}, err
	}
	rec := sha256.Sum256(append(append([]byte(adminReplacedTag), old[:]...), next[:]...))
	if err := a.extendHistory(rec[:]); err != nil {
		return config.Measurement{}, err
	}
	return rec, nil
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

// CheckAdvance implements config.BindingAnchor: the refusals of Advance, without incrementing.
func (a *VersionAnchor) CheckAdvance(to uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, err := a.read()
	if err != nil {
		return err
	}
	return checkStep(cur, to)
}

func checkStep(cur, to uint64) error {
	switch {
	case to < cur:
		return fmt.Errorf("%w: advance to %d below %d: %w", ErrVersionAnchor, to, cur, config.ErrRollback)
	case to-cur > MaxVersionStep:
		return fmt.Errorf("%w: advance from %d to %d is more than %d steps (one NV increment each): number configuration versions consecutively",
			ErrVersionAnchor, cur, to, MaxVersionStep)
	}
	return nil
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
	if err := checkStep(cur, to); err != nil {
		return err
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
