// Command verifier is a relying party: it checks evidence about a PAL with package attest,
// against reference values it computes itself from what it trusts — the PAL image (package
// pal) and the palisaded executable with its configuration file (attest.MeasureVisor):
//
//	verifier [-allow-unrooted] EVIDENCE NONCE-HEX PAL.wasm PALISADED CONFIG
//
// Evidence from a daemon on the development root of trust ("none") is vouched for by nothing:
// the verifier accepts it only with -allow-unrooted, which sets attest.Options.AllowUnrooted.
package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/pal"
)

func main() {
	allowUnrooted := flag.Bool("allow-unrooted", false, "accept evidence from the development root of trust")
	flag.Parse()
	args := flag.Args()
	if len(args) != 5 {
		log.Fatal("usage: verifier [-allow-unrooted] EVIDENCE NONCE-HEX PAL.wasm PALISADED CONFIG")
	}
	evidence, err := os.ReadFile(args[0])
	if err != nil {
		log.Fatal(err)
	}
	nonce, err := hex.DecodeString(args[1])
	if err != nil {
		log.Fatal(err)
	}
	image, err := os.ReadFile(args[2])
	if err != nil {
		log.Fatal(err)
	}
	img, err := pal.Parse(image)
	if err != nil {
		log.Fatal(err)
	}
	exe, err := os.Open(args[3])
	if err != nil {
		log.Fatal(err)
	}
	defer exe.Close()
	config, err := os.ReadFile(args[4])
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
		AllowUnrooted: *allowUnrooted,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("verified: PAL %s on visor %x, root %q, rooted %v\n", img.Measurement, res.Claims.Visor, res.Root, res.Rooted)
}
