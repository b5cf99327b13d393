// Command app is an application that uses Palisade through package client:
//
//	app SOCKET PAL.wasm NONCE-HEX EVIDENCE-OUT
//
// It registers the signing PAL, asks it for its public key, signs a digest through
// client.Signer (a crypto.Signer), checks the signature with the public key, then asks the
// daemon for evidence about the PAL, fresh for the nonce, and writes it for a relying party.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/palisade-project/palisade/client"
)

func main() {
	if len(os.Args) != 5 {
		log.Fatal("usage: app SOCKET PAL.wasm NONCE-HEX EVIDENCE-OUT")
	}
	image, err := os.ReadFile(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	nonce, err := hex.DecodeString(os.Args[3])
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := client.Dial(ctx, os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	info, err := c.Register(ctx, image, client.RegisterOptions{Name: "signpal"})
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Call(ctx, info.Handle, nil)
	if err != nil || res.Status != 0 {
		log.Fatalf("public key: %v (status %d: %s)", err, res.Status, res.Output)
	}
	pub, err := x509.ParsePKIXPublicKey(res.Output)
	if err != nil {
		log.Fatal(err)
	}
	var signer crypto.Signer
	if signer, err = client.NewSigner(c, info.Handle, pub); err != nil {
		log.Fatal(err)
	}
	digest := sha256.Sum256([]byte("signed inside a PAL"))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		log.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		log.Fatal("the PAL's signature does not verify")
	}
	fmt.Printf("signed by PAL %s (measurement %x): signature verified\n", info.Handle, info.Measurement)

	ev, err := c.Attest(ctx, info.Handle, client.AttestOptions{Nonce: nonce})
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(os.Args[4], ev.Bundle, 0o600); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("evidence: %d bytes, root of trust %q\n", len(ev.Bundle), ev.RotMode)
}
