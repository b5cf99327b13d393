package signreq_test

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/palisade-project/palisade/client/signreq"
)

// client.Signer encodes a request; the signing PAL decodes it and decides whether to sign.
func Example() {
	digest := sha256.Sum256([]byte("message"))
	wire := signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: digest[:]}.Marshal()
	fmt.Printf("%d bytes: % x ‖ digest\n", len(wire), wire[:4])

	// In the PAL:
	r, err := signreq.Unmarshal(wire)
	if err != nil {
		fmt.Println("refuse:", err)
		return
	}
	fmt.Printf("scheme %#04x, hash %#04x, %d-byte digest\n", r.Scheme, r.Hash, len(r.Digest))
	// Output:
	// 36 bytes: 18 00 0b 00 ‖ digest
	// scheme 0x0018, hash 0x000b, 32-byte digest
}

// Unmarshal refuses a request whose digest does not fit its hash, so a PAL never signs what
// it cannot describe.
func ExampleUnmarshal() {
	short := signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA384, Digest: make([]byte, 32)}.Marshal()
	_, err := signreq.Unmarshal(short)
	fmt.Println(errors.Is(err, signreq.ErrMalformed), err)
	// Output: true signreq: malformed request: digest of 32 bytes for hash 0x000c
}
