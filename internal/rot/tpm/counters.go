package tpm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"sync"

	"github.com/palisade-project/palisade/internal/atomicfile"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/palisade-project/palisade/internal/utpm"
)

// Errors of the counter store.
var (
	// ErrRollback: the counter state file is older than the TPM NV counter that anchors it
	// (an old copy was restored, or the file was deleted).
	ErrRollback = errors.New("tpm: counter state rolled back (state file older than its TPM NV counter)")
	// ErrCounterState: the state file is corrupt, forged, or belongs to another master secret,
	// TPM or NV index.
	ErrCounterState = errors.New("tpm: counter state file is invalid")
)

// Counters is a utpm.CounterStore whose state file is anchored in a TPM NV counter
// (TPM_NT_COUNTER): every write carries the NV value it will have after the write, and the NV
// counter is incremented after the file is durable. At open, a file whose anchor is lower than
// the NV counter is refused with ErrRollback. The file is MACed with a key derived from the
// master secret, so it cannot be edited either.
//
// Anchor rule: the file's anchor must equal the NV value, or NV+1 when the visor stopped
// between writing the file and incrementing NV (the increment is then completed at open).
// A value is returned to the caller only after the NV increment, so a restored older file can
// only lose increments nobody was told about.
type Counters struct {
	mu     *sync.Mutex // shared with Root: serialises TPM commands
	tpm    transport.TPM
	path   string
	nv     tpm2.NamedHandle
	key    []byte
	nvVal  uint64 // last known NV counter value
	anchor uint64 // anchor written in the file: nvVal or nvVal+1
	values map[counterKey]uint64
}

var _ utpm.CounterStore = (*Counters)(nil)

type counterKey struct {
	pal utpm.Digest
	id  uint32
}

type counterFile struct {
	Body []byte `cbor:"1,keyasint"`
	MAC  []byte `cbor:"2,keyasint"`
}

type counterBody struct {
	Version uint64         `cbor:"1,keyasint"`
	Anchor  uint64         `cbor:"2,keyasint"`
	Entries []counterEntry `cbor:"3,keyasint"`
}

type counterEntry struct {
	PAL   utpm.Digest `cbor:"1,keyasint"`
	ID    uint32      `cbor:"2,keyasint"`
	Value uint64      `cbor:"3,keyasint"`
}

const maxCounterEntries = 1 << 16

func openCounters(mu *sync.Mutex, t transport.TPM, path string, idx tpm2.TPMHandle, key []byte) (*Counters, error) {
	c := &Counters{mu: mu, tpm: t, path: path, key: key, values: map[counterKey]uint64{}}
	created, err := c.ensureNV(idx)
	if err != nil {
		return nil, err
	}
	if c.nvVal, err = c.readNV(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && created:
		c.anchor = c.nvVal
		if err := c.write(); err != nil {
			return nil, err
		}
		return c, nil
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %s is missing but NV counter %#x exists (value %d); if this is a new installation, undefine the index (tpm2_nvundefine %#x)",
			ErrRollback, path, uint32(idx), c.nvVal, uint32(idx))
	case err != nil:
		return nil, fmt.Errorf("tpm: read counter state: %w", err)
	}
	body, err := c.decode(b)
	if err != nil {
		return nil, err
	}
	switch {
	case body.Anchor < c.nvVal:
		return nil, fmt.Errorf("%w: %s is anchored at %d, NV counter %#x is at %d", ErrRollback, path, body.Anchor, uint32(idx), c.nvVal)
	case body.Anchor > c.nvVal+1:
		return nil, fmt.Errorf("%w: %s is anchored at %d, ahead of NV counter %#x at %d (another TPM or NV index?)", ErrCounterState, path, body.Anchor, uint32(idx), c.nvVal)
	}
	c.anchor = body.Anchor
	for _, e := range body.Entries {
		c.values[counterKey{e.PAL, e.ID}] = e.Value
	}
	if c.anchor == c.nvVal+1 {
		if err := c.incrementNV(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ensureNV defines the NV counter if it does not exist; created says it did not.
func (c *Counters) ensureNV(idx tpm2.TPMHandle) (created bool, err error) {
	want := tpm2.TPMSNVPublic{
		NVIndex: idx,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			AuthWrite: true, AuthRead: true, OwnerRead: true, NoDA: true, NT: tpm2.TPMNTCounter,
		},
		DataSize: 8,
	}
	rp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(c.tpm)
	if err == nil {
		got, err := rp.NVPublic.Contents()
		if err != nil {
			return false, fmt.Errorf("tpm: NV index %#x: %w", uint32(idx), err)
		}
		if got.Attributes.NT != tpm2.TPMNTCounter || got.DataSize != 8 || !got.Attributes.AuthWrite {
			return false, fmt.Errorf("%w: NV index %#x exists but is not Palisade's counter", ErrCounterState, uint32(idx))
		}
		c.nv = tpm2.NamedHandle{Handle: idx, Name: rp.NVName}
		if got.Attributes.Written {
			return false, nil
		}
		// Defined but never incremented (stopped right after defining it): finish creating.
		return true, c.incrementNV()
	}
	if !errors.Is(err, tpm2.TPMRCHandle) {
		return false, fmt.Errorf("tpm: NV index %#x: %w", uint32(idx), err)
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(want),
	}).Execute(c.tpm); err != nil {
		return false, fmt.Errorf("tpm: define NV counter %#x: %w", uint32(idx), err)
	}
	name, err := tpm2.NVName(&want)
	if err != nil {
		return false, fmt.Errorf("tpm: NV counter name: %w", err)
	}
	c.nv = tpm2.NamedHandle{Handle: idx, Name: *name}
	// A counter cannot be read before its first increment.
	return true, c.incrementNV()
}

