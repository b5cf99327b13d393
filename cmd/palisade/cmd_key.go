package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/integrations/sshagent"
	"github.com/palisade-project/palisade/internal/keys"
)

func init() {
	register(&command{
		name:    "key",
		summary: "create and use named keys held by palisaded (docs/keys.md)",
		usage: "create NAME [--alg ecdsa-p256|ed25519|rsa-2048|rsa-3072] [--allow-user U,..] [--allow-group G,..] [--pin-file F] [--max-tries N] [--signer PAL] [--ssh]\n" +
			"       palisade key import NAME KEY.pem [--allow-user U,..] [--allow-group G,..] [--pin-file F] [--max-tries N] [--signer PAL]\n" +
			"       palisade key list\n" +
			"       palisade key show NAME\n" +
			"       palisade key public NAME [--der|--ssh] [-o FILE]\n" +
			"       palisade key delete NAME\n" +
			"       palisade key access NAME [--allow-user U,..] [--allow-group G,..]\n" +
			"       palisade key pin NAME [--pin-file OLD] [--new-pin-file NEW] [--max-tries N]\n" +
			"       palisade key csr NAME --subject 'CN=host,O=Org' [--san DNS:host,IP:addr] [-o FILE] [--pin-file F]\n" +
			"       palisade key selfsign NAME --subject S [--san ..] [--days N] [--ca] [--store] [-o FILE] [--pin-file F]\n" +
			"       palisade key chain NAME CHAIN.pem | --clear\n" +
			"       palisade key attest NAME --nonce HEX [-o FILE]\n" +
			"       palisade key verify FILE --nonce HEX --visor HEX [--keygen HEX] [--signer HEX] [--allow-unrooted] [--allow-imported] [--ek-roots PEM]\n" +
			"(all but verify take --socket PATH; default $PALISADE_SOCKET or " + client.DefaultSocket + ")",
		run: runKey,
	})
}

var keySubs = map[string]func(context.Context, []string) error{
	"create": keyCreate, "import": keyImport, "list": keyList, "show": keyShow, "public": keyPublic, "delete": keyDelete,
	"access": keyAccess, "pin": keyPIN, "csr": keyCSR, "selfsign": keySelfsign, "chain": keyChain,
	"attest": keyAttest, "verify": keyVerify,
}

func runKey(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErrorf("missing subcommand (create, import, list, show, public, delete, access, pin, csr, selfsign, chain, attest, verify)")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		newFlags(commands["key"]).Usage()
		return flag.ErrHelp
	}
	sub := keySubs[args[0]]
	if sub == nil {
		return usageErrorf("unknown subcommand %q", args[0])
	}
	return sub(ctx, args[1:])
}

// keyFlags makes the flag set of "palisade key SUB" with the --socket flag.
func keyFlags(sub, usage string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("palisade key "+sub, flag.ContinueOnError)
	socket := fs.String("socket", client.SocketPath(), "palisaded socket")
	setKeyUsage(fs, sub, usage)
	return fs, socket
}

// setKeyUsage gives the flag set of "palisade key SUB" its usage message.
func setKeyUsage(fs *flag.FlagSet, sub, usage string) {
	fs.Usage = func() {
		flagUsageShown = true
		fmt.Fprintf(fs.Output(), "usage: palisade key %s %s\n\nflags:\n", sub, usage)
		fs.PrintDefaults()
	}
}

// keyArgs parses flags around exactly want positional arguments.
func keyArgs(fs *flag.FlagSet, args []string, want int, what string) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != want {
		return nil, usageErrorf("key %s: want %s", fs.Name()[len("palisade key "):], what)
	}
	return pos, nil
}

