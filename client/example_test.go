package client_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/palisade-project/palisade/client"
)

// An application registers a PAL, calls it, and unregisters it. It needs a running palisaded,
// so this example is compiled but not run.
func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.SocketPath())
	if err != nil {
		log.Fatal(err) // says whether the daemon is down or the socket is not ours to open
	}
	defer c.Close()

	image, err := os.ReadFile("check.wasm")
	if err != nil {
		log.Fatal(err)
	}
	info, err := c.Register(ctx, image, client.RegisterOptions{Name: "check"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Unregister(ctx, info.Handle)
	fmt.Printf("registered %s, measurement %x\n", info.Handle, info.Measurement)

	res, err := c.Call(ctx, info.Handle, []byte("input"))
	switch {
	case errors.Is(err, client.ErrTimeout):
		log.Fatal("the PAL ran out of time")
	case err != nil:
		log.Fatal(err)
	case res.Status != 0:
		log.Fatalf("the PAL refused (status %d): %s", res.Status, res.Output)
	}
	fmt.Printf("output: %s\n", res.Output)
}

// Dial fails at once, with an error that says what to do, when nothing serves the socket;
// errors.Is tells the kind of failure.
func ExampleDial() {
	_, err := client.Dial(context.Background(), filepath.Join(os.TempDir(), "no-such-dir", "palisade.sock"))
	fmt.Println(errors.Is(err, client.ErrUnavailable))
	// Output: true
}

// A PAL that holds a private key serves as the key of a TLS server: every handshake signature is
// made inside the PAL. The PAL published its public key when it created the key (here: the
// output of a call with empty input, a convention of this PAL). Compiled, not run.
func ExampleNewSigner() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	const handle = "pal-0123456789abcdef" // from Register
	res, err := c.Call(ctx, handle, nil)
	if err != nil {
		log.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(res.Output)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := client.NewSigner(c, handle, pub)
	if err != nil {
		log.Fatal(err)
	}

	// As a crypto.Signer:
	digest := sha256.Sum256([]byte("message"))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d-byte signature\n", len(sig))

	// As the key of a TLS certificate (certDER: the certificate for pub):
	var certDER []byte
	_ = tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: signer}
}

// A relying party sends a nonce; the application returns evidence for it, which the relying
// party verifies with package attest. Compiled, not run.
func ExampleClient_Attest() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	nonce := []byte("chosen by the relying party")
	ev, err := c.Attest(ctx, "pal-0123456789abcdef", client.AttestOptions{Nonce: nonce})
	if err != nil {
		log.Fatal(err)
	}
	// Send ev.Bundle to the relying party: attest.Verify(ev.Bundle, attest.Options{Nonce: nonce, ...}).
	fmt.Printf("%d bytes of evidence, root of trust %q\n", len(ev.Bundle), ev.RotMode)
}