func (c *Counters) readNV() (uint64, error) {
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: c.nv.Handle, Name: c.nv.Name, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    c.nv,
		Size:       8,
	}.Execute(c.tpm)
	if err != nil {
		return 0, fmt.Errorf("tpm: read NV counter %#x: %w", uint32(c.nv.Handle), err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("tpm: NV counter %#x returned %d bytes", uint32(c.nv.Handle), len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}

// incrementNV increments the NV counter and re-reads it (a TPM counter starts at the highest
// value any counter of the TPM ever had, not at 1).
func (c *Counters) incrementNV() error {
	if _, err := (tpm2.NVIncrement{
		AuthHandle: tpm2.AuthHandle{Handle: c.nv.Handle, Name: c.nv.Name, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    c.nv,
	}).Execute(c.tpm); err != nil {
		return fmt.Errorf("tpm: increment NV counter %#x: %w", uint32(c.nv.Handle), err)
	}
	v, err := c.readNV()
	if err != nil {
		return err
	}
	c.nvVal = v
	return nil
}

func (c *Counters) mac(body []byte) []byte {
	h := hmac.New(sha256.New, c.key)
	h.Write([]byte("palisade.counters.v1\x00"))
	var idx [4]byte
	binary.BigEndian.PutUint32(idx[:], uint32(c.nv.Handle))
	h.Write(idx[:])
	h.Write(body)
	return h.Sum(nil)
}

func (c *Counters) decode(b []byte) (*counterBody, error) {
	var f counterFile
	if err := decMode.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCounterState, c.path, err)
	}
	if !hmac.Equal(f.MAC, c.mac(f.Body)) {
		return nil, fmt.Errorf("%w: %s: MAC mismatch (edited, or written under another master secret)", ErrCounterState, c.path)
	}
	var body counterBody
	if err := decMode.Unmarshal(f.Body, &body); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCounterState, c.path, err)
	}
	if body.Version != 1 || len(body.Entries) > maxCounterEntries {
		return nil, fmt.Errorf("%w: %s: version %d, %d entries", ErrCounterState, c.path, body.Version, len(body.Entries))
	}
	return &body, nil
}

// write persists the values with c.anchor, crash-safely.
func (c *Counters) write() error {
	body := counterBody{Version: 1, Anchor: c.anchor, Entries: make([]counterEntry, 0, len(c.values))}
	for k, v := range c.values {
		body.Entries = append(body.Entries, counterEntry{PAL: k.pal, ID: k.id, Value: v})
	}
	sort.Slice(body.Entries, func(i, j int) bool {
		a, b := body.Entries[i], body.Entries[j]
		if d := bytes.Compare(a.PAL[:], b.PAL[:]); d != 0 {
			return d < 0
		}
		return a.ID < b.ID
	})
	bb, err := encMode.Marshal(body)
	if err != nil {
		return fmt.Errorf("tpm: encode counter state: %w", err)
	}
	fb, err := encMode.Marshal(counterFile{Body: bb, MAC: c.mac(bb)})
	if err != nil {
		return fmt.Errorf("tpm: encode counter state: %w", err)
	}
	if err := atomicfile.WriteFile(c.path, fb, 0o600); err != nil {
		return fmt.Errorf("tpm: write counter state: %w", err)
	}
	return nil
}

// Read implements utpm.CounterStore.
func (c *Counters) Read(pal utpm.Digest, id uint32) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.values[counterKey{pal, id}], nil
}

// Increment implements utpm.CounterStore: the new value is returned once the state file is
// durable and the NV counter anchors it.
func (c *Counters) Increment(pal utpm.Digest, id uint32) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.anchor == c.nvVal+1 { // a previous increment of NV failed: finish it first
		if err := c.incrementNV(); err != nil {
			return 0, err
		}
	}
	k := counterKey{pal, id}
	old := c.values[k]
	if old == math.MaxUint64 {
		return 0, fmt.Errorf("tpm: counter %d of PAL %x is at its maximum", id, pal)
	}
	if _, ok := c.values[k]; !ok && len(c.values) >= maxCounterEntries {
		return 0, fmt.Errorf("tpm: too many counters (max %d)", maxCounterEntries)
	}
	c.values[k] = old + 1
	prevAnchor := c.anchor
	c.anchor = c.nvVal + 1
	if err := c.write(); err != nil {
		c.values[k] = old
		c.anchor = prevAnchor
		return 0, err
	}
	if err := c.incrementNV(); err != nil {
		return 0, err
	}
	return old + 1, nil
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
