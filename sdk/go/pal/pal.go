// Package pal is the SDK for PALs written in Go (docs/sdk.md). A PAL is a wasip1 reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -o my.wasm ./mypal
//
// Its main package registers a handler in init and has an empty main:
//
//	func init() { pal.Handle(func(in []byte) ([]byte, error) { ... }) }
//	func main() {}
//
// The application registers the module with palisaded and calls it (package
// github.com/palisade-project/palisade/client); each call runs the handler once, in the same
// instance, so package variables keep their values from call to call until the PAL is
// unregistered or reset.
//
// # Status
//
// A handler that returns a nil error ends the call with status 0 and its output; an error ends
// it with status 1 and the error's text as output, unless it is (or wraps) a *Failure, which
// chooses both. A panic aborts the PAL: the caller gets client.ErrTrap and the instance is reset
// (its memory is lost).
//
// # The µTPM
//
// Every PAL has its own micro-TPM, bound to its measurement (the identity that package
// github.com/palisade-project/palisade/pal computes from the module): PCRs (Extend, PCRRead),
// sealed storage (Seal, Unseal) bound to this PAL, another PAL, or any PAL a trusted
// configuration names (Policy), quotes that a relying party verifies with package
// github.com/palisade-project/palisade/attest (Quote), key objects whose private key never
// leaves the µTPM (KeyCreate, KeySign), randomness (Random) and monotonic counters. The
// operations fail with an Errno (docs/abi.md §4).
//
// # Outside a PAL
//
// The package builds for every GOOS so that a PAL's logic can be unit-tested on the host;
// there every µTPM operation fails with EUnsupported. In a PAL it exports palisade_alloc and
// palisade_entry and imports palisade.utpm (docs/abi.md §2, §5).
//
// A Go PAL's measurement depends on the Go version and on the module paths and versions it is
// built from (this module's included), so upgrading either changes it.
package pal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// Handler handles one call. in is valid only during the call: copy what must outlive it.
type Handler func(in []byte) (out []byte, err error)

var handler Handler

// Handle registers the PAL's handler. Call it from an init function of the PAL.
func Handle(h Handler) { handler = h }

// Failure is an error that ends a call with a chosen non-zero status and output.
type Failure struct {
	Status int32  // the call's status; 0 is replaced by 1, since a failure is never a success
	Output []byte // the call's output
}

// Error describes the failure; the caller sees Status and Output, not this text.
func (f *Failure) Error() string { return fmt.Sprintf("PAL status %d: %s", f.Status, f.Output) }

// entry runs the handler on one input and sets the output; it returns the call's status.
func entry(in []byte) int32 {
	if handler == nil {
		_ = output([]byte("pal: no handler registered (call pal.Handle in init)"))
		return 1
	}
	out, err := handler(in)
	if err == nil {
		if len(out) > 0 {
			_ = output(out)
		}
		return 0
	}
	var f *Failure
	if errors.As(err, &f) {
		if len(f.Output) > 0 {
			_ = output(f.Output)
		}
		if f.Status == 0 {
			return 1
		}
		return f.Status
	}
	_ = output([]byte(err.Error()))
	return 1
}

// Errno is an ABI error code (docs/abi.md §4) returned by a µTPM operation.
type Errno int32

// The µTPM's error codes; Error says what each means.
const (
	EInval       Errno = 1
	EFault       Errno = 2
	EShort       Errno = 3
	EPCR         Errno = 4
	ETampered    Errno = 5
	EForeign     Errno = 6
	EWrongPAL    Errno = 7
	EPCRMismatch Errno = 8
	EWrongType   Errno = 9
	EUnsupported Errno = 10
	ETooLarge    Errno = 11
	EInternal    Errno = 12
	EMalformed   Errno = 13
	// ENotAuthorized: the blob is sealed to a name under a signer and the active
	// configuration of that signer does not list this PAL under that name.
	ENotAuthorized Errno = 14
	// EAudit: the visor could not record the key-object operation in its audit log (its
	// disk is full, say) and refused it: no key or signature was made available. Retry later.
	EAudit Errno = 15
)

var errnoText = [...]string{
	EInval:         "E_INVAL: malformed request",
	EFault:         "E_FAULT: pointer outside PAL memory",
	EShort:         "E_SHORT: response buffer too small",
	EPCR:           "E_PCR: PCR index out of range or not writable",
	ETampered:      "E_TAMPERED: sealed blob failed its integrity check",
	EForeign:       "E_FOREIGN: sealed blob was made by another platform",
	EWrongPAL:      "E_WRONGPAL: sealed blob is bound to another PAL",
	EPCRMismatch:   "E_PCRMISMATCH: sealed blob is bound to other PCR values",
	EWrongType:     "E_WRONGTYPE: wrong kind of sealed blob",
	EUnsupported:   "E_UNSUPPORTED: unsupported operation, algorithm or scheme",
	ETooLarge:      "E_TOOLARGE: size exceeds its limit",
	EInternal:      "E_INTERNAL: the visor failed",
	EMalformed:     "E_MALFORMED: sealed blob does not parse",
	ENotAuthorized: "E_NOTAUTHORIZED: caller is not authorized for the name the blob is sealed to",
	EAudit:         "E_AUDIT: the visor's audit log could not record the operation, which was refused",
}

