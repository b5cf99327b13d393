// Command sealer is PAL A of the sealing demo (`palisade demo seal`): it seals a secret so that
// only the PAL whose measurement it is given can unseal it.
//
// Input: 's' ‖ target measurement[32] ‖ secret → output: the sealed blob.
// Input: 'u' ‖ blob → tries to unseal the blob itself (the demo shows that this fails).
package main

import (
	"errors"

	"github.com/palisade-project/palisade/sdk/go/pal"
)

func init() {
	pal.Handle(func(in []byte) ([]byte, error) {
		if len(in) == 0 {
			return nil, errors.New("sealer: empty input")
		}
		switch in[0] {
		case 's':
			if len(in) < 1+32 {
				return nil, errors.New("sealer: want 's' ‖ target[32] ‖ secret")
			}
			var p pal.Policy
			copy(p.Target[:], in[1:33])
			return pal.Seal(in[33:], p)
		case 'u':
			data, _, err := pal.Unseal(in[1:])
			return data, err
		}
		return nil, errors.New("sealer: unknown command")
	})
}

func main() {}
