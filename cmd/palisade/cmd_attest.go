package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/utpm"
)

func init() {
	register(&command{
		name:    "attest",
		summary: "get evidence for a PAL from palisaded, fresh for a verifier's nonce (check it with 'palisade verify')",
		usage:   "HANDLE --nonce HEX [--user-data HEX] [--pcrs MASK] [-o FILE] [--socket PATH]",
		run:     runAttest,
	})
}

func runAttest(ctx context.Context, args []string) error {
	fs := newFlags(commands["attest"])
	socket := fs.String("socket", client.SocketPath(), "palisaded socket")
	nonceHex := fs.String("nonce", "", "the verifier's nonce, hex (required, ≤ 1024 bytes)")
	userHex := fs.String("user-data", "", "user data to include, hex (≤ 4096 bytes)")
	pcrs := fs.Uint("pcrs", 1, "PCRs to report, as a bit mask (bit i = PCR i)")
	out := fs.String("o", "-", "write the evidence (CBOR) to FILE; - is stdout")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want exactly one HANDLE")
	}
	var nonceSet bool
	fs.Visit(func(f *flag.Flag) { nonceSet = nonceSet || f.Name == "nonce" })
	if !nonceSet {
		return usageErrorf("--nonce is required")
	}
	nonce, err := hex.DecodeString(*nonceHex)
	if err != nil {
		return usageErrorf("--nonce: %v", err)
	}
	user, err := hex.DecodeString(*userHex)
	if err != nil {
		return usageErrorf("--user-data: %v", err)
	}
	// The µTPM's limits, checked here so that a bad value is a usage error (status 2) before
	// the daemon is asked.
	if len(nonce) > utpm.MaxNonce {
		return usageErrorf("--nonce: %d bytes, at most %d", len(nonce), utpm.MaxNonce)
	}
	if len(user) > utpm.MaxUserData {
		return usageErrorf("--user-data: %d bytes, at most %d", len(user), utpm.MaxUserData)
	}
	if *pcrs > 0xff {
		return usageErrorf("--pcrs %#x: only PCRs 0..7 exist", *pcrs)
	}
	c, err := client.Dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	ev, err := c.Attest(ctx, pos[0], client.AttestOptions{Nonce: nonce, UserData: user, PCRMask: uint8(*pcrs)})
	if err != nil {
		return err
	}
	if len(ev.Bundle) == 0 {
		return fmt.Errorf("the daemon returned no evidence bundle")
	}
	if *out == "-" {
		_, err = os.Stdout.Write(ev.Bundle)
	} else {
		err = os.WriteFile(*out, ev.Bundle, 0o644)
	}
	if err != nil {
		return err
	}
	if claims, err := attest.DecodeQuoteUnverified(ev.Quote); err == nil {
		fmt.Fprintf(os.Stderr, "evidence for PAL %x (visor %x, root of trust %q)\n", claims.PAL, claims.Visor, ev.RotMode)
	}
	// The head is only signed together with the verifier's nonce: palisade verify checks it.
	if p, err := attest.Parse(ev.Bundle); err == nil && p.Configuration != nil {
		fmt.Fprintln(os.Stderr, "evidence carries the visor's trusted-configuration head (check it with palisade verify --config-*)")
	}
	return nil
}