// ids resolves the comma-separated user (or group) names and numbers given to the flag flagName.
// A name the user database does not know, or a number that is not a 32-bit id, is bad usage
// (exit status 2, docs/cli.md), refused before anything is sent to the daemon; a user database
// that cannot be read is a failure (status 1).
func ids(flagName, list string, group bool) ([]uint32, error) {
	kind := "user"
	if group {
		kind = "group"
	}
	var out []uint32
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Trim(f, "0123456789") == "" {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, usageErrorf("--%s %s: %s id out of range (0..%d)", flagName, f, kind, uint32(math.MaxUint32))
			}
			out = append(out, uint32(n))
			continue
		}
		var (
			id  string
			err error
		)
		if group {
			var g *user.Group
			if g, err = user.LookupGroup(f); err == nil {
				id = g.Gid
			}
		} else {
			var u *user.User
			if u, err = user.Lookup(f); err == nil {
				id = u.Uid
			}
		}
		var unknownUser user.UnknownUserError
		var unknownGroup user.UnknownGroupError
		switch {
		case errors.As(err, &unknownUser), errors.As(err, &unknownGroup):
			return nil, usageErrorf("--%s %s: no such %s (want %s names or numeric ids, comma-separated)", flagName, f, kind, kind)
		case err != nil:
			return nil, fmt.Errorf("--%s %s: looking up the %s: %w", flagName, f, kind, err)
		}
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--%s %s: %s id %q: %w", flagName, f, kind, id, err)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// readPIN reads a PIN from path ("-": standard input, where a terminal is prompted with
// prompt, echo off, as for every secret: docs/cli.md; a new PIN is asked twice there, since a
// mistyped one would lock the key), without its trailing newlines. An empty path yields
// $PALISADE_KEY_PIN, or nil. A cancelled ctx (^C) abandons a terminal prompt at once.
func readPIN(ctx context.Context, path, prompt string, isNew bool) ([]byte, error) {
	if path == "" {
		if p := os.Getenv("PALISADE_KEY_PIN"); p != "" {
			return []byte(p), nil
		}
		return nil, nil
	}
	var (
		b   []byte
		err error
	)
	switch {
	case path == "-" && isTerminal(os.Stdin):
		prompts := []string{prompt}
		if isNew {
			prompts = append(prompts, "again: ")
		}
		b, err = readTerminal(ctx, os.Stdin, os.Stderr, "PIN", keys.MaxPIN, prompts...)
	case path == "-":
		b, err = io.ReadAll(io.LimitReader(os.Stdin, keys.MaxPIN+2))
	default:
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("PIN: %w", err)
	}
	b = []byte(strings.TrimRight(string(b), "\r\n"))
	if len(b) == 0 || len(b) > keys.MaxPIN {
		return nil, fmt.Errorf("PIN in %s: %d bytes (1..%d)", path, len(b), keys.MaxPIN)
	}
	return b, nil
}

// newKeyOptions adds the flags that create and import share; opts reads them.
func newKeyOptions(fs *flag.FlagSet) (opts func(ctx context.Context, name string) (client.KeyCreateOptions, error)) {
	users := fs.String("allow-user", "", "users (names or uids, comma-separated) allowed to sign besides the owner")
	groups := fs.String("allow-group", "", "groups (names or gids) whose members may sign")
	pinFile := fs.String("pin-file", "", "file holding a PIN to require for every signature ('-': stdin)")
	tries := fs.Uint("max-tries", 0, "incorrect PINs before the key locks (default 5)")
	signer := fs.String("signer", "", "a signing PAL of your own (.wasm) to bind the key to, instead of the shipped one")
	return func(ctx context.Context, name string) (client.KeyCreateOptions, error) {
		o := client.KeyCreateOptions{Name: name, MaxTries: uint32(*tries)}
		var err error
		if *tries > 255 {
			return o, usageErrorf("--max-tries %d: want 1..255 (0: the daemon's default, 5)", *tries)
		}
		if o.AllowUIDs, err = ids("allow-user", *users, false); err != nil {
			return o, err
		}
		if o.AllowGIDs, err = ids("allow-group", *groups, true); err != nil {
			return o, err
		}
		if *pinFile != "" {
			if o.PIN, err = readPIN(ctx, *pinFile, "PIN for key "+name+": ", true); err != nil {
				return o, err
			}
		}
		if *signer != "" {
			if o.SignerImage, err = os.ReadFile(*signer); err != nil {
				return o, err
			}
		}
		return o, nil
	}
}

