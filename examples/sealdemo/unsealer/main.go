// Command unsealer is PAL B of the sealing demo (`palisade demo seal`): it unseals a secret
// that PAL A sealed for it, records where the secret came from in PCR 1, and proves its
// identity with a µTPM quote that carries the sender's measurement.
//
// Input: u32le nonce_len ‖ nonce ‖ blob.
// Output: u32le quote_len ‖ quote ‖ creator[32] ‖ secret.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"

	"github.com/palisade-project/palisade/sdk/go/pal"
)

func init() {
	pal.Handle(func(in []byte) ([]byte, error) {
		if len(in) < 4 || uint64(binary.LittleEndian.Uint32(in)) > uint64(len(in)-4) {
			return nil, errors.New("unsealer: want u32 nonce_len ‖ nonce ‖ blob")
		}
		n := binary.LittleEndian.Uint32(in)
		nonce, blob := in[4:4+n], in[4+n:]
		secret, creator, err := pal.Unseal(blob)
		if err != nil {
			return nil, err
		}
		if err := pal.Extend(1, sha256.Sum256(append([]byte("received from "), creator[:]...))); err != nil {
			return nil, err
		}
		quote, err := pal.Quote(nonce, creator[:], 0b11) // PCR0 (identity) and PCR1
		if err != nil {
			return nil, err
		}
		out := binary.LittleEndian.AppendUint32(nil, uint32(len(quote)))
		out = append(out, quote...)
		out = append(out, creator[:]...)
		return append(out, secret...), nil
	})
}

func main() {}
