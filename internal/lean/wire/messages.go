package wire

import "fmt"

// Bodies of the operations (docs/protocol.md §4). Each request and response has Append, which
// appends its body to b, and a Decode function, which decodes a whole body and fails on
// anything left over. Decoded byte fields alias the body.

// Limits of response fields.
const (
	MaxAlg       = 32
	MaxPublic    = 4 << 10
	MaxCert      = 64 << 10
	MaxSignature = 1 << 10
	MaxFound     = 4096 // names in one find response
	MaxVersion   = 64
)

// HelloResponse says what the daemon speaks and who it thinks the caller is.
type HelloResponse struct {
	MinVersion, MaxVersion uint16
	MaxBody                uint32
	UID, GID               uint32
	Daemon                 string // the daemon's version
}

// Append appends the body.
func (m HelloResponse) Append(b []byte) []byte {
	w := Writer{b}
	w.U16(m.MinVersion)
	w.U16(m.MaxVersion)
	w.U32(m.MaxBody)
	w.U32(m.UID)
	w.U32(m.GID)
	w.String(m.Daemon)
	return w.B
}

// DecodeHelloResponse decodes a body.
func DecodeHelloResponse(b []byte) (HelloResponse, error) {
	r := NewReader(b)
	m := HelloResponse{
		MinVersion: r.U16("min version"), MaxVersion: r.U16("max version"), MaxBody: r.U32("max body"),
		UID: r.U32("uid"), GID: r.U32("gid"), Daemon: r.String("daemon version", MaxVersion),
	}
	return m, r.Done()
}

// CallRequest calls the PAL Handle (visor.Handle's number) with Input.
type CallRequest struct {
	Handle uint64
	Input  []byte
}

// Append appends the body.
func (m CallRequest) Append(b []byte) []byte {
	w := Writer{b}
	w.U64(m.Handle)
	w.Bytes(m.Input)
	return w.B
}

// DecodeCallRequest decodes a body.
func DecodeCallRequest(b []byte) (CallRequest, error) {
	r := NewReader(b)
	m := CallRequest{Handle: r.U64("handle"), Input: r.Bytes("input", MaxBody)}
	return m, r.Done()
}

// CallResponse is what the PAL returned: its status (0 is success, chosen by the PAL) and
// output.
type CallResponse struct {
	Status int32
	Output []byte
}

// Append appends the body.
func (m CallResponse) Append(b []byte) []byte {
	w := Writer{b}
	w.U32(uint32(m.Status))
	w.Bytes(m.Output)
	return w.B
}

// DecodeCallResponse decodes a body.
func DecodeCallResponse(b []byte) (CallResponse, error) {
	r := NewReader(b)
	m := CallResponse{Status: int32(r.U32("status")), Output: r.Bytes("output", MaxBody)}
	return m, r.Done()
}

// SignRequest signs Digest with the key Name. Scheme and Hash are the TPM 2.0 algorithm ids of
// client/signreq; PIN is empty when the key has none.
type SignRequest struct {
	Name         string
	Scheme, Hash uint16
	Digest       []byte
	PIN          []byte
}

// Append appends the body.
func (m SignRequest) Append(b []byte) []byte {
	w := Writer{b}
	w.String(m.Name)
	w.U16(m.Scheme)
	w.U16(m.Hash)
	w.Bytes(m.Digest)
	w.Bytes(m.PIN)
	return w.B
}

// DecodeSignRequest decodes a body.
func DecodeSignRequest(b []byte) (SignRequest, error) {
	r := NewReader(b)
	m := SignRequest{
		Name: r.String("key name", MaxName), Scheme: r.U16("scheme"), Hash: r.U16("hash"),
		Digest: r.Bytes("digest", MaxDigest), PIN: r.Bytes("pin", MaxPIN),
	}
	if err := r.Done(); err != nil {
		return m, err
	}
	if m.Name == "" {
		return m, fmt.Errorf("%w: empty key name", ErrMalformed)
	}
	return m, nil
}

// SignResponse is a signature (ECDSA: ASN.1 DER).
type SignResponse struct{ Signature []byte }

