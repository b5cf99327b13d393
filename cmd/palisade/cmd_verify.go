package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/keys"
)

func init() {
	register(&command{
		name:    "verify",
		summary: "verify Palisade evidence for a PAL against reference values (nonce, PAL, visor)",
		usage: "EVIDENCE_FILE|- --nonce HEX --pal HEX --visor HEX [--ek-roots PEM] [--ak PEM] [--allow-unrooted]\n" +
			"       [--require-config] [--config-min-version N] [--config-hash HEX] [--config-head HEX]\n" +
			"       [--config-signer KID] [--config-visor-listed]\n" +
			"       (a key attestation of palisade key attest: --nonce, --visor and the roots as above,\n" +
			"       [--keygen HEX] [--signer HEX] [--creation-visor HEX] [--allow-imported] instead of --pal)",
		run: runVerify,
	})
}

// loadEKRoots reads the PEM file of --ek-roots into a pool; "" (the flag not given) is nil,
// which attest.Verify takes as: no EK certificate required.
func loadEKRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	b, err := readBounded(path, maxPEMCertFile, "a PEM certificate file")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--ek-roots %s: no PEM certificate", path)
	}
	return pool, nil
}

// readEvidence reads the evidence or key-attestation bundle of palisade verify and palisade
// key verify from path, or from stdin for "-", where it stops one byte past the largest
// bundle: whatever is too large is refused by the parser, with its limit. A file is refused
// past that size too (a device or a FIFO without end would otherwise be read until memory
// runs out).
func readEvidence(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, keys.MaxAttestationSize+1))
	}
	return readBounded(path, keys.MaxAttestationSize, "evidence or a key attestation")
}

func runVerify(ctx context.Context, args []string) error {
	c := commands["verify"]
	fs := newFlags(c)
	nonceHex := fs.String("nonce", "", "the nonce sent to the attester, hex (required; may be empty only if given as --nonce '')")
	palHex := fs.String("pal", "", "expected PAL measurement, 64 hex digits (palisade measure)")
	visorHex := fs.String("visor", "", "expected visor measurement, 64 hex digits")
	ekRoots := fs.String("ek-roots", "", "PEM file of trusted EK CA certificates: require an EK certificate chaining to them")
	akPin := fs.String("ak", "", "PEM file of the enrolled attestation key (public key): refuse any other AK")
	allowUnrooted := fs.Bool("allow-unrooted", false, "accept evidence from the development root of trust \"none\"")
	requireConfig := fs.Bool("require-config", false, "require the visor's trusted-configuration head in the evidence")
	cfgMinVersion := fs.Uint64("config-min-version", 0, "require an active trusted configuration of at least this version")
	cfgHash := fs.String("config-hash", "", "require this active configuration hash (64 hex digits, palisade config show)")
	cfgHead := fs.String("config-head", "", "require the configuration history to end at this entry (64 hex digits, palisade config history)")
	cfgSigner := fs.String("config-signer", "", "require the configuration to be signed by this administrator key id (64 hex digits, palisade config init)")
	cfgVisorListed := fs.Bool("config-visor-listed", false, "require the configuration to list the visor's measurement")
	keyOpts := newKeyVerifyFlags(fs)
	// Flags may come before or after the evidence file.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 1 {
		return usageErrorf("want exactly one evidence file, got %d arguments", len(pos))
	}
	var nonceSet bool
	fs.Visit(func(f *flag.Flag) { nonceSet = nonceSet || f.Name == "nonce" })
	if !nonceSet {
		return usageErrorf("--nonce is required")
	}
	var o attest.Options
	var err error
	if o.Nonce, err = hex.DecodeString(*nonceHex); err != nil {
		return usageErrorf("--nonce: %v", err)
	}
	if o.Visor, err = digestFlag("visor", *visorHex); err != nil {
		return err
	}
	o.AllowUnrooted = *allowUnrooted
	if o.EKRoots, err = loadEKRoots(*ekRoots); err != nil {
		return err
	}
	if *requireConfig || *cfgMinVersion > 0 || *cfgHash != "" || *cfgHead != "" || *cfgSigner != "" || *cfgVisorListed {
		o.Configuration = &attest.ConfigPolicy{MinVersion: *cfgMinVersion, VisorListed: *cfgVisorListed}
		if *cfgSigner != "" {
			if o.Configuration.Signer, err = digestFlag("config-signer", *cfgSigner); err != nil {
				return err
			}
		}
		if *cfgHash != "" {
			if o.Configuration.Config, err = digestFlag("config-hash", *cfgHash); err != nil {
				return err
			}
		}
		if *cfgHead != "" {
			if o.Configuration.Head, err = digestFlag("config-head", *cfgHead); err != nil {
				return err
			}
		}
	}
	if *akPin != "" {
		if o.AKPublic, err = readECKey(*akPin); err != nil {
			return fmt.Errorf("--ak: %w", err)
		}
	}
	ev, err := readEvidence(pos[0])
	if err != nil {
		return err
	}
	if keys.IsAttestation(ev) { // a key attestation bundle (docs/keys.md §5)
		return keyOpts.verify(os.Stdout, ev, o)
	}
	if o.PAL, err = digestFlag("pal", *palHex); err != nil {
		return err
	}
	res, err := attest.Verify(ev, o)
	if err != nil {
		return err
	}
	printVerified(os.Stdout, res)
	return nil
}

