package attest_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/pal"
)

// A relying party verifies evidence that a visor rooted in a (software) TPM produced for the
// relying party's nonce, against the reference values it trusts. The evidence and the
// reference values are stored in testdata.
func ExampleVerify() {
	evidence, err := os.ReadFile("testdata/evidence-swtpm.cbor")
	if err != nil {
		log.Fatal(err)
	}
	refs := readReferences("testdata/evidence-swtpm.json")

	res, err := attest.Verify(evidence, attest.Options{
		Nonce: refs.Nonce, // the challenge the relying party sent
		PAL:   refs.PAL,   // pal.Parse(image).Measurement, or `palisade measure`
		Visor: refs.Visor, // attest.MeasureVisor(palisaded, its configuration file)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("root:", res.Root, "rooted:", res.Rooted)
	fmt.Printf("PAL %x…\n", res.Claims.PAL[:4])
	for _, e := range res.Events {
		fmt.Printf("PCR %d: %s\n", e.PCR, e.Kind)
	}
	// Output:
	// root: tpm rooted: true
	// PAL 15db4802…
	// PCR 23: visor
	// PCR 23: identity
	// PCR 23: cap
}

// Evidence made for another challenge is refused: a *CheckError says which check failed and
// wraps the kind of failure.
func ExampleCheckError() {
	evidence, err := os.ReadFile("testdata/evidence-swtpm.cbor")
	if err != nil {
		log.Fatal(err)
	}
	refs := readReferences("testdata/evidence-swtpm.json")
	_, err = attest.Verify(evidence, attest.Options{Nonce: []byte("another nonce"), PAL: refs.PAL, Visor: refs.Visor})

	var ce *attest.CheckError
	if errors.As(err, &ce) {
		fmt.Println("failed check:", ce.Check)
	}
	fmt.Println("mismatch:", errors.Is(err, attest.ErrMismatch))
	// Output:
	// failed check: nonce
	// mismatch: true
}

// The visor's reference value comes from the palisaded executable and the configuration file it
// runs with; here both are stand-ins. (The value was checked with an independent computation of
// SHA-256("palisade.visor.v1\x00" ‖ SHA-256(executable) ‖ SHA-256(configuration)).)
func ExampleMeasureVisor() {
	m, err := attest.MeasureVisor(strings.NewReader("the palisaded executable"), []byte(`{"rot": "tpm:/dev/tpmrm0"}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%x\n", m)
	// Output: 2a1e4ec8dcb945e02ab1f0f2d3cc94c0f04282e263cdfc998da388a1f15b84ae
}

// references are the relying party's reference values, as stored beside the golden evidence.
type references struct {
	Nonce      []byte
	PAL, Visor [32]byte
}

func readReferences(path string) references {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	var hexRefs struct{ Nonce, PAL, Visor string }
	if err := json.Unmarshal(b, &hexRefs); err != nil {
		log.Fatal(err)
	}
	var r references
	if r.Nonce, err = hex.DecodeString(hexRefs.Nonce); err != nil {
		log.Fatal(err)
	}
	palM, err := pal.ParseMeasurement(hexRefs.PAL)
	if err != nil {
		log.Fatal(err)
	}
	visorM, err := pal.ParseMeasurement(hexRefs.Visor) // any 64 hex digits
	if err != nil {
		log.Fatal(err)
	}
	r.PAL, r.Visor = palM, visorM
	return r
}
