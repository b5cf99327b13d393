package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/utpm"
)

var (
	quoteIssued = time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	quotePAL    = utpm.Digest{0xa1}
	quoteVisor  = utpm.Digest{0x76}
)

// utpmQuote returns a quote made by the µTPM and the identity key that signQuote it.
func utpmQuote(t testing.TB, nonce, user []byte, mask uint8) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	id, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := utpm.NewPlatform(utpm.PlatformConfig{
		MasterSecret: make([]byte, 32), Identity: id, Visor: quoteVisor, Rooted: true,
		Now: func() time.Time { return quoteIssued },
	})
	if err != nil {
		t.Fatal(err)
	}
	tpm := p.NewTPM(quotePAL)
	tpm.Extend(5, utpm.Digest{5})
	ev, err := tpm.Quote(nonce, user, mask)
	if err != nil {
		t.Fatal(err)
	}
	return ev, id
}

func TestVerifyRealQuote(t *testing.T) {
	ev, id := utpmQuote(t, []byte("fresh nonce"), []byte("user"), 1<<0|1<<5)
	c, err := attest.VerifyQuote(ev, &id.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pcr0 := sha256.Sum256(append(make([]byte, 32), quotePAL[:]...))
	d5 := utpm.Digest{5}
	pcr5 := sha256.Sum256(append(make([]byte, 32), d5[:]...))
	want := &attest.QuoteClaims{
		Version: 1, PAL: quotePAL, Visor: quoteVisor,
		PCRs:  map[int][32]byte{0: pcr0, 5: pcr5},
		Nonce: []byte("fresh nonce"), UserData: []byte("user"),
		IssuedAt: quoteIssued, Rooted: true,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("claims\n%+v\nwant\n%+v", c, want)
	}
	u, err := attest.DecodeQuoteUnverified(ev)
	if err != nil || !reflect.DeepEqual(u, want) {
		t.Fatalf("unverified decode: %+v, %v", u, err)
	}
	c2, msg, err := attest.ParseQuote(ev)
	if err != nil || !reflect.DeepEqual(c2, want) {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&id.PublicKey)
	kid := sha256.Sum256(der)
	if !bytes.Equal(msg.Headers.Unprotected[cose.HeaderLabelKeyID].([]byte), kid[:]) {
		t.Fatal("kid is not SHA-256 of the identity key's DER")
	}
}

// TestFlippedBytes: whatever byte of a real quote is flipped (each bit, one at a time),
// verification fails: every byte is signed, or is the unprotected key id, which is checked.
func TestFlippedBytes(t *testing.T) {
	ev, id := utpmQuote(t, []byte("n"), nil, 0xff)
	if _, err := attest.VerifyQuote(ev, &id.PublicKey); err != nil {
		t.Fatal(err)
	}
	for i := range ev {
		for bit := 0; bit < 8; bit++ {
			mut := bytes.Clone(ev)
			mut[i] ^= 1 << bit
			_, err := attest.VerifyQuote(mut, &id.PublicKey)
			switch {
			case err == nil:
				t.Fatalf("byte %d bit %d flipped: verified", i, bit)
			case !errors.Is(err, attest.ErrSignature) && !errors.Is(err, attest.ErrMalformed):
				t.Fatalf("byte %d bit %d flipped: error without a sentinel: %v", i, bit, err)
			}
		}
	}
	for n := 0; n < len(ev); n++ {
		if _, err := attest.VerifyQuote(ev[:n], &id.PublicKey); !errors.Is(err, attest.ErrMalformed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

func quoteClaimsMap() map[any]any {
	b32 := bytes.Repeat([]byte{3}, 32)
	return map[any]any{
		1: 1, 2: b32, 3: map[int][]byte{0: b32, 7: b32}, 4: []byte("n"), 5: []byte{},
		6: b32, 7: quoteIssued.Unix(), 8: false,
	}
}

func encodeClaims(t testing.TB, v any) []byte {
	em, _ := cbor.CoreDetEncOptions().EncMode()
	b, err := em.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signQuote wraps payload in a COSE_Sign1 signQuote by key with alg and content type ct.
func signQuote(t testing.TB, key *ecdsa.PrivateKey, alg cose.Algorithm, ct any, kid []byte, payload []byte) []byte {
	t.Helper()
	s, err := cose.NewSigner(alg, key)
	if err != nil {
		t.Fatal(err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(alg)
	if ct != nil {
		msg.Headers.Protected[cose.HeaderLabelContentType] = ct
	}
	if kid != nil {
		msg.Headers.Unprotected[cose.HeaderLabelKeyID] = kid
	}
	msg.Payload = payload
	if err := msg.Sign(rand.Reader, nil, s); err != nil {
		t.Fatal(err)
	}
	b, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyQuoteRejects(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ct := attest.QuoteContentType
	with := func(k, v any) []byte {
		m := quoteClaimsMap()
		m[k] = v
		return encodeClaims(t, m)
	}
	without := func(k any) []byte {
		m := quoteClaimsMap()
		delete(m, k)
		return encodeClaims(t, m)
	}
	base := encodeClaims(t, quoteClaimsMap())
	// Hand-made encodings that a deterministic encoder would never produce.
	dup := append([]byte{0xa9}, append(bytes.Clone(base[1:]), 0x01, 0x01)...)
	nonMinimal := append([]byte{0xa8, 0x01, 0x18, 0x01}, base[3:]...) // version as 1-byte uint
	indef := append(append([]byte{0xbf}, base[1:]...), 0xff)
	tagged := append([]byte{0xd8, 0x18}, base...) // tag 24 around the map
	if base[0] != 0xa8 || base[1] != 0x01 || base[2] != 0x01 {
		t.Fatalf("unexpected base encoding %x", base[:3])
	}

	for _, tc := range []struct {
		name string
		ev   []byte
		want error // nil: valid
	}{
		{"valid", signQuote(t, key, cose.AlgorithmES256, ct, nil, base), nil},
		{"version 2", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(1, 2)), attest.ErrVersion},
		{"version 0", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(1, 0)), attest.ErrVersion},
		{"version text", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(1, "1")), attest.ErrMalformed},
		{"no version", signQuote(t, key, cose.AlgorithmES256, ct, nil, without(1)), attest.ErrMalformed},
		{"no rooted", signQuote(t, key, cose.AlgorithmES256, ct, nil, without(8)), attest.ErrMalformed},
		{"no PCRs", signQuote(t, key, cose.AlgorithmES256, ct, nil, without(3)), attest.ErrMalformed},
		{"extra claim", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(9, 0)), attest.ErrMalformed},
		{"negative claim key", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(-1, 0)), attest.ErrMalformed},
		{"text claim key", signQuote(t, key, cose.AlgorithmES256, ct, nil, with("pal", 0)), attest.ErrMalformed},
		{"PAL 31 bytes", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(2, make([]byte, 31))), attest.ErrMalformed},
		{"PAL as text", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(2, string(make([]byte, 32)))), attest.ErrMalformed},
		{"visor 33 bytes", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(6, make([]byte, 33))), attest.ErrMalformed},
		{"PCR index 8", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(3, map[int][]byte{8: make([]byte, 32)})), attest.ErrMalformed},
		{"PCR index -1", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(3, map[int][]byte{-1: make([]byte, 32)})), attest.ErrMalformed},
		{"PCR value short", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(3, map[int][]byte{1: make([]byte, 20)})), attest.ErrMalformed},
		{"PCRs as array", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(3, [][]byte{make([]byte, 32)})), attest.ErrMalformed},
		{"nonce too long", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(4, make([]byte, 1025))), attest.ErrMalformed},
		{"user data too long", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(5, make([]byte, 4097))), attest.ErrMalformed},
		{"issued-at float", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(7, 1.5)), attest.ErrMalformed},
		{"rooted as 1", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(8, 1)), attest.ErrMalformed},
		{"rooted as null", signQuote(t, key, cose.AlgorithmES256, ct, nil, with(8, nil)), attest.ErrMalformed},
		{"duplicate claim", signQuote(t, key, cose.AlgorithmES256, ct, nil, dup), attest.ErrMalformed},
		{"non-minimal integer", signQuote(t, key, cose.AlgorithmES256, ct, nil, nonMinimal), attest.ErrMalformed},
		{"indefinite map", signQuote(t, key, cose.AlgorithmES256, ct, nil, indef), attest.ErrMalformed},
		{"tagged claims", signQuote(t, key, cose.AlgorithmES256, ct, nil, tagged), attest.ErrMalformed},
		{"trailing bytes", signQuote(t, key, cose.AlgorithmES256, ct, nil, append(bytes.Clone(base), 0)), attest.ErrMalformed},
		{"claims not a map", signQuote(t, key, cose.AlgorithmES256, ct, nil, encodeClaims(t, []int{1})), attest.ErrMalformed},
		{"no content type", signQuote(t, key, cose.AlgorithmES256, nil, nil, base), attest.ErrMalformed},
		{"other content type", signQuote(t, key, cose.AlgorithmES256, "application/cbor", nil, base), attest.ErrMalformed},
		{"numeric content type", signQuote(t, key, cose.AlgorithmES256, 60, nil, base), attest.ErrMalformed},
		{"ES384", signQuote(t, p384, cose.AlgorithmES384, ct, nil, base), attest.ErrSignature},
		{"other key", signQuote(t, p384, cose.AlgorithmES384, ct, nil, base), attest.ErrSignature},
		{"wrong key id", signQuote(t, key, cose.AlgorithmES256, ct, []byte("other"), base), attest.ErrSignature},
		{"too large", make([]byte, attest.MaxQuoteSize+1), attest.ErrMalformed},
		{"empty", nil, attest.ErrMalformed},
		{"untagged", signQuote(t, key, cose.AlgorithmES256, ct, nil, base)[1:], attest.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := attest.VerifyQuote(tc.ev, &key.PublicKey)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c.PCRs[7] != [32]byte(bytes.Repeat([]byte{3}, 32)) || len(c.PCRs) != 2 || c.UserData == nil {
					t.Fatalf("claims %+v", c)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}

	// A flipped signature byte.
	ev := signQuote(t, key, cose.AlgorithmES256, ct, nil, base)
	ev[len(ev)-1] ^= 1
	if _, err := attest.VerifyQuote(ev, &key.PublicKey); !errors.Is(err, attest.ErrSignature) {
		t.Fatalf("flipped signature: %v", err)
	}
	if _, err := attest.VerifyQuote(ev, nil); err == nil {
		t.Fatal("nil identity accepted")
	}
}

