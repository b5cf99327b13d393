package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/rot/tpm"
)

// FuzzTPMStructures feeds hostile bytes to the TPM structure decoders the verifier uses; go-tpm's
// reflective decoder must never take the process down.
func FuzzTPMStructures(f *testing.F) {
	if b, err := os.ReadFile("testdata/evidence-swtpm.cbor"); err == nil {
		if ev, err := Parse(b); err == nil {
			if en, err := tpm.ParseEndorsement(ev.Endorsement); err == nil {
				f.Add(en.AKPublic)
				f.Add(en.Quoted)
				f.Add(en.Signature)
			}
		}
	}
	f.Add([]byte{0x00, 0x23, 0x00, 0x0b})
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseAK(b)
		_ = verifyTPMSignature(&k.PublicKey, []byte("msg"), b)
		if att, err := unmarshalTPM[tpm2.TPMSAttest](b); err == nil {
			if q, err := att.Attested.Quote(); err == nil {
				_ = selectedPCRs(q.PCRSelect)
			}
		}
	})
}
