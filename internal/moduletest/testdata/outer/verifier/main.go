// Command verifier is a relying party: it checks evidence about a PAL with package attest,
// against reference values it computes itself from what it trusts — the PAL image (package
// pal) and the palisaded executable with its configuration file (attest.MeasureVisor):
//
//	verifier EVIDENCE NONCE-HEX PAL.wasm PALISADED CONFIG
//
// The daemon runs on the development root of trust ("none"), whose evidence nothing vouches
// for: the verifier accepts it only because it opts in with AllowUnrooted.
package main

import (
	"encoding/hex"
	"fmt"
	"log"
	"os"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/pal"
)

func main() {
	if len(os.Args) != 6 {
		log.Fatal("usage: verifier EVIDENCE NONCE-HEX PAL.wasm PALISADED CONFIG")
	}
	evidence, err := os.ReadFile(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	nonce, err := hex.DecodeString(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	image, err := os.ReadFile(os.Args[3])
	if err != nil {
		log.Fatal(err)
	}
	img, err := pal.Parse(image)
	if err != nil {
		log.Fatal(err)
	}
	exe, err := os.Open(os.Args[4])
	if err != nil {
		log.Fatal(err)
	}
	defer exe.Close()
	config, err := os.ReadFile(os.Args[5])
	if err != nil {
		log.Fatal(err)
	}
	visor, err := attest.MeasureVisor(exe, config)
	if err != nil {
		log.Fatal(err)
	}

	res, err := attest.Verify(evidence, attest.Options{
		Nonce:         nonce,
		PAL:           img.Measurement,
		Visor:         visor,
		AllowUnrooted: true, // development root of trust: nothing vouches for the visor
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("verified: PAL %s on visor %x, root %q, rooted %v\n", img.Measurement, res.Claims.Visor, res.Root, res.Rooted)
}
