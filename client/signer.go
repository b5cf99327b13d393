package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/palisade-project/palisade/client/signreq"
)

// Signer is a crypto.Signer whose private key is held by a PAL: Sign sends the digest to the
// PAL (encoding in package signreq) and returns the signature it produces. It plugs into
// crypto/tls (tls.Certificate{PrivateKey: signer}) and x/crypto/ssh (ssh.NewSignerFromSigner).
//
// The public key is given at construction (the PAL published it when it created the key); the
// Signer does not check signatures against it, a verifier does.
type Signer struct {
	c      *Client
	handle string
	pub    crypto.PublicKey
	// Timeout bounds each Sign; 0 leaves it to the PAL's own call timeout.
	Timeout time.Duration
}

// ErrSignRefused means the PAL answered a sign request with a non-zero status. The error
// Sign returns is then a *RefusedError, which says the status.
var ErrSignRefused = errors.New("palisade: PAL refused to sign")

// RefusedError is a sign request that the PAL answered with a non-zero status.
type RefusedError struct {
	Handle string // the signing PAL
	Status int32  // the PAL's status
	Output []byte // what the PAL said, often a reason
}

// Error says which PAL refused, with which status, and what it said.
func (e *RefusedError) Error() string {
	if len(e.Output) > 0 {
		return fmt.Sprintf("%v: %s returned status %d: %q", ErrSignRefused, e.Handle, e.Status, e.Output)
	}
	return fmt.Sprintf("%v: %s returned status %d", ErrSignRefused, e.Handle, e.Status)
}

// Unwrap returns ErrSignRefused.
func (e *RefusedError) Unwrap() error { return ErrSignRefused }

// NewSigner returns a Signer that signs with the PAL handle, whose public key is pub
// (*ecdsa.PublicKey P-256/384, ed25519.PublicKey or *rsa.PublicKey).
func NewSigner(c *Client, handle string, pub crypto.PublicKey) (*Signer, error) {
	switch pub.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey, *rsa.PublicKey:
	default:
		return nil, fmt.Errorf("palisade: signer: unsupported public key type %T", pub)
	}
	return &Signer{c: c, handle: handle, pub: pub}, nil
}

// Public implements crypto.Signer.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign implements crypto.Signer. rand is ignored: randomness comes from the µTPM.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	req, err := signRequest(s.pub, digest, opts)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	in := req.Marshal()
	res, err := s.c.Call(ctx, s.handle, in)
	if errors.Is(err, ErrUnavailable) {
		// The daemon went away with the request in flight (a restart): a signature has no
		// side effect, so unlike a general PAL call it is safe to ask once more.
		res, err = s.c.Call(ctx, s.handle, in)
	}
	if err != nil {
		return nil, fmt.Errorf("sign with %s: %w", s.handle, err)
	}
	if res.Status != 0 {
		return nil, &RefusedError{Handle: s.handle, Status: res.Status, Output: res.Output}
	}
	return res.Output, nil
}

func hashID(h crypto.Hash) (uint16, error) {
	switch h {
	case crypto.SHA256:
		return signreq.HashSHA256, nil
	case crypto.SHA384:
		return signreq.HashSHA384, nil
	case crypto.SHA512:
		return signreq.HashSHA512, nil
	}
	return 0, fmt.Errorf("palisade: signer: unsupported hash %v", h)
}

// signRequest chooses the scheme from the key type and opts, as the crypto/* signers do.
func signRequest(pub crypto.PublicKey, digest []byte, opts crypto.SignerOpts) (signreq.Request, error) {
	if opts == nil {
		return signreq.Request{}, errors.New("palisade: signer: nil SignerOpts")
	}
	h := opts.HashFunc()
	switch pub.(type) {
	case ed25519.PublicKey:
		if h != 0 {
			return signreq.Request{}, errors.New("palisade: signer: only pure Ed25519 is supported (Ed25519ph is not)")
		}
		if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
			return signreq.Request{}, errors.New("palisade: signer: Ed25519ctx is not supported")
		}
		return signreq.Request{Scheme: signreq.SchemeEdDSA, Hash: signreq.HashNone, Digest: digest}, nil
	}
	id, err := hashID(h)
	if err != nil {
		return signreq.Request{}, err
	}
	if len(digest) != h.Size() {
		return signreq.Request{}, fmt.Errorf("palisade: signer: digest of %d bytes for %v", len(digest), h)
	}
	r := signreq.Request{Hash: id, Digest: digest}
	switch pub.(type) {
	case *ecdsa.PublicKey:
		r.Scheme = signreq.SchemeECDSA
	case *rsa.PublicKey:
		r.Scheme = signreq.SchemeRSASSA
		if o, ok := opts.(*rsa.PSSOptions); ok {
			if o.SaltLength != rsa.PSSSaltLengthEqualsHash && o.SaltLength != h.Size() {
				return signreq.Request{}, fmt.Errorf("palisade: signer: RSA-PSS salt length %d (the µTPM uses the hash length)", o.SaltLength)
			}
			r.Scheme = signreq.SchemeRSAPSS
		}
	default:
		return signreq.Request{}, fmt.Errorf("palisade: signer: unsupported public key type %T", pub)
	}
	return r, nil
}
