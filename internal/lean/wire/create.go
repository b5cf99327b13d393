package wire

import "fmt"

// KeyCreateRequest creates the key Name of algorithm Alg (keys.Alg: "ecdsa-p256", "ed25519",
// "rsa-2048", "rsa-3072"), owned by the caller, without a PIN or shares (docs/protocol.md §4,
// op 0x06). Its response is a KeyInfoResponse of the new key.
type KeyCreateRequest struct {
	Name string
	Alg  string
}

// Append appends the body.
func (m KeyCreateRequest) Append(b []byte) []byte {
	w := Writer{b}
	w.String(m.Name)
	w.String(m.Alg)
	return w.B
}

// DecodeKeyCreateRequest decodes a body. The name and the algorithm must not be empty; what
// else they may be is the key service's rule (an unknown algorithm or a name outside
// [A-Za-z0-9._-] is CodeInvalid, not malformed).
func DecodeKeyCreateRequest(b []byte) (KeyCreateRequest, error) {
	r := NewReader(b)
	m := KeyCreateRequest{Name: r.String("key name", MaxName), Alg: r.String("algorithm", MaxAlg)}
	if err := r.Done(); err != nil {
		return m, err
	}
	if m.Name == "" {
		return m, fmt.Errorf("%w: empty key name", ErrMalformed)
	}
	if m.Alg == "" {
		return m, fmt.Errorf("%w: empty algorithm", ErrMalformed)
	}
	return m, nil
}
