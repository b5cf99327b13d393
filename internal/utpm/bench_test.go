package utpm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/palisade-project/palisade/internal/utpm"
)

func BenchmarkExtend(b *testing.B) {
	a := newPlatform(b, randomMaster(b)).NewTPM(palA)
	d := utpm.Digest{1}
	for b.Loop() {
		a.Extend(1, d)
	}
}

var sealSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"4KiB", 4 << 10}}

func BenchmarkSeal(b *testing.B) {
	a := newPlatform(b, randomMaster(b)).NewTPM(palA)
	for _, sz := range sealSizes {
		b.Run(sz.name, func(b *testing.B) {
			data := make([]byte, sz.n)
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				if _, err := a.Seal(data, utpm.Policy{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnseal(b *testing.B) {
	a := newPlatform(b, randomMaster(b)).NewTPM(palA)
	for _, sz := range sealSizes {
		b.Run(sz.name, func(b *testing.B) {
			blob, err := a.Seal(make([]byte, sz.n), utpm.Policy{PCRMask: 1, CurrentPCRs: true})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(sz.n))
			for b.Loop() {
				if _, _, err := a.Unseal(blob); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkQuote(b *testing.B) {
	a := newPlatform(b, randomMaster(b)).NewTPM(palA)
	nonce := make([]byte, 32)
	for b.Loop() {
		if _, err := a.Quote(nonce, nil, 0xff); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeySign measures KeySign per algorithm next to the same signature made natively
// with crypto/*, so the report can give the µTPM's overhead as a ratio.
func BenchmarkKeySign(b *testing.B) {
	e := keys(b)
	d := sha256.Sum256([]byte("benchmark"))
	for _, al := range algs {
		s, h := utpm.SchemeECDSA, utpm.HashSHA256
		var native func() error
		switch al.alg {
		case utpm.KeyECDSAP256:
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			native = func() error { _, err := ecdsa.SignASN1(rand.Reader, k, d[:]); return err }
		case utpm.KeyEd25519:
			s, h = utpm.SchemeEdDSA, utpm.HashNone
			_, k, _ := ed25519.GenerateKey(rand.Reader)
			native = func() error { ed25519.Sign(k, d[:]); return nil }
		default:
			s = utpm.SchemeRSASSA
			bits := 2048
			if al.alg == utpm.KeyRSA3072 {
				bits = 3072
			}
			k, _ := rsa.GenerateKey(rand.Reader, bits)
			native = func() error { _, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:]); return err }
		}
		b.Run(al.name+"/utpm", func(b *testing.B) {
			blob := e.keys[al.alg].blob
			for b.Loop() {
				if _, err := e.a.KeySign(blob, s, h, d[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(al.name+"/native", func(b *testing.B) {
			for b.Loop() {
				if err := native(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUnsealPolicy compares UNSEAL of a 64-byte blob sealed to a measurement with one
// sealed to a name under a signer, whose every use asks the trusted configuration (a stat of
// the active pointer, then a lookup).
func BenchmarkUnsealPolicy(b *testing.B) {
	tr := newTrusted(b)
	tr.apply(b, 1, palB)
	p := newPlatform(b, randomMaster(b))
	p.SetAuthorizer(tr.w.UTPMAuthorizer())
	a, bt := p.NewTPM(palA), p.NewTPM(palB)
	for _, tc := range []struct {
		name string
		pol  utpm.Policy
	}{
		{"measurement", utpm.Policy{Target: palB}},
		{"name-under-signer", utpm.Policy{Name: "vault", Signer: tr.kid}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			blob, err := a.Seal(make([]byte, 64), tc.pol)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, _, err := bt.Unseal(blob); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
