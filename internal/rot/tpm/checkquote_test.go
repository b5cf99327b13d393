package tpm

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/swtpmtest"
)

// The TPM quote inside an endorsement verifies with tpm2-tools, an implementation that shares
// no code with ours: AK public as PEM, the TPMS_ATTEST as the message, the TPMT_SIGNATURE, the
// replayed PCR value (without selection, so -l says which PCR), the qualifying data.
func TestEndorsementVerifiesWithTPM2Checkquote(t *testing.T) {
	bin, err := exec.LookPath("tpm2_checkquote")
	if err != nil {
		t.Skip("tpm2_checkquote not installed (apt-get install tpm2-tools): ", err)
	}
	sw := swtpmtest.Start(t)
	r := mustOpen(t, sw, t.TempDir(), visorFile(t, "visor A"), []byte("conf"))
	defer r.Close()
	nonce := []byte("checkquote nonce")
	b, err := r.Endorse(context.Background(), nonce)
	if err != nil {
		t.Fatal(err)
	}
	en, err := ParseEndorsement(b)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](en.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	akPEM := write("ak.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	msg := write("quote.msg", en.Quoted)
	sig := write("quote.sig", en.Signature)
	pcr := Replay(en.Events, en.PCR)
	pcrs := write("pcrs.bin", pcr[:])
	qual := hex.EncodeToString(QualifyingData(r.identityDER, nonce))
	check := func(qualification string, pcrFile string) ([]byte, error) {
		return exec.Command(bin, "-u", akPEM, "-m", msg, "-s", sig, "-g", "sha256",
			"-f", pcrFile, "-l", fmt.Sprintf("sha256:%d", en.PCR), "-q", qualification).CombinedOutput()
	}
	if out, err := check(qual, pcrs); err != nil {
		t.Fatalf("tpm2_checkquote rejected our quote: %v\n%s", err, out)
	}
	// And it is not a rubber stamp: wrong qualifying data or PCR value fail.
	wrongQual := hex.EncodeToString(QualifyingData(r.identityDER, []byte("other nonce")))
	if out, err := check(wrongQual, pcrs); err == nil {
		t.Fatalf("tpm2_checkquote accepted wrong qualifying data:\n%s", out)
	} else {
		t.Logf("wrong qualifying data: %s", out)
	}
	bad := pcr
	bad[0] ^= 1
	if out, err := check(qual, write("bad.bin", bad[:])); err == nil {
		t.Fatalf("tpm2_checkquote accepted a wrong PCR value:\n%s", out)
	} else {
		t.Logf("wrong PCR value: %s", out)
	}
}
