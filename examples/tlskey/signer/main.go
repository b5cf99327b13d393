// Command signer is the signing PAL of the HTTPS example (paper §6.3). The web server gives it
// the key once (install) and then sends it TLS handshake signature requests in the encoding of
// palisade/client/signreq; it signs only requests of the shape a TLS 1.2/1.3 server signature
// with its key type has, and refuses everything else with status 2.
//
// Install (first two bytes 0xFFFF, which is no signreq scheme):
//
//	0xFF 0xFF 'K' ‖ u8 alg ‖ key blob     a µTPM key object made for this PAL (variant 1)
//	0xFF 0xFF 'S' ‖ sealed blob           an ECDSA P-256 scalar sealed for this PAL (variant 2)
//
// The key stays in PAL memory while the PAL is registered. A PAL sees only a digest: it
// cannot tell a handshake digest from any other digest of the same hash, so what it enforces
// is the scheme, the hash and the length (and that a key is installed at all).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/sdk/go/pal"
)

const (
	statusRefused = 2 // not a request this PAL signs
	statusNoKey   = 3 // no key installed yet
)

var (
	alg  pal.KeyAlg
	blob []byte            // variant 1: the key object, usable only through KEY_SIGN
	priv *ecdsa.PrivateKey // variant 2: the unsealed key
)

func init() { pal.Handle(handle) }

func handle(in []byte) ([]byte, error) {
	if len(in) >= 3 && in[0] == 0xFF && in[1] == 0xFF {
		return nil, install(in[2], in[3:])
	}
	r, err := signreq.Unmarshal(in)
	if err != nil {
		return nil, refuse("%v", err)
	}
	switch {
	case priv != nil:
		if r.Scheme != signreq.SchemeECDSA || r.Hash != signreq.HashSHA256 {
			return nil, refuse("scheme %#04x hash %#04x with an ECDSA P-256 key", r.Scheme, r.Hash)
		}
		return ecdsa.SignASN1(rand.Reader, priv, r.Digest)
	case blob != nil:
		if !allowed(alg, r) {
			return nil, refuse("scheme %#04x hash %#04x with key algorithm %d", r.Scheme, r.Hash, alg)
		}
		return pal.KeySign(blob, pal.Scheme(r.Scheme), pal.Hash(r.Hash), r.Digest)
	}
	return nil, &pal.Failure{Status: statusNoKey, Output: []byte("signer: no key installed")}
}

// allowed says whether a TLS 1.2 or 1.3 server with a key of type a makes request r:
// RSA: rsa_pkcs1_* (TLS 1.2) and rsa_pss_rsae_* with SHA-256/384/512; ECDSA P-256:
// ecdsa_secp256r1_sha256 (TLS 1.3 ties P-256 to SHA-256; Go's TLS 1.2 server uses it too).
// SHA-1 never reaches here: signreq has no id for it.
func allowed(a pal.KeyAlg, r signreq.Request) bool {
	switch a {
	case pal.KeyRSA2048, pal.KeyRSA3072:
		return r.Scheme == signreq.SchemeRSASSA || r.Scheme == signreq.SchemeRSAPSS
	case pal.KeyECDSAP256:
		return r.Scheme == signreq.SchemeECDSA && r.Hash == signreq.HashSHA256
	}
	return false
}

func install(kind byte, b []byte) error {
	if blob != nil || priv != nil {
		return refuse("a key is already installed")
	}
	switch kind {
	case 'K':
		if len(b) < 2 {
			return refuse("install: want alg ‖ blob")
		}
		switch a := pal.KeyAlg(b[0]); a {
		case pal.KeyECDSAP256, pal.KeyRSA2048, pal.KeyRSA3072:
			alg = a
		default:
			return refuse("install: key algorithm %d", a)
		}
		blob = append([]byte(nil), b[1:]...)
		return nil
	case 'S':
		raw, _, err := pal.Unseal(b)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
		clear(raw)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		priv = k
		return nil
	}
	return errors.New("install: unknown kind")
}

func refuse(format string, a ...any) error {
	return &pal.Failure{Status: statusRefused, Output: fmt.Appendf(nil, "signer: refused: "+format, a...)}
}

func main() {}
