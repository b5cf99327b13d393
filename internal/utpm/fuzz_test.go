package utpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/binary"
	mrand "math/rand/v2"
	"testing"

	"github.com/palisade-project/palisade/internal/utpm"
)

// fuzzPlatform has a fixed master secret so that blobs saved in testdata/fuzz stay meaningful
// (not foreign) across runs, and a seeded random source so that every fuzz worker process
// seals the same seed blobs (nonces are drawn from it).
func fuzzPlatform(t testing.TB) *utpm.Platform {
	id, err := ecdsa.GenerateKey(elliptic.P256(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := utpm.NewPlatform(utpm.PlatformConfig{
		MasterSecret: bytes.Repeat([]byte{0x42}, 32),
		Identity:     id,
		Rand:         mrand.NewChaCha8([32]byte{1}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// policySentinels are the only errors a hostile blob may produce.
var policySentinels = []error{
	utpm.ErrMalformed, utpm.ErrForeign, utpm.ErrWrongPAL, utpm.ErrPCRMismatch,
	utpm.ErrTampered, utpm.ErrWrongType, utpm.ErrUnsupported, utpm.ErrInvalid, utpm.ErrTooLarge,
	utpm.ErrNotAuthorized,
}

func isSentinel(err error) bool {
	for _, s := range policySentinels {
		if utpm.Code(err) == utpm.Code(s) && utpm.Code(err) != utpm.Code(utpm.ErrInternal) {
			return true
		}
	}
	return false
}

func FuzzUnseal(f *testing.F) {
	p := fuzzPlatform(f)
	a := p.NewTPM(palA)
	valid, err := a.Seal([]byte("sealed data"), utpm.Policy{PCRMask: 0x03, CurrentPCRs: true})
	if err != nil {
		f.Fatal(err)
	}
	forB, _ := a.Seal([]byte("for b"), utpm.Policy{Target: palB})
	kblob, _, _ := a.KeyCreate(utpm.KeyEd25519, utpm.Policy{})
	f.Add(valid)
	f.Add(forB)
	f.Add(kblob)
	f.Add(valid[:len(valid)-1])
	f.Add([]byte("PLSB\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, blob []byte) {
		data, creator, err := a.Unseal(blob)
		if err == nil {
			// Only blobs that this platform really sealed for A may open.
			if !bytes.Equal(blob, valid) || string(data) != "sealed data" || creator != palA {
				t.Fatalf("forged blob unsealed: %x", blob)
			}
			return
		}
		if !isSentinel(err) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// FuzzUnsealName feeds hostile blobs to a µTPM whose platform has a real trusted
// configuration (B listed under "vault"), so the name-under-signer path is reached.
func FuzzUnsealName(f *testing.F) {
	tr := newTrusted(f)
	tr.apply(f, 1, palB)
	p := fuzzPlatform(f)
	p.SetAuthorizer(tr.w.UTPMAuthorizer())
	b := p.NewTPM(palB)
	a := p.NewTPM(palA)
	valid, err := a.Seal([]byte("for the vault"), utpm.Policy{Name: "vault", Signer: tr.kid})
	if err != nil {
		f.Fatal(err)
	}
	other, _ := a.Seal([]byte("x"), utpm.Policy{Name: "other", Signer: tr.kid, PCRMask: 0x81, CurrentPCRs: true})
	kblob, _, _ := a.KeyCreate(utpm.KeyEd25519, utpm.Policy{Name: "vault", Signer: tr.kid})
	f.Add(valid)
	f.Add(other)
	f.Add(kblob)
	f.Add(valid[:len(valid)-20])
	f.Add(valid[:45])
	f.Fuzz(func(t *testing.T, blob []byte) {
		data, creator, err := b.Unseal(blob)
		if err == nil {
			if !bytes.Equal(blob, valid) || string(data) != "for the vault" || creator != palA {
				t.Fatalf("forged blob unsealed: %x", blob)
			}
			return
		}
		if !isSentinel(err) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func FuzzKeySign(f *testing.F) {
	p := fuzzPlatform(f)
	a := p.NewTPM(palA)
	ec, _, err := a.KeyCreate(utpm.KeyECDSAP256, utpm.Policy{})
	if err != nil {
		f.Fatal(err)
	}
	ed, _, err := a.KeyCreate(utpm.KeyEd25519, utpm.Policy{PCRMask: 1, CurrentPCRs: true})
	if err != nil {
		f.Fatal(err)
	}
	data, _ := a.Seal([]byte("data"), utpm.Policy{})
	// Input: u16 scheme ‖ u16 hash ‖ u32 blob_len ‖ blob ‖ digest, as the KEY_SIGN request.
	req := func(s utpm.Scheme, h utpm.Hash, blob, digest []byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, uint16(s))
		b = binary.LittleEndian.AppendUint16(b, uint16(h))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(blob)))
		return append(append(b, blob...), digest...)
	}
	f.Add(req(utpm.SchemeECDSA, utpm.HashSHA256, ec, make([]byte, 32)))
	f.Add(req(utpm.SchemeEdDSA, utpm.HashNone, ed, []byte("msg")))
	f.Add(req(utpm.SchemeRSAPSS, utpm.HashSHA512, ec, make([]byte, 64)))
	f.Add(req(utpm.SchemeEdDSA, utpm.HashNone, data, []byte("msg")))
	f.Add(req(utpm.SchemeECDSA, utpm.HashSHA384, ec[:40], make([]byte, 48)))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 8 {
			return
		}
		s := utpm.Scheme(binary.LittleEndian.Uint16(in))
		h := utpm.Hash(binary.LittleEndian.Uint16(in[2:]))
		n := binary.LittleEndian.Uint32(in[4:])
		if uint64(n) > uint64(len(in)-8) {
			return
		}
		blob, digest := in[8:8+n], in[8+n:]
		sig, err := a.KeySign(blob, s, h, digest)
		if err == nil {
			// Key generation ignores the seeded source (Go 1.26), so a genuine key blob from
			// another worker or an earlier run differs from ec and ed; it must still be a key
			// blob of this platform for A.
			if len(blob) < 39 || string(blob[:5]) != "PLSB\x01" || blob[5] != 2 || utpm.Digest(blob[7:39]) != palA {
				t.Fatalf("signed with a forged blob: %x", blob)
			}
			if len(sig) == 0 {
				t.Fatal("empty signature")
			}
			return
		}
		if !isSentinel(err) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
