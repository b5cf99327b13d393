package utpm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

// Sealed blob layout (docs/formats.md §2). The whole header is the AEAD's additional data, so
// every field is authenticated; the fields before the nonce are also checked in clear, in a
// fixed order, to return a precise error.
const (
	blobMagic   = "PLSB"
	blobVersion = 1

	blobData byte = 1
	blobKey  byte = 2

	// Target kinds: a PAL measurement, or a name under a signer (the target field then holds
	// the signer, and u8 len ‖ name follows it).
	targetMeasurement byte = 1
	targetName        byte = 2

	platformIDSize = 8
	nonceSize      = 12
	tagSize        = 16

	offType   = 4 + 1
	offKind   = offType + 1
	offTarget = offKind + 1
	// Target kind 2 inserts u8 len ‖ name before the mask; fixedHeader is the header of kind
	// 1 without PCR values.
	offMask     = offTarget + 32
	fixedHeader = offMask + 1 + 32 + platformIDSize + nonceSize

	// maxCiphertext bounds the ciphertext of any blob: sealed data, or a key (far smaller).
	maxCiphertext = MaxSealData + tagSize
)

// header is the parsed clear part of a sealed blob.
type header struct {
	typ      byte
	kind     byte
	target   Digest // the measurement (kind 1) or the signer (kind 2)
	name     string // kind 2 only
	mask     uint8
	pcrs     [NumPCRs]Digest // only the entries selected by mask are meaningful
	creator  Digest
	platform [platformIDSize]byte
	nonce    []byte
	len      int
}

// parseHeader parses the clear header of blob; any structural problem is ErrMalformed.
func parseHeader(blob []byte) (header, error) {
	var h header
	if len(blob) < fixedHeader+tagSize {
		return h, fmt.Errorf("%d bytes: %w", len(blob), ErrMalformed)
	}
	if string(blob[:4]) != blobMagic || blob[4] != blobVersion {
		return h, fmt.Errorf("bad magic or version: %w", ErrMalformed)
	}
	h.typ = blob[offType]
	if h.typ != blobData && h.typ != blobKey {
		return h, fmt.Errorf("blob type %d: %w", h.typ, ErrMalformed)
	}
	h.kind = blob[offKind]
	copy(h.target[:], blob[offTarget:])
	off := offMask
	switch h.kind {
	case targetMeasurement:
	case targetName:
		n := int(blob[off]) // in bounds: the length check above covers a kind-1 header
		off++
		if len(blob) < off+n+1 { // the name and the PCR mask after it
			return h, fmt.Errorf("name of %d bytes: %w", n, ErrMalformed)
		}
		h.name = string(blob[off : off+n])
		if !ValidName(h.name) || h.target == (Digest{}) {
			return h, fmt.Errorf("name %q under signer %x: %w", h.name, h.target[:4], ErrMalformed)
		}
		off += n
	default:
		return h, fmt.Errorf("target kind %d: %w", h.kind, ErrMalformed)
	}
	h.mask = blob[off]
	off++
	h.len = off + 32*bits.OnesCount8(h.mask) + 32 + platformIDSize + nonceSize
	if len(blob) < h.len+tagSize {
		return h, fmt.Errorf("%d bytes: %w", len(blob), ErrMalformed)
	}
	if len(blob)-h.len > maxCiphertext {
		return h, fmt.Errorf("ciphertext of %d bytes: %w", len(blob)-h.len, ErrMalformed)
	}
	for i := 0; i < NumPCRs; i++ {
		if h.mask&(1<<i) != 0 {
			copy(h.pcrs[i][:], blob[off:])
			off += 32
		}
	}
	copy(h.creator[:], blob[off:])
	off += 32
	copy(h.platform[:], blob[off:])
	off += platformIDSize
	h.nonce = blob[off : off+nonceSize]
	return h, nil
}

