package keys_test

import (
	"testing"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/keys"
)

// FuzzVerifyAttestation feeds hostile bundles to the verifier: it must never panic, and what
// it accepts must be complete. The seed corpus holds a real bundle (testdata/fuzz) made by the
// test daemon of this package (visor Digest{1}, nonce "n"), which verifies with these options.
func FuzzVerifyAttestation(f *testing.F) {
	f.Add([]byte{0xa0})
	f.Add([]byte("not cbor"))
	f.Add([]byte{0xa8, 0x01, 0x01, 0x02, 0x61, 0x6b, 0x03, 0x6a, 'e', 'c', 'd', 's', 'a', '-', 'p', '2', '5', '6', 0x04, 0x40, 0x05, 0xf4, 0x06, 0x40, 0x07, 0x40, 0x08, 0x40})
	o := keys.VerifyOptions{Nonce: []byte("n"), Evidence: attest.Options{Visor: visorM, AllowUnrooted: true}}
	var err error
	if o.KeyGenPAL, err = keys.Measurement(keys.KeyGenImage); err != nil {
		f.Fatal(err)
	}
	if o.SignerPAL, err = keys.Measurement(keys.SignerImage); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := keys.VerifyAttestation(b, o)
		if err == nil && (v.PublicKey == nil || v.Use == nil || v.Creation == nil || v.Imported) {
			t.Fatalf("accepted an incomplete attestation %x: %+v", b, v)
		}
	})
}
