// Command signpal is a Go PAL that holds an ECDSA P-256 key as a µTPM key object, created at
// its first call and usable only by this PAL. An empty input returns the public key (DER
// SubjectPublicKeyInfo); any other input is a client/signreq request, which it signs.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o signpal.wasm ./signpal
package main

import (
	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/sdk/go/pal"
)

var blob, pub []byte // the key object and its public key, kept in PAL memory

func init() {
	pal.Handle(func(in []byte) ([]byte, error) {
		if blob == nil {
			var err error
			if blob, pub, err = pal.KeyCreate(pal.KeyECDSAP256, pal.Policy{}); err != nil {
				return nil, err
			}
		}
		if len(in) == 0 {
			return pub, nil
		}
		r, err := signreq.Unmarshal(in)
		if err != nil {
			return nil, &pal.Failure{Status: 2, Output: []byte(err.Error())}
		}
		if r.Scheme != signreq.SchemeECDSA || r.Hash != signreq.HashSHA256 {
			return nil, &pal.Failure{Status: 2, Output: []byte("signpal: ECDSA with SHA-256 only")}
		}
		return pal.KeySign(blob, pal.Scheme(r.Scheme), pal.Hash(r.Hash), r.Digest)
	})
}

func main() {}