func keyCreate(ctx context.Context, args []string) error {
	fs, socket := keyFlags("create", "NAME [flags]")
	alg := fs.String("alg", client.AlgECDSAP256, "ecdsa-p256, ed25519, rsa-2048 or rsa-3072")
	sshLine := fs.Bool("ssh", false, "print the key's authorized_keys line instead of its description (palisade ssh-agent serves it)")
	opts := newKeyOptions(fs)
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	if *sshLine && !sshagent.Supported(*alg) {
		return usageErrorf("key create: --ssh with --alg %s: SSH keys are ed25519, ecdsa-p256, rsa-2048 or rsa-3072", *alg)
	}
	switch *alg {
	case client.AlgECDSAP256, client.AlgEd25519, client.AlgRSA2048, client.AlgRSA3072:
	default:
		return usageErrorf("key create: --alg %q: want ecdsa-p256, ed25519, rsa-2048 or rsa-3072", *alg)
	}
	o, err := opts(ctx, pos[0])
	if err != nil {
		return err
	}
	o.Alg = *alg
	return withClient(ctx, *socket, func(c *client.Client) error {
		k, err := c.KeyCreate(ctx, o)
		if err != nil {
			return err
		}
		if *sshLine {
			line, err := sshagent.AuthorizedKey(k)
			if err != nil {
				return err
			}
			fmt.Println(line)
			return nil
		}
		printKey(os.Stdout, k)
		return nil
	})
}

func keyImport(ctx context.Context, args []string) error {
	fs, socket := keyFlags("import", "NAME KEY.pem [flags]")
	opts := newKeyOptions(fs)
	pos, err := keyArgs(fs, args, 2, "a key name and a PEM private key file")
	if err != nil {
		return err
	}
	o, err := opts(ctx, pos[0])
	if err != nil {
		return err
	}
	b, err := os.ReadFile(pos[1])
	if err != nil {
		return err
	}
	pkcs8, err := pkcs8FromPEM(b)
	clear(b)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[1], err)
	}
	defer clear(pkcs8)
	return printKeyFrom(ctx, *socket, func(c *client.Client) (client.KeyInfo, error) {
		return c.KeyImport(ctx, pkcs8, o)
	})
}

// pkcs8FromPEM returns the first private key of a PEM file as PKCS#8 DER.
func pkcs8FromPEM(b []byte) ([]byte, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY, unencrypted)")
		}
		var (
			k   any
			err error
		)
		switch blk.Type {
		case "PRIVATE KEY":
			return blk.Bytes, nil
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN), on a machine you trust")
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		return x509.MarshalPKCS8PrivateKey(k)
	}
}

func origin(k client.KeyInfo) string {
	if k.Imported {
		return "imported"
	}
	return "generated"
}

func joinIDs(v []uint32) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(s, ",")
}

func printKey(w io.Writer, k client.KeyInfo) {
	fp := sha256.Sum256(k.PublicDER)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", k.Name)
	fmt.Fprintf(tw, "algorithm\t%s\n", k.Alg)
	fmt.Fprintf(tw, "origin\t%s\n", origin(k))
	fmt.Fprintf(tw, "public key sha256\t%x\n", fp)
	fmt.Fprintf(tw, "owner uid\t%d\n", k.Owner)
	fmt.Fprintf(tw, "allowed uids\t%s\n", joinIDs(k.AllowUIDs))
	fmt.Fprintf(tw, "allowed gids\t%s\n", joinIDs(k.AllowGIDs))
	fmt.Fprintf(tw, "PIN\t%v\n", k.HasPIN)
	if !k.Imported {
		fmt.Fprintf(tw, "key-generation PAL\t%x\n", k.KeyGenPAL)
	}
	fmt.Fprintf(tw, "signing PAL\t%x\n", k.SignerPAL)
	fmt.Fprintf(tw, "created\t%s\n", k.Created.Format(time.RFC3339))
	for i, der := range k.CertChain {
		subj := "(unparsable)"
		if c, err := x509.ParseCertificate(der); err == nil {
			subj = fmt.Sprintf("%s (issuer %s, until %s)", c.Subject, c.Issuer, c.NotAfter.Format(time.DateOnly))
		}
		fmt.Fprintf(tw, "certificate %d\t%s\n", i, subj)
	}
	tw.Flush()
}