// Error returns the code's name and meaning, e.g. "utpm: E_WRONGPAL: sealed blob is bound to
// another PAL".
func (e Errno) Error() string {
	if e > 0 && int(e) < len(errnoText) {
		return "utpm: " + errnoText[e]
	}
	return fmt.Sprintf("utpm: error %d", int32(e))
}

// Ops of the hostcall (docs/abi.md §3).
const (
	opOutput = iota
	opExtend
	opPCRRead
	opSeal
	opUnseal
	opQuote
	opRandom
	opIdentityPublic
	opKeyCreate
	opKeySign
	opCounterRead
	opCounterIncrement
	opLog
)

// Sizes from docs/abi.md.
const (
	NumPCRs       = 8
	MaxName       = 128 // bytes of Policy.Name
	maxHostcallIO = 1<<20 + 4<<10
	maxRandom     = 64 << 10
)

// Digest is a SHA-256 value: a measurement or a PCR.
type Digest [32]byte

// Policy says who may unseal a blob or sign with a key (docs/abi.md §3).
type Policy struct {
	Target Digest // the PAL that may use the blob; zero means the caller itself
	// Name and Signer seal to "a name under a signer" (target kind 2): any PAL that the
	// trusted configuration active under Signer (an administrator key id) lists under Name
	// may use the blob, decided again at every use. Target is then ignored. Name is 1..128
	// bytes of [A-Za-z0-9._-], not starting with '.', '_' or '-'.
	Name        string
	Signer      Digest          // the administrator key id a Name is relative to
	PCRMask     uint8           // bit i binds PCR i
	PCRValues   [NumPCRs]Digest // the values of the bound PCRs (others are ignored)
	CurrentPCRs bool            // bind to the caller's current values instead of PCRValues
}

// encode appends the ABI encoding of p to b. A Name that cannot be encoded (longer than
// MaxName, so its length byte would wrap) or a zero Signer is EInval; the visor checks the
// rest of the name rule.
func (p *Policy) encode(b []byte) ([]byte, error) {
	switch {
	case p.Name != "":
		if len(p.Name) > MaxName || p.Signer == (Digest{}) {
			return nil, EInval
		}
		b = append(b, 2, byte(len(p.Name)))
		b = append(b, p.Name...)
		b = append(b, p.Signer[:]...)
	case p.Target == (Digest{}):
		b = append(b, 0)
	default:
		b = append(b, 1)
		b = append(b, p.Target[:]...)
	}
	b = append(b, p.PCRMask)
	if p.CurrentPCRs {
		return append(b, 1), nil
	}
	b = append(b, 0)
	for i := 0; i < NumPCRs; i++ {
		if p.PCRMask&(1<<i) != 0 {
			b = append(b, p.PCRValues[i][:]...)
		}
	}
	return b, nil
}

// KeyAlg is the algorithm of a key object (KeyCreate), as in docs/abi.md §3.
type KeyAlg uint8

// Scheme is a signature scheme of KeySign: a TPM_ALG_* id, as in docs/abi.md §3 and package
// client/signreq.
type Scheme uint16

// Hash is the hash a KeySign digest was made with: a TPM_ALG_* id, as in docs/abi.md §3 and
// package client/signreq.
type Hash uint16

// Key algorithms.
const (
	KeyECDSAP256 KeyAlg = 1 // ECDSA on NIST P-256
	KeyEd25519   KeyAlg = 2 // Ed25519
	KeyRSA2048   KeyAlg = 3 // RSA, 2048-bit modulus
	KeyRSA3072   KeyAlg = 4 // RSA, 3072-bit modulus
)

// Signature schemes.
const (
	SchemeRSASSA Scheme = 0x0014 // RSASSA-PKCS1-v1_5
	SchemeRSAPSS Scheme = 0x0016 // RSA-PSS, salt length = hash length
	SchemeECDSA  Scheme = 0x0018 // ECDSA, ASN.1 DER signature
	SchemeEdDSA  Scheme = 0x0060 // Ed25519 over the whole message (Hash must be HashNone)
)

// Hashes.
const (
	HashNone   Hash = 0x0000 // no hash: Ed25519 signs the message itself; RSASSA pads and signs the data as given; ECDSA signs a hash of another length (docs/abi.md §3)
	HashSHA256 Hash = 0x000B // SHA-256
	HashSHA384 Hash = 0x000C // SHA-384
	HashSHA512 Hash = 0x000D // SHA-512
)

// addr is the wasm32 address of b's data (the Go heap does not move).
func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// call makes one hostcall; resp receives the response, whose length it returns.
func call(op uint32, req, resp []byte) (int, error) {
	rc := hostcall(op, addr(req), uint32(len(req)), addr(resp), uint32(len(resp)))
	runtime.KeepAlive(req)
	runtime.KeepAlive(resp)
	if rc < 0 {
		return 0, Errno(-rc)
	}
	return int(rc), nil
}

