package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/sdk/go/pal"
)

func TestAllowed(t *testing.T) {
	d32, d48 := make([]byte, 32), make([]byte, 48)
	for _, tt := range []struct {
		alg  pal.KeyAlg
		r    signreq.Request
		want bool
	}{
		{pal.KeyRSA2048, signreq.Request{Scheme: signreq.SchemeRSAPSS, Hash: signreq.HashSHA256, Digest: d32}, true},
		{pal.KeyRSA2048, signreq.Request{Scheme: signreq.SchemeRSASSA, Hash: signreq.HashSHA384, Digest: d48}, true},
		{pal.KeyRSA2048, signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d32}, false},
		{pal.KeyECDSAP256, signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d32}, true},
		{pal.KeyECDSAP256, signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA384, Digest: d48}, false},
		{pal.KeyECDSAP256, signreq.Request{Scheme: signreq.SchemeEdDSA, Digest: []byte("m")}, false},
		{pal.KeyEd25519, signreq.Request{Scheme: signreq.SchemeEdDSA, Digest: []byte("m")}, false},
	} {
		if got := allowed(tt.alg, tt.r); got != tt.want {
			t.Errorf("allowed(%d, %+v) = %v", tt.alg, tt.r, got)
		}
	}
}

func FuzzHandle(f *testing.F) {
	d := sha256.Sum256(nil)
	f.Add(signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d[:]}.Marshal())
	f.Add([]byte{0xFF, 0xFF, 'K', 1, 2, 3})
	f.Add([]byte{0xFF, 0xFF, 'S', 1})
	f.Add([]byte{0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, in []byte) {
		alg, blob, priv = 0, nil, nil
		_, err := handle(bytes.Clone(in)) // must not panic
		// Without a key nothing is ever signed: a request fails with "no key" or is refused.
		if !(len(in) >= 3 && in[0] == 0xFF && in[1] == 0xFF) {
			var fl *pal.Failure
			if !errors.As(err, &fl) || (fl.Status != statusNoKey && fl.Status != statusRefused) {
				t.Fatalf("%x: %v, want refused or no key", in, err)
			}
		}
	})
}
