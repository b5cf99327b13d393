package attest_test

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/palisade-project/palisade/attest"
)

// Golden evidence produced by a real visor on swtpm (regenerate with
// PALISADE_UPDATE_GOLDEN=1 go test -run TestGolden ./attest): the verifier is checked against
// bytes a TPM produced, on machines without swtpm too.
const (
	goldenEvidence = "testdata/evidence-swtpm.cbor"
	goldenRefs     = "testdata/evidence-swtpm.json"
)

type refs struct {
	Nonce, PAL, Visor string
}

func (r refs) options(t testing.TB) attest.Options {
	var o attest.Options
	var err error
	if o.Nonce, err = hex.DecodeString(r.Nonce); err != nil {
		t.Fatal(err)
	}
	p, err1 := hex.DecodeString(r.PAL)
	v, err2 := hex.DecodeString(r.Visor)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	copy(o.PAL[:], p)
	copy(o.Visor[:], v)
	return o
}

func readGolden(t testing.TB) ([]byte, refs) {
	t.Helper()
	ev, err := os.ReadFile(goldenEvidence)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(goldenRefs)
	if err != nil {
		t.Fatal(err)
	}
	var r refs
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return ev, r
}

func TestGolden(t *testing.T) {
	if os.Getenv("PALISADE_UPDATE_GOLDEN") != "" {
		v := startVisor(t, "golden visor")
		nonce := []byte("golden nonce")
		ev := v.evidence(t, nonce)
		vis := v.root.Visor()
		r := refs{Nonce: hex.EncodeToString(nonce), PAL: hex.EncodeToString(palMeasurement[:]), Visor: hex.EncodeToString(vis[:])}
		b, _ := json.MarshalIndent(r, "", "  ")
		os.MkdirAll(filepath.Dir(goldenEvidence), 0o755)
		if err := os.WriteFile(goldenEvidence, ev, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenRefs, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ev, r := readGolden(t)
	res, err := attest.Verify(ev, r.options(t))
	if err != nil {
		t.Fatalf("golden evidence: %v", err)
	}
	if !res.Rooted || len(res.Events) != 3 {
		t.Fatalf("result = %+v", res)
	}
	o := r.options(t)
	o.Nonce = append(o.Nonce, 0)
	_, err = attest.Verify(ev, o)
	wantCheck(t, err, attest.CheckNonce, attest.ErrMismatch)
}

// TestGoldenEveryByte: each byte of the golden evidence (no EK certificate, so no exception)
// flipped is refused, on machines without swtpm too.
func TestGoldenEveryByte(t *testing.T) {
	ev, r := readGolden(t)
	o := r.options(t)
	if _, err := attest.Verify(ev, o); err != nil {
		t.Fatal(err)
	}
	for i := range ev {
		for _, mask := range []byte{0x01, 0x80} {
			mut := append([]byte(nil), ev...)
			mut[i] ^= mask
			if _, err := attest.Verify(mut, o); err == nil {
				t.Errorf("byte %d ^ %#x: accepted", i, mask)
			}
		}
	}
}
