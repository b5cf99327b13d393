package attest_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/attest"
)

// TestAKTemplateWithTPM2Tools checks docs/attestation.md §3.1 with an implementation that
// shares no code with ours: tpm2-tools recreates the AK from the documented template on the
// same TPM, and the TPM's name and qualified name for it are those of ak_public
// (tpm2.ObjectName and attest.AKQualifiedName), which is what the quote's qualifiedSigner holds.
func TestAKTemplateWithTPM2Tools(t *testing.T) {
	for _, tool := range []string{"tpm2_createprimary", "tpm2_readpublic"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool+" not installed (apt-get install tpm2-tools): ", err)
		}
	}
	v := startVisor(t, "visor A")
	nonce := []byte("template nonce")
	ev := v.evidence(t, nonce)
	if _, err := attest.Verify(ev, v.options(nonce)); err != nil { // qualifiedSigner bound
		t.Fatal(err)
	}
	akPublic := v.root.AKPublic()
	v.root.Close() // swtpm serves one connection at a time

	dir := t.TempDir()
	// tpm2-tools' swtpm TCTI finds the control socket at PATH.ctrl.
	if err := os.Symlink(filepath.Join(v.sw.Dir, "ctrl"), v.sw.Socket+".ctrl"); err != nil {
		t.Fatal(err)
	}
	// unique.x = "palisade.ak.v1", unique.y empty: tpm2-tools reads TPMU_PUBLIC_ID with
	// little-endian sizes.
	unique := filepath.Join(dir, "unique.bin")
	if err := os.WriteFile(unique, append(append([]byte{14, 0}, "palisade.ak.v1"...), 0, 0), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, name, qname := filepath.Join(dir, "ak.ctx"), filepath.Join(dir, "name.bin"), filepath.Join(dir, "qname.bin")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI=swtpm:path="+v.sw.Socket)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("tpm2_createprimary", "-C", "e", "-g", "sha256", "-G", "ecc256:ecdsa-sha256:null",
		"-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|sign",
		"-u", unique, "-c", ctx)
	run("tpm2_readpublic", "-c", ctx, "-n", name, "-q", qname)

	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		t.Fatal(err)
	}
	wantName, err := tpm2.ObjectName(pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		file string
		want []byte
	}{
		{"name", name, wantName.Buffer},
		{"qualified name", qname, attest.AKQualifiedName(akPublic)},
	} {
		got, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: tpm2-tools %s, ours %s", c.what, hex.EncodeToString(got), hex.EncodeToString(c.want))
		}
	}
	t.Logf("AK %x, qualified name %x", akPublic, attest.AKQualifiedName(akPublic))
}