func keyList(ctx context.Context, args []string) error {
	fs, socket := keyFlags("list", "")
	if _, err := keyArgs(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	return withClient(ctx, *socket, func(c *client.Client) error {
		l, err := c.KeyList(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tALG\tORIGIN\tOWNER\tUIDS\tGIDS\tPIN\tCERTS\tCREATED")
		for _, k := range l {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%v\t%d\t%s\n", k.Name, k.Alg, origin(k), k.Owner,
				joinIDs(k.AllowUIDs), joinIDs(k.AllowGIDs), k.HasPIN, len(k.CertChain), k.Created.Format(time.RFC3339))
		}
		return tw.Flush()
	})
}

func keyShow(ctx context.Context, args []string) error {
	fs, socket := keyFlags("show", "NAME")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	return printKeyFrom(ctx, *socket, func(c *client.Client) (client.KeyInfo, error) {
		return c.KeyGet(ctx, pos[0])
	})
}

// withClient connects to the daemon at socket, runs f with the connection and closes it.
func withClient(ctx context.Context, socket string, f func(*client.Client) error) error {
	c, err := dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

// printKeyFrom runs call on a connection to the daemon at socket and prints the key it
// returns: the output of every sub-command that creates or changes a key, and of show.
func printKeyFrom(ctx context.Context, socket string, call func(*client.Client) (client.KeyInfo, error)) error {
	return withClient(ctx, socket, func(c *client.Client) error {
		k, err := call(c)
		if err != nil {
			return err
		}
		printKey(os.Stdout, k)
		return nil
	})
}

// writeOut writes b to path, or to stdout if path is "" or "-".
func writeOut(path string, b []byte) error {
	if path == "" || path == "-" {
		_, err := os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func keyPublic(ctx context.Context, args []string) error {
	fs, socket := keyFlags("public", "NAME [--der|--ssh] [-o FILE]")
	der := fs.Bool("der", false, "DER instead of PEM")
	sshLine := fs.Bool("ssh", false, "OpenSSH's one-line form (authorized_keys, known_hosts, sshd's HostKey)")
	out := fs.String("o", "", "output file (default stdout)")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	if *der && *sshLine {
		return usageErrorf("key public: --der and --ssh exclude each other")
	}
	return withClient(ctx, *socket, func(c *client.Client) error {
		k, err := c.KeyGet(ctx, pos[0])
		if err != nil {
			return err
		}
		if *sshLine {
			line, err := sshagent.AuthorizedKey(k)
			if err != nil {
				return err
			}
			return writeOut(*out, []byte(line+"\n"))
		}
		b := k.PublicDER
		if !*der {
			b = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: b})
		}
		return writeOut(*out, b)
	})
}

func keyDelete(ctx context.Context, args []string) error {
	fs, socket := keyFlags("delete", "NAME")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	return withClient(ctx, *socket, func(c *client.Client) error { return c.KeyDelete(ctx, pos[0]) })
}

func keyAccess(ctx context.Context, args []string) error {
	fs, socket := keyFlags("access", "NAME [--allow-user U,..] [--allow-group G,..]")
	users := fs.String("allow-user", "", "users (names or uids) allowed to sign besides the owner; replaces the list")
	groups := fs.String("allow-group", "", "groups (names or gids) whose members may sign; replaces the list")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	uids, err := ids("allow-user", *users, false)
	if err != nil {
		return err
	}
	gids, err := ids("allow-group", *groups, true)
	if err != nil {
		return err
	}
	return printKeyFrom(ctx, *socket, func(c *client.Client) (client.KeyInfo, error) {
		return c.KeySetAccess(ctx, pos[0], uids, gids)
	})
}

func keyPIN(ctx context.Context, args []string) error {
	fs, socket := keyFlags("pin", "NAME [--pin-file OLD] [--new-pin-file NEW] [--max-tries N]")
	oldFile := fs.String("pin-file", "", "file holding the current PIN, if the key has one")
	newFile := fs.String("new-pin-file", "", "file holding the new PIN; without it the PIN is removed")
	tries := fs.Uint("max-tries", 0, "incorrect PINs before the key locks (default 5)")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	if *tries > 255 {
		return usageErrorf("--max-tries %d: want 1..255 (0: the daemon's default, 5)", *tries)
	}
	if *oldFile == "-" && *newFile == "-" {
		return usageErrorf("key pin: only one of the PINs can come from stdin")
	}
	oldPIN, err := readPIN(ctx, *oldFile, "current PIN of key "+pos[0]+": ", false)
	if err != nil {
		return err
	}
	var newPIN []byte
	if *newFile != "" {
		if newPIN, err = readPIN(ctx, *newFile, "new PIN for key "+pos[0]+": ", true); err != nil {
			return err
		}
	}
	return printKeyFrom(ctx, *socket, func(c *client.Client) (client.KeyInfo, error) {
		return c.KeySetPIN(ctx, pos[0], oldPIN, newPIN, uint32(*tries))
	})
}

// certFlags are the flags of csr and selfsign.
type certFlags struct {
	socket, subject, san, out, pinFile *string
}

func newCertFlags(sub, usage string) (*flag.FlagSet, *certFlags) {
	fs, socket := keyFlags(sub, usage)
	return fs, &certFlags{
		socket:  socket,
		subject: fs.String("subject", "", "subject, e.g. 'CN=www.example.com,O=Example,C=DE' (CN, O, OU, C, L, ST, SERIALNUMBER)"),
		san:     fs.String("san", "", "subject alternative names, comma-separated: DNS:name, IP:addr, EMAIL:addr, URI:uri"),
		out:     fs.String("o", "", "output file, PEM (default stdout)"),
		pinFile: fs.String("pin-file", "", "file holding the key's PIN ('-': stdin; default $PALISADE_KEY_PIN)"),
	}
}

// signer connects and returns a KeySigner for name with the PIN of cf.
func (cf *certFlags) signer(ctx context.Context, name string) (*client.KeySigner, func(), error) {
	pin, err := readPIN(ctx, *cf.pinFile, "PIN of key "+name+": ", false)
	if err != nil {
		return nil, nil, err
	}
	c, err := dial(ctx, *cf.socket)
	if err != nil {
		return nil, nil, err
	}
	s, err := c.KeySigner(ctx, name)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	s.PIN = pin
	return s, func() { c.Close() }, nil
}

func keyCSR(ctx context.Context, args []string) error {
	fs, cf := newCertFlags("csr", "NAME --subject S [--san ..] [-o FILE]")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	subj, err := parseSubject(*cf.subject)
	if err != nil {
		return usageErrorf("--subject: %v", err)
	}
	tmpl := &x509.CertificateRequest{Subject: subj}
	if err := parseSANs(*cf.san, &tmpl.DNSNames, &tmpl.IPAddresses, &tmpl.EmailAddresses, &tmpl.URIs); err != nil {
		return usageErrorf("--san: %v", err)
	}
	s, done, err := cf.signer(ctx, pos[0])
	if err != nil {
		return err
	}
	defer done()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, s)
	if err != nil {
		return fmt.Errorf("CSR: %w", err)
	}
	return writeOut(*cf.out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func keySelfsign(ctx context.Context, args []string) error {
	fs, cf := newCertFlags("selfsign", "NAME --subject S [--san ..] [--days N] [--ca] [--store] [-o FILE]")
	days := fs.Int("days", 365, "validity in days")
	ca := fs.Bool("ca", false, "a CA certificate (basic constraints CA:TRUE, key usage certSign) instead of a TLS server/client one")
	store := fs.Bool("store", false, "store the certificate as the key's chain")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	if *days < 1 || *days > 100*365 {
		return usageErrorf("--days %d: want 1..36500", *days)
	}
	subj, err := parseSubject(*cf.subject)
	if err != nil {
		return usageErrorf("--subject: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	now := time.Now().Add(-5 * time.Minute).UTC()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subj, NotBefore: now, NotAfter: now.AddDate(0, 0, *days),
		BasicConstraintsValid: true, IsCA: *ca,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if *ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.ExtKeyUsage = nil
	}
	if err := parseSANs(*cf.san, &tmpl.DNSNames, &tmpl.IPAddresses, &tmpl.EmailAddresses, &tmpl.URIs); err != nil {
		return usageErrorf("--san: %v", err)
	}
	s, done, err := cf.signer(ctx, pos[0])
	if err != nil {
		return err
	}
	defer done()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	if *store {
		err := withClient(ctx, *cf.socket, func(c *client.Client) error {
			_, err := c.KeySetChain(ctx, pos[0], [][]byte{der})
			return err
		})
		if err != nil {
			return err
		}
	}
	return writeOut(*cf.out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func keyChain(ctx context.Context, args []string) error {
	fs, socket := keyFlags("chain", "NAME CHAIN.pem | NAME --clear")
	clearChain := fs.Bool("clear", false, "remove the stored chain")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *clearChain && len(pos) != 1 || !*clearChain && len(pos) != 2 {
		return usageErrorf("key chain: want NAME and a PEM file (leaf first), or NAME --clear")
	}
	var chain [][]byte
	if !*clearChain {
		b, err := os.ReadFile(pos[1])
		if err != nil {
			return err
		}
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type == "CERTIFICATE" {
				chain = append(chain, blk.Bytes)
			}
		}
		if len(chain) == 0 {
			return fmt.Errorf("%s: no PEM certificate", pos[1])
		}
	}
	return printKeyFrom(ctx, *socket, func(c *client.Client) (client.KeyInfo, error) {
		return c.KeySetChain(ctx, pos[0], chain)
	})
}

// maxKeyNonce is the longest nonce of a key attestation, in bytes (the daemon's limit,
// docs/keys.md).
const maxKeyNonce = 64

func keyAttest(ctx context.Context, args []string) error {
	fs, socket := keyFlags("attest", "NAME --nonce HEX [-o FILE]")
	nonceHex := fs.String("nonce", "", "the verifier's nonce, 1..64 bytes in hex (required)")
	out := fs.String("o", "", "output file for the attestation bundle (default stdout)")
	pos, err := keyArgs(fs, args, 1, "exactly one key name")
	if err != nil {
		return err
	}
	nonce, err := hex.DecodeString(*nonceHex)
	if err != nil || len(nonce) == 0 || len(nonce) > maxKeyNonce {
		return usageErrorf("--nonce %q: want 1..%d bytes in hex", *nonceHex, maxKeyNonce)
	}
	return withClient(ctx, *socket, func(c *client.Client) error {
		ev, err := c.KeyAttest(ctx, pos[0], nonce)
		if err != nil {
			return err
		}
		return writeOut(*out, ev)
	})
}

func keyVerify(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("palisade key verify", flag.ContinueOnError)
	setKeyUsage(fs, "verify", "FILE|- --nonce HEX --visor HEX [flags]")
	nonceHex := fs.String("nonce", "", "the nonce sent with palisade key attest, `hex` (required)")
	visorHex := fs.String("visor", "", "expected visor measurement, 64 hex digits (required)")
	allowUnrooted := fs.Bool("allow-unrooted", false, "accept evidence from the development root of trust \"none\"")
	ekRoots := fs.String("ek-roots", "", "PEM file of trusted EK CA certificates")
	kf := newKeyVerifyFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("key verify: want exactly one attestation file")
	}
	var o attest.Options
	if o.Nonce, err = hex.DecodeString(*nonceHex); err != nil || len(o.Nonce) == 0 || len(o.Nonce) > maxKeyNonce {
		return usageErrorf("--nonce %q: want the hex nonce given to key attest (1..%d bytes)", *nonceHex, maxKeyNonce)
	}
	if o.Visor, err = digestFlag("visor", *visorHex); err != nil {
		return err
	}
	o.AllowUnrooted = *allowUnrooted
	if o.EKRoots, err = loadEKRoots(*ekRoots); err != nil {
		return err
	}
	b, err := readEvidence(pos[0])
	if err != nil {
		return err
	}
	return kf.verify(os.Stdout, b, o)
}

// keyVerifyFlags are the reference values of a key attestation beyond those of PAL evidence;
// `palisade key verify` and `palisade verify` (given a key attestation) share them.
type keyVerifyFlags struct {
	keygen, signer, creationVisor *string
	allowImported                 *bool
}

func newKeyVerifyFlags(fs *flag.FlagSet) *keyVerifyFlags {
	return &keyVerifyFlags{
		keygen:        fs.String("keygen", "", "key attestation: expected key-generation PAL measurement (default: the shipped one)"),
		signer:        fs.String("signer", "", "key attestation: expected signing PAL measurement (default: the shipped one)"),
		creationVisor: fs.String("creation-visor", "", "key attestation: visor measurement at the key's creation, if the daemon was upgraded since"),
		allowImported: fs.Bool("allow-imported", false, "key attestation: accept a key that was imported, not generated in a PAL"),
	}
}

// verify checks the key-attestation bundle b with the evidence checks ev (nonce, visor, roots)
// and prints what it proves.
func (kf *keyVerifyFlags) verify(w io.Writer, b []byte, ev attest.Options) error {
	o := keys.VerifyOptions{Nonce: ev.Nonce, Evidence: ev, AllowImported: *kf.allowImported}
	var err error
	if o.KeyGenPAL, err = keys.Measurement(keys.KeyGenImage); err != nil {
		return err
	}
	if o.SignerPAL, err = keys.Measurement(keys.SignerImage); err != nil {
		return err
	}
	for _, f := range []struct {
		name, val string
		dst       *[32]byte
	}{{"keygen", *kf.keygen, &o.KeyGenPAL}, {"signer", *kf.signer, &o.SignerPAL}, {"creation-visor", *kf.creationVisor, &o.CreationVisor}} {
		if f.val != "" {
			if *f.dst, err = digestFlag(f.name, f.val); err != nil {
				return err
			}
		}
	}
	v, err := keys.VerifyAttestation(b, o)
	if err != nil {
		return err
	}
	fp := sha256.Sum256(v.Public)
	rooted := "rooted in a TPM"
	if !v.Use.Rooted {
		rooted = "UNROOTED (root of trust \"none\"), accepted because of --allow-unrooted"
	}
	fmt.Fprintf(w, "key attestation verified, %s\n", rooted)
	fmt.Fprintf(w, "  key                %s (%s)\n  public key sha256  %x\n", v.Name, v.Alg, fp)
	if v.Imported {
		fmt.Fprintln(w, "  origin             IMPORTED: not generated in a PAL (accepted because of --allow-imported)")
	} else {
		fmt.Fprintf(w, "  origin             generated in key-generation PAL %x\n", o.KeyGenPAL)
		fmt.Fprintf(w, "  created            %s (visor clock)\n", v.Creation.Claims.IssuedAt.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  usable only by     signing PAL %x\n  visor              %x\n", o.SignerPAL, v.Use.Claims.Visor)
	return nil
}

// parseSubject parses a distinguished name of the form "CN=a,O=b,C=DE". A comma or
// backslash inside a value is escaped with a backslash.
func parseSubject(s string) (pkix.Name, error) {
	var n pkix.Name
	if strings.TrimSpace(s) == "" {
		return n, fmt.Errorf("empty subject (want e.g. CN=www.example.com)")
	}
	if len(s) > 4096 {
		return n, fmt.Errorf("subject of %d bytes (max 4096)", len(s))
	}
	for _, rdn := range splitEscaped(s, ',') {
		k, v, ok := strings.Cut(rdn, "=")
		k, v = strings.ToUpper(strings.TrimSpace(k)), strings.TrimSpace(v)
		if !ok || v == "" {
			return n, fmt.Errorf("%q: want KEY=VALUE", rdn)
		}
		switch k {
		case "CN":
			if n.CommonName != "" {
				return n, fmt.Errorf("CN given twice")
			}
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "C":
			n.Country = append(n.Country, v)
		case "L":
			n.Locality = append(n.Locality, v)
		case "ST":
			n.Province = append(n.Province, v)
		case "SERIALNUMBER":
			n.SerialNumber = v
		default:
			return n, fmt.Errorf("attribute %q (want CN, O, OU, C, L, ST or SERIALNUMBER)", k)
		}
	}
	return n, nil
}

// splitEscaped splits s at sep, honouring backslash escapes (removed from the parts).
func splitEscaped(s string, sep byte) []string {
	var (
		parts []string
		cur   strings.Builder
	)
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == sep:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(parts, cur.String())
}

// parseSANs parses "DNS:a,IP:1.2.3.4,EMAIL:x@y,URI:https://…" into the slices.
func parseSANs(s string, dns *[]string, ips *[]net.IP, emails *[]string, uris *[]*url.URL) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	for _, f := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), ":")
		if !ok || v == "" {
			return fmt.Errorf("%q: want TYPE:VALUE (DNS, IP, EMAIL, URI)", f)
		}
		switch strings.ToUpper(k) {
		case "DNS":
			*dns = append(*dns, v)
		case "IP":
			ip := net.ParseIP(v)
			if ip == nil {
				return fmt.Errorf("%q is not an IP address", v)
			}
			*ips = append(*ips, ip)
		case "EMAIL":
			*emails = append(*emails, v)
		case "URI":
			u, err := url.Parse(v)
			if err != nil || u.Scheme == "" {
				return fmt.Errorf("%q is not an absolute URI", v)
			}
			*uris = append(*uris, u)
		default:
			return fmt.Errorf("type %q (want DNS, IP, EMAIL or URI)", k)
		}
	}
	return nil
}