// Append appends the body.
func (m SignResponse) Append(b []byte) []byte {
	w := Writer{b}
	w.Bytes(m.Signature)
	return w.B
}

// DecodeSignResponse decodes a body.
func DecodeSignResponse(b []byte) (SignResponse, error) {
	r := NewReader(b)
	m := SignResponse{Signature: r.Bytes("signature", MaxSignature)}
	return m, r.Done()
}

// NameRequest is the body of key-info (a key's name) and find (a name prefix, "" for all).
type NameRequest struct{ Name string }

// Append appends the body.
func (m NameRequest) Append(b []byte) []byte {
	w := Writer{b}
	w.String(m.Name)
	return w.B
}

// DecodeNameRequest decodes a body.
func DecodeNameRequest(b []byte) (NameRequest, error) {
	r := NewReader(b)
	m := NameRequest{Name: r.String("name", MaxName)}
	return m, r.Done()
}

// Key flags.
const (
	KeyHasPIN   uint32 = 1 << 0
	KeyImported uint32 = 1 << 1
)

// KeyInfoResponse is what a caller allowed to use a key may learn of it.
type KeyInfoResponse struct {
	Alg       string   // keys.Alg: "ecdsa-p256", "ed25519", "rsa-2048", "rsa-3072"
	Flags     uint32   // KeyHasPIN, KeyImported
	PublicDER []byte   // PKIX SubjectPublicKeyInfo
	CertChain [][]byte // DER, leaf first
}

// Append appends the body.
func (m KeyInfoResponse) Append(b []byte) []byte {
	w := Writer{b}
	w.String(m.Alg)
	w.U32(m.Flags)
	w.Bytes(m.PublicDER)
	w.U32(uint32(len(m.CertChain)))
	for _, c := range m.CertChain {
		w.Bytes(c)
	}
	return w.B
}

// DecodeKeyInfoResponse decodes a body.
func DecodeKeyInfoResponse(b []byte) (KeyInfoResponse, error) {
	r := NewReader(b)
	m := KeyInfoResponse{Alg: r.String("algorithm", MaxAlg), Flags: r.U32("flags"), PublicDER: r.Bytes("public key", MaxPublic)}
	n := r.U32("certificate count")
	if n > MaxCerts {
		return m, fmt.Errorf("%w: %d certificates (max %d)", ErrMalformed, n, MaxCerts)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		m.CertChain = append(m.CertChain, r.Bytes("certificate", MaxCert))
	}
	return m, r.Done()
}

// FoundKey is one key of a find response.
type FoundKey struct{ Name, Alg string }

// FindResponse lists keys, sorted by name.
type FindResponse struct{ Keys []FoundKey }

// Append appends the body.
func (m FindResponse) Append(b []byte) []byte {
	w := Writer{b}
	w.U32(uint32(len(m.Keys)))
	for _, k := range m.Keys {
		w.String(k.Name)
		w.String(k.Alg)
	}
	return w.B
}

// DecodeFindResponse decodes a body.
func DecodeFindResponse(b []byte) (FindResponse, error) {
	r := NewReader(b)
	n := r.U32("key count")
	if n > MaxFound {
		return FindResponse{}, fmt.Errorf("%w: %d keys (max %d)", ErrMalformed, n, MaxFound)
	}
	var m FindResponse
	for i := uint32(0); i < n && r.err == nil; i++ {
		m.Keys = append(m.Keys, FoundKey{Name: r.String("key name", MaxName), Alg: r.String("algorithm", MaxAlg)})
	}
	return m, r.Done()
}

// ErrorResponse is the body of every response whose code is not CodeOK.
type ErrorResponse struct{ Message string }

// Append appends the body; a message longer than MaxMessage is cut.
func (m ErrorResponse) Append(b []byte) []byte {
	msg := m.Message
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	w := Writer{b}
	w.Bytes([]byte(msg))
	return w.B
}

// DecodeErrorResponse decodes a body. The message may hold any bytes (it is cut, not checked).
func DecodeErrorResponse(b []byte) (ErrorResponse, error) {
	r := NewReader(b)
	m := ErrorResponse{Message: string(r.Bytes("message", MaxMessage))}
	return m, r.Done()
}
