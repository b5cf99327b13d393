package signreq

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{SchemeECDSA, HashSHA256, bytes.Repeat([]byte{1}, 32)},
		{SchemeRSAPSS, HashSHA384, bytes.Repeat([]byte{2}, 48)},
		{SchemeRSASSA, HashSHA512, bytes.Repeat([]byte{3}, 64)},
		{SchemeEdDSA, HashNone, []byte("a whole message")},
		{SchemeEdDSA, HashNone, nil},
	} {
		got, err := Unmarshal(r.Marshal())
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if got.Scheme != r.Scheme || got.Hash != r.Hash || !bytes.Equal(got.Digest, r.Digest) {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"short":         {1, 2, 3},
		"bad length":    Request{SchemeECDSA, HashSHA256, make([]byte, 31)}.Marshal(),
		"no hash":       Request{SchemeECDSA, HashNone, nil}.Marshal(),
		"eddsa hashed":  Request{SchemeEdDSA, HashSHA512, make([]byte, 64)}.Marshal(),
		"eddsa too big": Request{SchemeEdDSA, HashNone, make([]byte, MaxDigest+1)}.Marshal(),
		"scheme":        Request{0x99, HashSHA256, make([]byte, 32)}.Marshal(),
	} {
		if _, err := Unmarshal(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(Request{SchemeECDSA, HashSHA256, make([]byte, 32)}.Marshal())
	f.Add(Request{SchemeEdDSA, HashNone, []byte("m")}.Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Unmarshal(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}