// callGrow makes a hostcall whose response size is not known in advance: it starts with
// guess bytes and retries with a larger buffer on E_SHORT.
func callGrow(op uint32, req []byte, guess int) ([]byte, error) {
	for size := guess; ; size *= 2 {
		size = min(size, maxHostcallIO)
		resp := make([]byte, size)
		n, err := call(op, req, resp)
		if err == EShort && size < maxHostcallIO {
			continue
		}
		if err != nil {
			return nil, err
		}
		return resp[:n], nil
	}
}

func output(b []byte) error {
	_, err := call(opOutput, b, nil)
	return err
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// Extend sets PCR[pcr] = SHA-256(PCR[pcr] || d). PCR 0 holds the PAL's measurement and is
// not writable (EPCR).
func Extend(pcr int, d Digest) error {
	req := append(u32(uint32(pcr)), d[:]...)
	_, err := call(opExtend, req, nil)
	return err
}

// PCRRead returns the value of PCR pcr.
func PCRRead(pcr int) (Digest, error) {
	var v Digest
	_, err := call(opPCRRead, u32(uint32(pcr)), v[:])
	return v, err
}

// Seal encrypts data so that only what p names can unseal it.
func Seal(data []byte, p Policy) ([]byte, error) {
	req, err := p.encode(make([]byte, 0, 2+MaxName+2*len(Digest{})+len(data)))
	if err != nil {
		return nil, err
	}
	return callGrow(opSeal, append(req, data...), len(data)+1024)
}

// Unseal returns the data of a sealed blob and the measurement of the PAL that sealed it.
func Unseal(blob []byte) (data []byte, creator Digest, err error) {
	resp, err := callGrow(opUnseal, blob, len(blob)+32)
	if err != nil {
		return nil, creator, err
	}
	if len(resp) < 32 {
		return nil, creator, EInternal
	}
	copy(creator[:], resp)
	return resp[32:], creator, nil
}

// Quote returns evidence (COSE_Sign1) of this PAL's measurement and the PCRs in pcrMask,
// binding nonce and user data, signed by the visor's identity key.
func Quote(nonce, user []byte, pcrMask uint8) ([]byte, error) {
	req := append([]byte{pcrMask}, u32(uint32(len(nonce)))...)
	req = append(append(req, nonce...), user...)
	return callGrow(opQuote, req, 8<<10+len(nonce)+len(user))
}

// Random fills b with random bytes from the µTPM.
func Random(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), maxRandom)
		if _, err := call(opRandom, nil, b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// IdentityPublic returns the visor identity key (DER SubjectPublicKeyInfo) that signs quotes.
func IdentityPublic() ([]byte, error) { return callGrow(opIdentityPublic, nil, 256) }

// KeyCreate creates a key object: blob is the sealed private key, usable only through
// KeySign by what p names; pub is the public key (DER SubjectPublicKeyInfo).
func KeyCreate(alg KeyAlg, p Policy) (blob, pub []byte, err error) {
	req, err := p.encode([]byte{byte(alg)})
	if err != nil {
		return nil, nil, err
	}
	resp, err := callGrow(opKeyCreate, req, 8<<10)
	if err != nil {
		return nil, nil, err
	}
	if len(resp) < 4 || uint64(binary.LittleEndian.Uint32(resp)) > uint64(len(resp)-4) {
		return nil, nil, EInternal
	}
	n := 4 + int(binary.LittleEndian.Uint32(resp))
	return resp[n:], resp[4:n], nil
}

// KeySign signs digest (the message itself for Ed25519) with a key object.
func KeySign(blob []byte, s Scheme, h Hash, digest []byte) ([]byte, error) {
	req := binary.LittleEndian.AppendUint16(nil, uint16(s))
	req = binary.LittleEndian.AppendUint16(req, uint16(h))
	req = binary.LittleEndian.AppendUint32(req, uint32(len(blob)))
	req = append(append(req, blob...), digest...)
	return callGrow(opKeySign, req, 512)
}

func counter(op uint32, id uint32) (uint64, error) {
	var v [8]byte
	n, err := call(op, u32(id), v[:])
	if err != nil {
		return 0, err
	}
	if n != 8 {
		return 0, EInternal
	}
	return binary.LittleEndian.Uint64(v[:]), nil
}

// CounterRead returns the value of this PAL's monotonic counter id (0 if never incremented).
func CounterRead(id uint32) (uint64, error) { return counter(opCounterRead, id) }

// CounterIncrement increments this PAL's monotonic counter id and returns the new value.
func CounterIncrement(id uint32) (uint64, error) { return counter(opCounterIncrement, id) }

// Log sends a debug message (≤ 4 KiB) to the visor's log of this PAL.
func Log(msg string) { _, _ = call(opLog, []byte(msg), nil) }

// AddrOf is the address of b's data in PAL memory, for RawHostcall.
func AddrOf(b []byte) uint32 { return addr(b) }

// RawHostcall is the raw µTPM hostcall of docs/abi.md §2, with untyped addresses. It exists
// to test the ABI with hostile arguments; PALs use the functions above.
func RawHostcall(op, reqPtr, reqLen, respPtr, respCap uint32) int64 {
	return hostcall(op, reqPtr, reqLen, respPtr, respCap)
}