// Seal encrypts data under policy p (docs/formats.md §2). The caller is recorded as creator.
func (t *TPM) Seal(data []byte, p Policy) ([]byte, error) {
	if len(data) > MaxSealData {
		return nil, fmt.Errorf("seal: %d bytes: %w", len(data), ErrTooLarge)
	}
	b, err := t.seal(blobData, data, p)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return b, nil
}

func (t *TPM) seal(typ byte, plain []byte, p Policy) ([]byte, error) {
	kind, target := targetMeasurement, p.Target
	if p.Name != "" {
		if !ValidName(p.Name) || p.Signer == (Digest{}) || p.Target != (Digest{}) {
			return nil, fmt.Errorf("policy name %q: %w", p.Name, ErrInvalid)
		}
		// Refused here too, not only at unseal: a PAL learns at once that this platform
		// cannot serve such blobs instead of sealing data nobody can open.
		if t.p.authorizer() == nil {
			return nil, fmt.Errorf("name under a signer: no trusted configuration: %w", ErrUnsupported)
		}
		kind, target = targetName, p.Signer
	} else if target == (Digest{}) {
		target = t.m
	}
	vals := p.PCRValues
	if p.CurrentPCRs {
		vals = t.PCRs()
	}
	hl := fixedHeader + 32*bits.OnesCount8(p.PCRMask)
	if kind == targetName {
		hl += 1 + len(p.Name)
	}
	out := make([]byte, hl, hl+len(plain)+tagSize)
	copy(out, blobMagic)
	out[4] = blobVersion
	out[offType] = typ
	out[offKind] = kind
	off := offTarget + copy(out[offTarget:], target[:])
	if kind == targetName {
		out[off] = byte(len(p.Name))
		off += 1 + copy(out[off+1:], p.Name)
	}
	out[off] = p.PCRMask
	off++
	for i := 0; i < NumPCRs; i++ {
		if p.PCRMask&(1<<i) != 0 {
			off += copy(out[off:], vals[i][:])
		}
	}
	off += copy(out[off:], t.m[:])
	off += copy(out[off:], t.p.id[:])
	nonce := out[off : off+nonceSize]
	// Random 96-bit nonces: the collision bound (2^32 blobs per key) is far above what one
	// (type, target) pair seals.
	if _, err := io.ReadFull(t.p.rand, nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w: %w", ErrInternal, err)
	}
	a, err := t.p.aead(typ, kind, target, p.Name)
	if err != nil {
		return nil, err
	}
	ct := a.Seal(out[hl:hl], nonce, plain, out[:hl])
	return out[:hl+len(ct)], nil
}

// Unseal decrypts a data blob sealed for the caller and returns the data and the measurement
// of the PAL that sealed it. The checks run in a fixed order so each failure has its own
// error: ErrMalformed, ErrForeign, ErrWrongPAL (or, for a blob sealed to a name under a
// signer, ErrNotAuthorized or ErrUnsupported), ErrPCRMismatch, ErrTampered, ErrWrongType.
func (t *TPM) Unseal(blob []byte) ([]byte, Digest, error) {
	h, err := t.check(blob)
	if err != nil {
		return nil, Digest{}, fmt.Errorf("unseal: %w", err)
	}
	plain, err := t.p.open(&h, blob)
	if err != nil {
		return nil, Digest{}, fmt.Errorf("unseal: %w", err)
	}
	if h.typ != blobData {
		clear(plain)
		return nil, Digest{}, fmt.Errorf("unseal: key blob: %w", ErrWrongType)
	}
	return plain, h.creator, nil
}

// check runs the policy checks that precede decryption.
func (t *TPM) check(blob []byte) (header, error) {
	h, err := parseHeader(blob)
	if err != nil {
		return h, err
	}
	if h.platform != t.p.id {
		return h, ErrForeign
	}
	switch h.kind {
	case targetMeasurement:
		if h.target != t.m {
			return h, ErrWrongPAL
		}
	case targetName:
		if err := t.authorize(&h); err != nil {
			return h, err
		}
	}
	if h.mask != 0 {
		cur := t.PCRs()
		for i := 0; i < NumPCRs; i++ {
			if h.mask&(1<<i) != 0 && h.pcrs[i] != cur[i] {
				return h, fmt.Errorf("PCR %d: %w", i, ErrPCRMismatch)
			}
		}
	}
	return h, nil
}

