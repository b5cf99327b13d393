package keys_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/palisade-project/palisade/internal/csdk"
	"github.com/palisade-project/palisade/internal/keys"
)

// TestShippedPALsReproduce rebuilds the shipped key PALs from pals/*.c with the documented
// clang command and checks that the bytes equal the committed .wasm files that palisaded
// embeds: the measurements in docs/keys.md are then reproducible from source. It needs the
// clang of the project's setup (Debian clang 14): another clang may produce other bytes.
func TestShippedPALsReproduce(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	for _, tc := range []struct {
		src      string
		embedded []byte
	}{
		{"pals/keygen.c", keys.KeyGenImage},
		{"pals/signer.c", keys.SignerImage},
	} {
		out := filepath.Join(t.TempDir(), "pal.wasm")
		if err := csdk.BuildWasm(context.Background(), out, nil, tc.src); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(tc.src[:len(tc.src)-2] + ".wasm")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, committed) || !bytes.Equal(committed, tc.embedded) {
			t.Errorf("%s does not rebuild to the committed %s (rebuild it with `go generate ./internal/keys` and update docs/keys.md's measurements)",
				tc.src, filepath.Base(tc.src[:len(tc.src)-2])+".wasm")
		}
	}
}

// TestDocumentedMeasurements checks that docs/keys.md states the measurements of the PALs
// palisaded embeds.
func TestDocumentedMeasurements(t *testing.T) {
	doc, err := os.ReadFile("../../docs/keys.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, img := range map[string][]byte{"keygen": keys.KeyGenImage, "signer": keys.SignerImage} {
		m, err := keys.Measurement(img)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, []byte(fmt.Sprintf("`%x`", m))) {
			t.Errorf("docs/keys.md does not give the %s PAL's measurement %x", name, m)
		}
	}
}