func FuzzVerifyQuote(f *testing.F) {
	ev, id := utpmQuote(f, []byte("nonce"), []byte("user"), 0x21)
	orig, err := attest.VerifyQuote(ev, &id.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev)
	f.Add(ev[:len(ev)/2])
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0xf6, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := attest.VerifyQuote(b, &id.PublicKey)
		if err == nil {
			if !reflect.DeepEqual(c, orig) {
				t.Fatalf("verified forged claims %+v", c)
			}
			return
		}
		if !errors.Is(err, attest.ErrMalformed) && !errors.Is(err, attest.ErrSignature) && !errors.Is(err, attest.ErrVersion) {
			t.Fatalf("error without sentinel: %v", err)
		}
	})
}

func FuzzDecodeQuote(f *testing.F) {
	ev, _ := utpmQuote(f, []byte("nonce"), nil, 0xff)
	f.Add(ev)
	f.Add(encodeClaims(f, quoteClaimsMap()))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Add(signQuote(f, key, cose.AlgorithmES256, attest.QuoteContentType, nil, encodeClaims(f, quoteClaimsMap())))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := attest.DecodeQuoteUnverified(b)
		if err != nil {
			if !errors.Is(err, attest.ErrMalformed) && !errors.Is(err, attest.ErrVersion) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		if c.Version != attest.QuoteVersion || len(c.Nonce) > 1024 || len(c.UserData) > 4096 || c.PCRs == nil {
			t.Fatalf("decoded out-of-spec claims %+v", c)
		}
		for i := range c.PCRs {
			if i < 0 || i > 7 {
				t.Fatalf("PCR index %d", i)
			}
		}
	})
}

func BenchmarkVerifyQuote(b *testing.B) {
	ev, id := utpmQuote(b, make([]byte, 32), nil, 0xff)
	for b.Loop() {
		if _, err := attest.VerifyQuote(ev, &id.PublicKey); err != nil {
			b.Fatal(err)
		}
	}
}
