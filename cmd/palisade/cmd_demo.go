package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/visor"
)

func init() {
	register(&command{
		name:    "demo",
		summary: "run a demo (seal: PAL A seals a secret for PAL B, B unseals and attests; 'palisade demo' lists all)",
		usage:   "NAME [flags]",
		run:     runDemo,
	})
	demos["seal"] = demo{"PAL A seals a secret for PAL B; B unseals it and attests with a quote", demoSeal}
}

type demo struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

// demos by name; other files add theirs in init.
var demos = map[string]demo{}

func runDemo(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		names := make([]string, 0, len(demos))
		for n := range demos {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, "\n  %-6s %s", n, demos[n].summary)
		}
		if len(args) == 0 {
			return usageErrorf("name a demo:%s", b.String())
		}
		c := commands["demo"]
		fmt.Fprintf(os.Stdout, "usage: palisade demo %s\n\n%s\n\ndemos:%s\n\n'palisade demo NAME -h' shows a demo's flags.\n", c.usage, c.summary, b.String())
		return flag.ErrHelp
	}
	d, ok := demos[args[0]]
	if !ok {
		return usageErrorf("unknown demo %q (see 'palisade demo')", args[0])
	}
	return d.run(ctx, args[1:])
}

// demoFlags makes the flag set of "palisade demo NAME".
func demoFlags(name string) *flag.FlagSet {
	c := *commands["demo"]
	c.name, c.usage, c.summary = "demo "+name, "[flags]", demos[name].summary
	return newFlags(&c)
}

func demoSeal(ctx context.Context, args []string) error {
	fs := demoFlags("seal")
	dir := fs.String("pal-dir", "", "directory holding sealer.wasm and unsealer.wasm (scripts/demo.sh builds them into build/pal; default: build them from the source tree, as demo tls does)")
	stateDir := fs.String("state-dir", defaultStateDir(), "directory of the development root of trust")
	if pos, err := parseArgs(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageErrorf("demo seal: unexpected arguments %q", pos)
	}
	sealerImg, err := loadPAL(ctx, *dir, "sealer.wasm", "examples/sealdemo/sealer")
	if err != nil {
		return err
	}
	unsealerImg, err := loadPAL(ctx, *dir, "unsealer.wasm", "examples/sealdemo/unsealer")
	if err != nil {
		return err
	}

	step := func(format string, a ...any) { fmt.Printf("==> "+format+"\n", a...) }
	step("starting an embedded visor (root of trust: none — development mode, evidence is unrooted)")
	v, err := openEmbedded(ctx, *stateDir, "wasm", false)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v.Close(cctx)
	}()

	t0 := time.Now()
	a, err := v.Register(ctx, sealerImg, visor.RegisterOptions{Name: "sealer"})
	if err != nil {
		return err
	}
	step("registered PAL A (sealer)   %s  measurement %s  (%v)", a.Handle, a.Measurement, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	b, err := v.Register(ctx, unsealerImg, visor.RegisterOptions{Name: "unsealer"})
	if err != nil {
		return err
	}
	step("registered PAL B (unsealer) %s  measurement %s  (%v)", b.Handle, b.Measurement, time.Since(t0).Round(time.Millisecond))

	secret := []byte("the launch code is 0000")
	res, err := call(ctx, v.Visor, a.Handle, append(append([]byte{'s'}, b.Measurement[:]...), secret...))
	if err != nil {
		return fmt.Errorf("PAL A sealing: %w", err)
	}
	blob := res
	step("PAL A sealed %q for PAL B: %d-byte blob", secret, len(blob))

	// A itself cannot open what it sealed for B.
	if out, err := call(ctx, v.Visor, a.Handle, append([]byte{'u'}, blob...)); err == nil {
		return fmt.Errorf("PAL A unsealed a blob sealed for PAL B (%q): the policy is not enforced", out)
	} else {
		step("PAL A tries to unseal it itself:  refused (%v)", err)
	}
	// Nor can the untrusted application tamper with it in transit.
	bad := bytes.Clone(blob)
	bad[len(bad)-1] ^= 1
	if _, err := call(ctx, v.Visor, b.Handle, unsealerInput(nil, bad)); err == nil {
		return errors.New("PAL B accepted a tampered blob")
	} else {
		step("PAL B given a tampered blob:      refused (%v)", err)
	}

	nonce := make([]byte, 16)
	rand.Read(nonce)
	out, err := call(ctx, v.Visor, b.Handle, unsealerInput(nonce, blob))
	if err != nil {
		return fmt.Errorf("PAL B unsealing: %w", err)
	}
	if len(out) < 4 || uint64(binary.LittleEndian.Uint32(out)) > uint64(len(out)-4-32) {
		return fmt.Errorf("PAL B returned a malformed output (%d bytes)", len(out))
	}
	ql := binary.LittleEndian.Uint32(out)
	quote, creator, got := out[4:4+ql], out[4+ql:4+ql+32], out[4+ql+32:]
	step("PAL B unsealed %q, sealed by %x…", got, creator[:8])
	if !bytes.Equal(got, secret) || !bytes.Equal(creator, a.Measurement[:]) {
		return errors.New("PAL B's secret or creator is wrong")
	}

	pub, err := x509.ParsePKIXPublicKey(v.Platform().IdentityPublic())
	if err != nil {
		return err
	}
	claims, err := attest.VerifyQuote(quote, identityKey(pub))
	if err != nil {
		return fmt.Errorf("verifying PAL B's quote: %w", err)
	}
	step("PAL B's quote (%d bytes, COSE_Sign1/ES256) verifies under the visor identity key:", len(quote))
	fmt.Printf("      PAL measurement  %s  (= PAL B: %v)\n", hex.EncodeToString(claims.PAL[:]), claims.PAL == b.Measurement)
	fmt.Printf("      nonce            %x  (fresh: %v)\n", claims.Nonce, bytes.Equal(claims.Nonce, nonce))
	fmt.Printf("      user data        %x  (= PAL A: %v)\n", claims.UserData, bytes.Equal(claims.UserData, a.Measurement[:]))
	for i := 0; i < 8; i++ {
		if pcr, ok := claims.PCRs[i]; ok {
			fmt.Printf("      PCR%d             %x\n", i, pcr)
		}
	}
	fmt.Printf("      rooted           %v  (development root of trust: a verifier must refuse this unless told otherwise)\n", claims.Rooted)
	if claims.PAL != b.Measurement || !bytes.Equal(claims.Nonce, nonce) {
		return errors.New("quote claims do not match")
	}
	step("demo complete")
	return nil
}

func unsealerInput(nonce, blob []byte) []byte {
	in := binary.LittleEndian.AppendUint32(nil, uint32(len(nonce)))
	return append(append(in, nonce...), blob...)
}

// call invokes a PAL and turns a non-zero status into an error carrying the PAL's output.
func call(ctx context.Context, v *visor.Visor, h visor.Handle, in []byte) ([]byte, error) {
	res, err := v.Call(ctx, h, in)
	if err != nil {
		return nil, err
	}
	if res.Status != 0 {
		return nil, fmt.Errorf("PAL status %d: %s", res.Status, res.Output)
	}
	return res.Output, nil
}
