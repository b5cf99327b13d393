package pal_test

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/sdk/go/pal"
)

// A PAL that keeps a secret sealed to itself: "put" seals its input and returns the blob for
// the application to store; "get" unseals a blob, which only this PAL (same measurement) can do.
// In a PAL the handler is registered in an init function and main is empty; this example is
// compiled, not run (it needs the µTPM of a PAL).
func Example() {
	pal.Handle(func(in []byte) ([]byte, error) {
		if len(in) == 0 {
			return nil, &pal.Failure{Status: 2, Output: []byte("usage: 'p' data | 'g' blob")}
		}
		switch in[0] {
		case 'p':
			return pal.Seal(in[1:], pal.Policy{}) // zero Target: sealed to this PAL
		case 'g':
			data, _, err := pal.Unseal(in[1:])
			return data, err // an Errno (E_WRONGPAL, E_TAMPERED…) ends the call with status 1
		}
		return nil, &pal.Failure{Status: 2, Output: []byte("unknown command")}
	})
}

// A PAL proves to a relying party which code it is: it quotes the relying party's nonce and
// binds data of its own (here the hash of a public key it created). The application returns the
// quote, or evidence built around it (client.Client.Attest), to the relying party, which checks
// it with package attest. Compiled, not run.
func ExampleQuote() {
	nonce := []byte("from the relying party")
	_, pub, err := pal.KeyCreate(pal.KeyECDSAP256, pal.Policy{})
	if err != nil {
		fmt.Println(err)
		return
	}
	user := sha256.Sum256(pub)
	quote, err := pal.Quote(nonce, user[:], 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d-byte quote\n", len(quote))
}

// Outside a PAL — in a unit test of the PAL's logic on the host — every µTPM operation fails
// with EUnsupported.
func ExampleRandom_outsideAPAL() {
	err := pal.Random(make([]byte, 16))
	fmt.Println(errors.Is(err, pal.EUnsupported))
	// Output: true
}

// An Errno says what the µTPM refused, and why.
func ExampleErrno() {
	var err error = pal.EWrongPAL // as Unseal returns it for a blob sealed to another PAL
	fmt.Println(err)
	fmt.Println(errors.Is(err, pal.EWrongPAL))
	// Output:
	// utpm: E_WRONGPAL: sealed blob is bound to another PAL
	// true
}
