package utpm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
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

	// targetMeasurement is the only target kind today; trusted configurations will add
	// "a name under a signer".
	targetMeasurement byte = 1

	platformIDSize = 8
	nonceSize      = 12
	tagSize        = 16

	offType     = 4 + 1
	offKind     = offType + 1
	offTarget   = offKind + 1
	offMask     = offTarget + 32
	offPCRs     = offMask + 1
	fixedHeader = offPCRs + 32 + platformIDSize + nonceSize // creator, platform id, nonce; no PCR values

	// maxCiphertext bounds the ciphertext of any blob: sealed data, or a key (far smaller).
	maxCiphertext = MaxSealData + tagSize
)

// header is the parsed clear part of a sealed blob.
type header struct {
	typ      byte
	target   Digest
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
	if blob[offKind] != targetMeasurement {
		return h, fmt.Errorf("target kind %d: %w", blob[offKind], ErrMalformed)
	}
	copy(h.target[:], blob[offTarget:])
	h.mask = blob[offMask]
	h.len = fixedHeader + 32*bits.OnesCount8(h.mask)
	if len(blob) < h.len+tagSize {
		return h, fmt.Errorf("%d bytes: %w", len(blob), ErrMalformed)
	}
	if len(blob)-h.len > maxCiphertext {
		return h, fmt.Errorf("ciphertext of %d bytes: %w", len(blob)-h.len, ErrMalformed)
	}
	off := offPCRs
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
	target := p.Target
	if target == (Digest{}) {
		target = t.m
	}
	vals := p.PCRValues
	if p.CurrentPCRs {
		vals = t.PCRs()
	}
	hl := fixedHeader + 32*bits.OnesCount8(p.PCRMask)
	out := make([]byte, hl, hl+len(plain)+tagSize)
	copy(out, blobMagic)
	out[4] = blobVersion
	out[offType] = typ
	out[offKind] = targetMeasurement
	copy(out[offTarget:], target[:])
	out[offMask] = p.PCRMask
	off := offPCRs
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
	a, err := t.p.aead(typ, target)
	if err != nil {
		return nil, err
	}
	ct := a.Seal(out[hl:hl], nonce, plain, out[:hl])
	return out[:hl+len(ct)], nil
}

// Unseal decrypts a data blob sealed for the caller and returns the data and the measurement
// of the PAL that sealed it. The checks run in a fixed order so each failure has its own
// error: ErrMalformed, ErrForeign, ErrWrongPAL, ErrPCRMismatch, ErrTampered, ErrWrongType.
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
	if h.target != t.m {
		return h, ErrWrongPAL
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

// open authenticates and decrypts a blob whose header has passed check.
func (p *Platform) open(h *header, blob []byte) ([]byte, error) {
	a, err := p.aead(h.typ, h.target)
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
	typ    byte
	target Digest
}

const maxCachedAEADs = 1024

// aead returns the AEAD of blobs of type typ bound to target. The key is
// HKDF-Expand(PRK, "palisade.utpm.seal.v1\x00" ‖ typ ‖ kind ‖ target, 32): a blob of one type
// or target never decrypts under another's key.
func (p *Platform) aead(typ byte, target Digest) (cipher.AEAD, error) {
	k := aeadKey{typ, target}
	p.aeads.mu.RLock()
	a := p.aeads.m[k]
	p.aeads.mu.RUnlock()
	if a != nil {
		return a, nil
	}
	var info bytes.Buffer
	info.WriteString("palisade.utpm.seal.v1\x00")
	info.WriteByte(typ)
	info.WriteByte(targetMeasurement)
	info.Write(target[:])
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
