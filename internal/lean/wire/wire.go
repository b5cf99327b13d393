// Package wire is the byte layout of palisaded's lean protocol (docs/protocol.md): fixed
// 12-byte frame headers, little-endian integers, and bodies made of integers and
// length-prefixed byte strings. It has no I/O and no dependencies, so the daemon, the Go client
// and the fuzzer share one decoder.
//
// Every read of a body goes through Reader, which checks each length against what is left and
// against the field's own limit before slicing: a hostile peer can make a decode fail, never
// read out of bounds or allocate more than the frame it sent.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the protocol version this package speaks; a frame of another version is refused
// with CodeVersion, whose body names the versions the daemon speaks.
const Version = 1

// HeaderSize is the size of a frame header.
const HeaderSize = 12

// Limits of the protocol. A frame whose header announces more than MaxBody is refused before
// its body is read.
const (
	MaxBody    = 4 << 20 // a whole body; larger PAL inputs go through gRPC
	MaxName    = 256     // a key name or a name prefix
	MaxMessage = 1024    // an error message
	MaxPIN     = 256
	MaxDigest  = 4 << 10 // an Ed25519 message; hashes are at most 64 bytes
	MaxCerts   = 16      // certificates in a key's chain
)

// Op is a request's operation. A response carries the request's op with RespBit set.
type Op uint8

// The operations.
const (
	OpHello   Op = 0x01 // versions, limits, the caller's uid as the daemon sees it
	OpCall    Op = 0x02 // call a PAL
	OpSign    Op = 0x03 // sign with a named key
	OpKeyInfo Op = 0x04 // a key's algorithm, public part and certificates
	OpFind    Op = 0x05 // names of the keys the caller may use, by name prefix
	// OpKeyCreate creates a named key owned by the caller (added within version 1: an older
	// daemon answers it CodeUnknownOp).
	OpKeyCreate Op = 0x06

	RespBit Op = 0x80
)

func (o Op) String() string {
	switch o &^ RespBit {
	case OpHello:
		return "hello"
	case OpCall:
		return "call"
	case OpSign:
		return "sign"
	case OpKeyInfo:
		return "key-info"
	case OpFind:
		return "find"
	case OpKeyCreate:
		return "key-create"
	}
	return fmt.Sprintf("op-%#02x", uint8(o))
}

// Code is a response's status: 0, or an error whose body is a message.
type Code uint16

// The codes; docs/protocol.md §5 says when each is sent. libpalisade returns -code.
const (
	CodeOK             Code = 0
	CodeMalformed      Code = 1  // a frame or body that does not decode; the daemon closes
	CodeVersion        Code = 2  // a version the daemon does not speak; the daemon closes
	CodeUnknownOp      Code = 3  // an op the daemon does not know
	CodeTooLarge       Code = 4  // a body longer than MaxBody; the daemon closes
	CodeBusy           Code = 5  // too many connections; the daemon closes
	CodePermission     Code = 6  // the caller may not use the PAL or key
	CodeNotFound       Code = 7  // no such PAL
	CodeTimeout        Code = 8  // the PAL call exceeded its timeout
	CodeTrap           Code = 9  // the PAL trapped
	CodeOutOfMemory    Code = 10 // the PAL exhausted its memory
	CodeInputTooLarge  Code = 11 // the input exceeds the PAL's limit
	CodeOutputTooLarge Code = 12 // the output exceeds the PAL's limit
	CodeUnavailable    Code = 13 // the daemon or the PAL is shutting down
	CodeCanceled       Code = 14 // the call was canceled (daemon shutdown)
	CodeInvalid        Code = 15 // a well-formed request with an invalid argument
	CodeInternal       Code = 16 // anything else
	CodeKeyNotFound    Code = 17 // no such key (or one the caller may not know of)
	CodePINRequired    Code = 18
	CodePINIncorrect   Code = 19
	CodeLocked         Code = 20 // the key is locked after too many incorrect PINs
	CodeRefused        Code = 21 // the signing PAL refused
	CodeKeyUnavailable Code = 22 // the key cannot be used (message says why)
	CodeNoKeys         Code = 23 // this daemon serves no keys
	CodeNotSupported   Code = 24 // the PAL's engine does not support the operation
	CodeKeyExists      Code = 25 // key-create: a key of that name exists
	numCodes                = 26
)

