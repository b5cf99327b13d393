// Package signreq is the request encoding between client.Signer and a signing PAL. It has no
// dependencies, so a PAL (GOOS=wasip1) can import it without the gRPC client.
//
// A sign request is the call input of the PAL:
//
//	u16 scheme ‖ u16 hash ‖ digest        (little-endian)
//
// scheme and hash are the TPM 2.0 algorithm ids of the µTPM's KEY_SIGN (docs/abi.md §3):
// scheme 0x0014 RSASSA-PKCS1-v1_5, 0x0016 RSA-PSS (salt length = hash length), 0x0018 ECDSA
// (ASN.1 DER signature), 0x0060 Ed25519 (hash 0, "digest" is the whole message, ≤ 4 KiB);
// hash 0x000B SHA-256, 0x000C SHA-384, 0x000D SHA-512. The layout is KEY_SIGN's request
// without the key blob, so a PAL that holds its key as a µTPM key object forwards it as
// scheme ‖ hash ‖ u32 blob_len ‖ blob ‖ digest after deciding whether to sign.
//
// The PAL answers with status 0 and the signature as output, or a non-zero status to refuse.
package signreq

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Algorithm ids (TPM_ALG_*), as in the µTPM ABI.
const (
	SchemeRSASSA uint16 = 0x0014
	SchemeRSAPSS uint16 = 0x0016
	SchemeECDSA  uint16 = 0x0018
	SchemeEdDSA  uint16 = 0x0060

	HashNone   uint16 = 0x0000
	HashSHA256 uint16 = 0x000B
	HashSHA384 uint16 = 0x000C
	HashSHA512 uint16 = 0x000D
)

// MaxDigest bounds the digest (an Ed25519 message) a request may carry.
const MaxDigest = 4 << 10

// Request is one signing request.
type Request struct {
	Scheme uint16 // SchemeRSASSA, SchemeRSAPSS, SchemeECDSA or SchemeEdDSA
	Hash   uint16 // HashSHA256, HashSHA384, HashSHA512; HashNone with SchemeEdDSA
	Digest []byte // the digest of Hash, or the whole message for SchemeEdDSA (≤ MaxDigest)
}

// ErrMalformed means a request does not decode.
var ErrMalformed = errors.New("signreq: malformed request")

// Marshal encodes r.
func (r Request) Marshal() []byte {
	b := make([]byte, 4, 4+len(r.Digest))
	binary.LittleEndian.PutUint16(b, r.Scheme)
	binary.LittleEndian.PutUint16(b[2:], r.Hash)
	return append(b, r.Digest...)
}

// Unmarshal decodes a request and checks that the digest length fits the hash. Digest aliases b.
func Unmarshal(b []byte) (Request, error) {
	if len(b) < 4 {
		return Request{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	r := Request{
		Scheme: binary.LittleEndian.Uint16(b),
		Hash:   binary.LittleEndian.Uint16(b[2:]),
		Digest: b[4:],
	}
	want := map[uint16]int{HashSHA256: 32, HashSHA384: 48, HashSHA512: 64}
	switch {
	case r.Scheme == SchemeEdDSA && r.Hash == HashNone:
		if len(r.Digest) > MaxDigest {
			return Request{}, fmt.Errorf("%w: message of %d bytes (max %d)", ErrMalformed, len(r.Digest), MaxDigest)
		}
	case r.Scheme == SchemeRSASSA || r.Scheme == SchemeRSAPSS || r.Scheme == SchemeECDSA:
		n, ok := want[r.Hash]
		if !ok {
			return Request{}, fmt.Errorf("%w: hash %#04x", ErrMalformed, r.Hash)
		}
		if len(r.Digest) != n {
			return Request{}, fmt.Errorf("%w: digest of %d bytes for hash %#04x", ErrMalformed, len(r.Digest), r.Hash)
		}
	default:
		return Request{}, fmt.Errorf("%w: scheme %#04x with hash %#04x", ErrMalformed, r.Scheme, r.Hash)
	}
	return r, nil
}
