// Command keygen is the key-generation PAL of the HTTPS example (paper §6.3). It creates the
// server's private key so that only the signing PAL can use it, and outputs only the public
// key and an opaque blob that the untrusted web server stores and hands to the signing PAL.
//
// Input 'K' ‖ u8 alg ‖ signer measurement[32]  (variant 1, the default)
//
//	The key is a µTPM key object (KEY_CREATE) bound to the signing PAL's measurement: the
//	private key never exists in PAL or application memory.
//	Output: u32le pub_len ‖ public key (DER SubjectPublicKeyInfo) ‖ key blob.
//
// Input 'S' ‖ signer measurement[32]  (variant 2, as in the paper)
//
//	The PAL generates an ECDSA P-256 key with its own crypto and seals the private scalar
//	for the signing PAL. The key exists in this PAL's memory for the duration of the call.
//	Output: u32le pub_len ‖ public key (uncompressed SEC 1 point) ‖ sealed blob.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/sdk/go/pal"
)

func init() {
	pal.Handle(func(in []byte) ([]byte, error) {
		if len(in) == 0 {
			return nil, errors.New("keygen: empty input")
		}
		switch in[0] {
		case 'K':
			if len(in) != 2+32 {
				return nil, errors.New("keygen: want 'K' ‖ alg ‖ measurement[32]")
			}
			alg := pal.KeyAlg(in[1])
			switch alg {
			case pal.KeyECDSAP256, pal.KeyRSA2048, pal.KeyRSA3072:
			default:
				return nil, fmt.Errorf("keygen: algorithm %d is not a TLS server key this example supports", alg)
			}
			var p pal.Policy
			copy(p.Target[:], in[2:])
			blob, pub, err := pal.KeyCreate(alg, p)
			if err != nil {
				return nil, fmt.Errorf("keygen: %w", err)
			}
			return pack(pub, blob), nil
		case 'S':
			if len(in) != 1+32 {
				return nil, errors.New("keygen: want 'S' ‖ measurement[32]")
			}
			// crypto/rand reads WASI random_get, which the engine serves from the µTPM.
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, fmt.Errorf("keygen: %w", err)
			}
			priv, err := k.Bytes()
			if err != nil {
				return nil, err
			}
			pub, err := k.PublicKey.Bytes()
			if err != nil {
				return nil, err
			}
			var p pal.Policy
			copy(p.Target[:], in[1:])
			blob, err := pal.Seal(priv, p)
			clear(priv)
			if err != nil {
				return nil, fmt.Errorf("keygen: seal: %w", err)
			}
			return pack(pub, blob), nil
		}
		return nil, fmt.Errorf("keygen: unknown command %q", in[0])
	})
}

func pack(pub, blob []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(pub)))
	return append(append(out, pub...), blob...)
}

func main() {}