var codeNames = [numCodes]string{
	"OK", "MALFORMED", "VERSION", "UNKNOWN_OP", "TOO_LARGE", "BUSY", "PERMISSION", "NOT_FOUND",
	"TIMEOUT", "TRAP", "OUT_OF_MEMORY", "INPUT_TOO_LARGE", "OUTPUT_TOO_LARGE", "UNAVAILABLE",
	"CANCELED", "INVALID", "INTERNAL", "KEY_NOT_FOUND", "PIN_REQUIRED", "PIN_INCORRECT", "LOCKED",
	"REFUSED", "KEY_UNAVAILABLE", "NO_KEYS", "NOT_SUPPORTED", "KEY_EXISTS",
}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE_%d", uint16(c))
}

// Header is a frame header:
//
//	u8 version ‖ u8 op ‖ u16 code ‖ u32 id ‖ u32 body_len
//
// In a request, code is reserved and must be 0. id is chosen by the client and echoed in the
// response.
type Header struct {
	Version uint8
	Op      Op
	Code    Code
	ID      uint32
	Len     uint32
}

// Errors of decoding.
var (
	ErrMalformed = errors.New("lean: malformed frame")
	ErrVersion   = errors.New("lean: unsupported protocol version")
	ErrTooLarge  = errors.New("lean: frame too large")
)

// PutHeader writes h into b[:HeaderSize].
func PutHeader(b []byte, h Header) {
	b[0] = h.Version
	b[1] = byte(h.Op)
	binary.LittleEndian.PutUint16(b[2:], uint16(h.Code))
	binary.LittleEndian.PutUint32(b[4:], h.ID)
	binary.LittleEndian.PutUint32(b[8:], h.Len)
}

// ParseHeader decodes b[:HeaderSize]. It checks the version and the body length; the caller
// checks op and code for its direction.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: header of %d bytes", ErrMalformed, len(b))
	}
	h := Header{
		Version: b[0], Op: Op(b[1]), Code: Code(binary.LittleEndian.Uint16(b[2:])),
		ID: binary.LittleEndian.Uint32(b[4:]), Len: binary.LittleEndian.Uint32(b[8:]),
	}
	if h.Version != Version {
		return h, fmt.Errorf("%w: version %d (this side speaks %d)", ErrVersion, h.Version, Version)
	}
	if h.Len > MaxBody {
		return h, fmt.Errorf("%w: body of %d bytes (max %d)", ErrTooLarge, h.Len, MaxBody)
	}
	return h, nil
}

// Reader reads a body. The first failed read sets Err, and every later read returns zero
// values: decode a whole body, then check Done once.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

func (r *Reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	r.b = nil
}

func (r *Reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail("%s needs %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// U16 reads a u16.
func (r *Reader) U16(what string) uint16 {
	if b := r.take(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

// U32 reads a u32.
func (r *Reader) U32(what string) uint32 {
	if b := r.take(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// U64 reads a u64.
func (r *Reader) U64(what string) uint64 {
	if b := r.take(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// Bytes reads u32 len ‖ bytes, with len ≤ max. The result aliases the body.
func (r *Reader) Bytes(what string, max int) []byte {
	n := r.U32(what + " length")
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		r.fail("%s of %d bytes (max %d)", what, n, max)
		return nil
	}
	b := r.take(int(n), what)
	if b == nil {
		return nil
	}
	return b
}

// String reads a byte string of at most max bytes that holds no NUL and no control character
// (names reach logs and C strings).
func (r *Reader) String(what string, max int) string {
	b := r.Bytes(what, max)
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			r.fail("%s holds control character %#02x", what, c)
			return ""
		}
	}
	return string(b)
}

// Done returns the first error, or an error if bytes are left over.
func (r *Reader) Done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the last field", ErrMalformed, len(r.b))
	}
	return nil
}

// Writer appends fields to a body.
type Writer struct{ B []byte }

// U16 appends v.
func (w *Writer) U16(v uint16) { w.B = binary.LittleEndian.AppendUint16(w.B, v) }

// U32 appends v.
func (w *Writer) U32(v uint32) { w.B = binary.LittleEndian.AppendUint32(w.B, v) }

// U64 appends v.
func (w *Writer) U64(v uint64) { w.B = binary.LittleEndian.AppendUint64(w.B, v) }

// Bytes appends u32 len ‖ b.
func (w *Writer) Bytes(b []byte) {
	w.U32(uint32(len(b)))
	w.B = append(w.B, b...)
}

// String appends u32 len ‖ s.
func (w *Writer) String(s string) {
	w.U32(uint32(len(s)))
	w.B = append(w.B, s...)
}