// authorize asks the platform's Authorizer whether the caller may act as the blob's name
// under its signer. The header is not authenticated yet: a forged name or signer only chooses
// which question is asked; decryption then fails under the key of the real (name, signer).
func (t *TPM) authorize(h *header) error {
	a := t.p.authorizer()
	if a == nil {
		return fmt.Errorf("blob sealed to %q under a signer: no trusted configuration: %w", h.name, ErrUnsupported)
	}
	err := a(h.target, h.name, t.m)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrInternal):
		return fmt.Errorf("authorize %q: %w", h.name, err)
	}
	return fmt.Errorf("%q under signer %x: %w: %w", h.name, h.target[:8], ErrNotAuthorized, err)
}

// open authenticates and decrypts a blob whose header has passed check.
func (p *Platform) open(h *header, blob []byte) ([]byte, error) {
	a, err := p.aead(h.typ, h.kind, h.target, h.name)
	if err != nil {
		return nil, err
	}
	plain, err := a.Open(nil, h.nonce, blob[h.len:], blob[:h.len])
	if err != nil {
		return nil, ErrTampered
	}
	return plain, nil
}

// aeadCache holds one AES-GCM per (blob type, target) so that the HKDF and AES key schedule
// are not paid on every seal. It is bounded because a PAL chooses targets freely.
type aeadCache struct {
	mu sync.RWMutex
	m  map[aeadKey]cipher.AEAD
}

type aeadKey struct {
	typ  byte
	kind byte
	id   Digest // the measurement, or for a name the hash of (signer, name)
}

const maxCachedAEADs = 1024

// aead returns the AEAD of blobs of type typ bound to (kind, target, name). The key is
// HKDF-Expand(PRK, "palisade.utpm.seal.v1\x00" ‖ typ ‖ kind ‖ target [‖ u8 len ‖ name], 32),
// the name part for kind 2 only: a blob of one type or target never decrypts under another's
// key.
func (p *Platform) aead(typ, kind byte, target Digest, name string) (cipher.AEAD, error) {
	k := aeadKey{typ, kind, target}
	if kind == targetName {
		k.id = nameID(target, name)
	}
	p.aeads.mu.RLock()
	a := p.aeads.m[k]
	p.aeads.mu.RUnlock()
	if a != nil {
		return a, nil
	}
	var info bytes.Buffer
	info.WriteString("palisade.utpm.seal.v1\x00")
	info.WriteByte(typ)
	info.WriteByte(kind)
	info.Write(target[:])
	if kind == targetName {
		info.WriteByte(byte(len(name)))
		info.WriteString(name)
	}
	key, err := hkdf.Expand(sha256.New, p.prk, info.String(), 32)
	if err != nil {
		return nil, fmt.Errorf("derive seal key: %w: %w", ErrInternal, err)
	}
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("seal cipher: %w: %w", ErrInternal, err)
	}
	// A GCM AEAD keeps no per-operation state, so one value serves concurrent callers.
	a, err = cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal cipher: %w: %w", ErrInternal, err)
	}
	p.aeads.mu.Lock()
	if p.aeads.m == nil {
		p.aeads.m = make(map[aeadKey]cipher.AEAD)
	}
	if len(p.aeads.m) >= maxCachedAEADs {
		for old := range p.aeads.m { // evict an arbitrary entry: it is only a cache
			delete(p.aeads.m, old)
			break
		}
	}
	p.aeads.m[k] = a
	p.aeads.mu.Unlock()
	return a, nil
}

// nameID identifies (signer, name) in the AEAD cache.
func nameID(signer Digest, name string) Digest {
	h := sha256.New()
	h.Write([]byte("palisade.name.v1\x00"))
	h.Write(signer[:])
	h.Write([]byte{byte(len(name))})
	h.Write([]byte(name))
	return Digest(h.Sum(nil))
}