func digestFlag(name, s string) ([32]byte, error) {
	var d [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return d, usageErrorf("--%s: want 64 hex digits (a SHA-256 measurement), got %q", name, s)
	}
	copy(d[:], b)
	return d, nil
}

func readECKey(path string) (*ecdsa.PublicKey, error) {
	b, err := readBounded(path, maxPEMKeyFile, "a PEM key file")
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	// The AK is pinned by its public key alone: a certificate or a private key given by
	// mistake is named, not reported as an asn1 structure error.
	if blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: PEM %q, want a PEM \"PUBLIC KEY\" (the attestation key, DER SubjectPublicKeyInfo)", path, blk.Type)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: not a DER SubjectPublicKeyInfo: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New(path + ": not an ECDSA public key")
	}
	return ek, nil
}

func printVerified(w io.Writer, r *attest.Result) {
	if r.Rooted {
		fmt.Fprintf(w, "evidence verified: rooted in a TPM (PCR %d, %d events replayed)\n", r.PCR, len(r.Events))
	} else {
		fmt.Fprintln(w, "evidence verified but UNROOTED (root of trust \"none\": a development visor, no TPM); accepted because of --allow-unrooted")
	}
	c := r.Claims
	fmt.Fprintf(w, "  PAL        %x\n  visor      %x\n  nonce      %x\n  user data  %x\n  issued at  %s (visor clock)\n",
		c.PAL, c.Visor, c.Nonce, c.UserData, c.IssuedAt.Format("2006-01-02T15:04:05Z"))
	if h := r.Configuration; h != nil {
		listed := "listed"
		if !h.VisorListed {
			listed = "NOT listed: it serves nothing the configuration decides"
		}
		fmt.Fprintf(w, "  config     version %d (history entry %d), configuration %x\n  config head %x\n  config signer %x\n  config visor %s\n",
			h.Version, h.Seq, h.Config, h.Head, h.Signer, listed)
	} else {
		fmt.Fprintln(w, "  config     none: the visor runs without a trusted configuration")
	}
	idx := make([]int, 0, len(c.PCRs))
	for i := range c.PCRs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		v := c.PCRs[i]
		fmt.Fprintf(w, "  µTPM PCR%d  %x\n", i, v)
	}
	if r.Rooted {
		der, _ := x509.MarshalPKIXPublicKey(r.AKPublic)
		ek := "no EK certificate in evidence"
		if r.EK != nil {
			ek = "EK certificate present (issuer " + r.EK.Issuer.String() + "), not checked: no --ek-roots"
		}
		if r.EKVerified {
			ek = "EK certificate chains to --ek-roots (issuer " + r.EK.Issuer.String() + ")"
		}
		pin := "not pinned (--ak): trust rests on this AK being a key of your TPM"
		if r.AKPinned {
			pin = "pinned by --ak"
		}
		fmt.Fprintf(w, "  AK         %s, %s\n  EK         %s\n", keyFingerprint(der), pin, ek)
	}
}

func keyFingerprint(der []byte) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256(der))
}
