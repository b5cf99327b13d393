package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/rot/tpm"
	"github.com/palisade-project/palisade/internal/utpm"
)

// cfgSub is a subcommand of `palisade config`: its argument synopsis and what it does, shown
// by `config -h` and by its own -h.
type cfgSub struct {
	name, args, summary string
	run                 func(context.Context, []string) error
}

// cfgSubs lists the subcommands in the order `config -h` shows them. It is filled in init:
// the run functions refer to cfgSubFlags, which reads the table.
var cfgSubs []cfgSub

const cfgTPMNote = "show, plan, apply, history and secret (and palisade exec) take --tpm DEVICE (/dev/tpmrm0,\n" +
	"swtpm:SOCKET) to anchor the state in the TPM: its version, its history and its administrator key.\n" +
	"Once a state has been applied with --tpm, every command that reads it needs --tpm."

func init() {
	cfgSubs = []cfgSub{
		{"init", "[--dir DIR] [--alg ed25519|es256] [--state-dir DIR]", "make an administrator key pair and a template document", configInit},
		{"sign", "--key ADMIN.key [-o OUT.cose] CONFIG.json", "sign a configuration document", configSign},
		{"verify", "--pub ADMIN.pub CONFIG.cose", "check a signed configuration", configVerify},
		{"show", "[--pub ADMIN.pub | --state-dir DIR [--tpm DEVICE]] [--json] [FILE | --active]", "print a configuration", configShow},
		{"plan", "[--state-dir DIR] [--tpm DEVICE] [--from OLD.cose] NEW.cose", "print what a transition changes", configPlan},
		{"apply", "[--state-dir DIR] [--tpm DEVICE] [--admin-pub ADMIN.pub] NEW.cose", "make a configuration active", configApply},
		{"history", "[--state-dir DIR] [--tpm DEVICE]", "print and verify the chain of applied configurations", configHistory},
		{"secret", "put|list [--state-dir DIR] [--tpm DEVICE] [--master-key FILE] [NAME [FILE|-]]", "store or list sealed secrets", configSecret},
		{"authorize-visor", "--key ADMIN.key --visor HEX [--pcr 23] -o FILE", "PolicyAuthorize a visor build", configAuthorizeVisor},
		{"replace-admin", "--tpm DEVICE --state-dir NEWDIR --admin-pub NEW.pub --replacing KID",
			"replace the administrator key the TPM anchors (a ceremony: needs the owner hierarchy, a new state directory)", configReplaceAdmin},
	}
	var b strings.Builder
	b.WriteString("SUBCOMMAND [flags] [args]\n\n")
	var names []string
	for _, c := range cfgSubs {
		fmt.Fprintf(&b, "  %s %s\n      %s\n", c.name, c.args, c.summary)
		names = append(names, c.name)
	}
	b.WriteString("\n" + cfgTPMNote)
	register(&command{
		name:    "config",
		summary: "manage trusted configurations: " + strings.Join(names, ", "),
		usage:   b.String(),
		run:     runConfig,
	})
}

// configStateDir is where the trusted-configuration state lives unless --state-dir says.
func configStateDir() string {
	if d := os.Getenv("PALISADE_CONFIG_DIR"); d != "" {
		return d
	}
	return filepath.Join(defaultStateDir(), "config")
}

func runConfig(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErrorf("missing subcommand")
	}
	for _, c := range cfgSubs {
		if c.name == args[0] {
			err := c.run(ctx, args[1:])
			if errors.Is(err, errUsage) && !flagUsageShown {
				// Bad usage of a known subcommand shows that subcommand's synopsis, not the
				// whole config command's "SUBCOMMAND [flags] [args]"; flagUsageShown tells run
				// the usage is printed (status 2).
				fmt.Fprintf(os.Stderr, "palisade config %s: %s\nusage: palisade config %s %s\n",
					c.name, strings.TrimPrefix(err.Error(), "usage: "), c.name, c.args)
				flagUsageShown = true
			}
			return err
		}
	}
	if args[0] == "-h" || args[0] == "--help" {
		newFlags(commands["config"]).Usage()
		return flag.ErrHelp
	}
	return usageErrorf("unknown subcommand %q", args[0])
}

// cfgTPMFlag adds --tpm to a subcommand that opens a state directory.
func cfgTPMFlag(fs *flag.FlagSet) *string {
	return fs.String("tpm", "", "anchor the state's version, history and administrator key in this TPM (/dev/tpmrm0, swtpm:SOCKET); required once a state was applied with it; default: the state's anchor file")
}

// cfgOpenState opens a state directory, with its version anchored in the TPM at device if
// one is given. The TPM connection stays open for the life of the command, and one command
// opens each state once however often it asks (plan reads the pinned key, then the active
// configuration): a TPM socket (swtpm) serves one connection at a time, so stop a daemon that
// uses it first; /dev/tpmrm0 is shared through the kernel's resource manager.
func cfgOpenState(dir, device string) (*config.State, error) {
	key := [2]string{dir, device}
	if st, ok := cfgStates[key]; ok {
		return st, nil
	}
	var o config.Options
	if device != "" {
		a, err := tpm.OpenVersionAnchor(strings.TrimPrefix(device, "tpm:"), 0)
		if err != nil {
			return nil, err
		}
		o.Anchor = a
	}
	st, err := config.OpenState(dir, o)
	if err != nil {
		return nil, err
	}
	cfgStates[key] = st
	return st, nil
}

// cfgStates are the states this command opened, by directory and TPM device.
var cfgStates = map[[2]string]*config.State{}

// configAuthorizeVisor signs a TPM2_PolicyAuthorize approval of one visor build
// (docs/attestation.md §6.1): a daemon whose tpm authority is the admin's public key unseals
// its master secret only with such a file for its own measurement.
func configAuthorizeVisor(_ context.Context, args []string) error {
	fs := cfgSubFlags("authorize-visor")
	keyPath := fs.String("key", "", "administrator private key (ECDSA P-256: config init --alg es256)")
	visorHex := fs.String("visor", "", "visor measurement to authorize (hex: the daemon logs it as visor when it serves; palisade attest prints it)")
	pcr := fs.Int("pcr", 23, "TPM PCR that holds the visor measurement")
	out := fs.String("o", "", "output file (the daemon reads STATE/rot-tpm/authorizations/*)")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErrorf("unexpected arguments %q", pos)
	}
	if *keyPath == "" || *visorHex == "" || *out == "" {
		return usageErrorf("--key, --visor and -o are required")
	}
	// 0 must not reach tpm.AuthorizeVisor, which takes it as "the default PCR" (23).
	if *pcr < 1 || *pcr > 23 {
		return usageErrorf("--pcr %d: want a PCR number 1..23", *pcr)
	}
	m, err := config.ParseMeasurement(*visorHex)
	if err != nil {
		return usageErrorf("--visor: %v", err)
	}
	b, err := readBounded(*keyPath, maxPEMKeyFile, "a PEM key file")
	if err != nil {
		return err
	}
	k, err := config.ParsePrivateKey(b)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyPath, err)
	}
	auth, err := tpm.AuthorizeVisor(k, utpm.Digest(m), *pcr)
	if err != nil {
		return err
	}
	if err := cfgWriteNew(*out, auth, 0o644); err != nil {
		return err
	}
	fmt.Printf("authorized visor %s (PCR %d) in %s\n", m, *pcr, *out)
	return nil
}

// cfgSubFlags makes the flag set of subcommand name ("secret put" is the secret subcommand):
// its usage is that subcommand's synopsis, not the whole config command's.
func cfgSubFlags(name string) *flag.FlagSet {
	first, _, _ := strings.Cut(name, " ")
	for _, sc := range cfgSubs {
		if sc.name == first {
			return newFlags(&command{name: "config " + sc.name, usage: sc.args, summary: sc.summary})
		}
	}
	panic("palisade: no config subcommand " + name)
}

const cfgTemplateDoc = `{
  "version": 1,
  "visors": [],
  "pals": {},
  "apps": {},
  "secrets": {}
}
`

func configInit(_ context.Context, args []string) error {
	fs := cfgSubFlags("init")
	dir := fs.String("dir", ".", "where to write admin.key, admin.pub and config.json")
	alg := fs.String("alg", "ed25519", "administrator key algorithm: ed25519 or es256")
	stateDir := fs.String("state-dir", "", "also pin the new admin public key in this state directory")
	if pos, _, err := cfgParse(fs, args, false); err != nil {
		return err
	} else if len(pos) != 0 {
		return usageErrorf("unexpected arguments %q", pos)
	}
	keyPath := filepath.Join(*dir, "admin.key")
	if _, err := os.Stat(keyPath); err == nil {
		return fmt.Errorf("%s exists: refusing to replace an administrator key", keyPath)
	}
	k, err := config.GenerateKey(*alg)
	if err != nil {
		return usageErrorf("%v", err)
	}
	priv, err := config.MarshalPrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := config.MarshalPublicKey(k.Public())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	if err := cfgWriteNew(keyPath, priv, 0o600); err != nil {
		return err
	}
	if err := cfgWriteNew(filepath.Join(*dir, "admin.pub"), pub, 0o644); err != nil {
		return err
	}
	tmpl := filepath.Join(*dir, "config.json")
	if _, err := os.Stat(tmpl); errors.Is(err, os.ErrNotExist) {
		if err := cfgWriteNew(tmpl, []byte(cfgTemplateDoc), 0o644); err != nil {
			return err
		}
	}
	kid, _ := config.PublicKeyID(k.Public())
	fmt.Printf("administrator key %s (%s)\n  private: %s (keep it offline)\n  public:  %s\n  template: %s\n",
		kid, *alg, keyPath, filepath.Join(*dir, "admin.pub"), tmpl)
	if *stateDir != "" {
		if err := config.InitState(*stateDir, k.Public()); err != nil {
			return err
		}
		fmt.Printf("pinned in state directory %s\n", *stateDir)
	}
	return nil
}

func cfgWriteNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func configSign(_ context.Context, args []string) error {
	fs := cfgSubFlags("sign")
	keyPath := fs.String("key", "admin.key", "administrator private key (PEM)")
	out := fs.String("o", "", "output file (default: the input with .cose instead of .json)")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want one CONFIG.json")
	}
	doc, err := readBounded(pos[0], config.MaxDocumentSize, "a configuration document")
	if err != nil {
		return err
	}
	c, err := config.ParseJSON(doc)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	kb, err := readBounded(*keyPath, maxPEMKeyFile, "a PEM key file")
	if err != nil {
		return err
	}
	k, err := config.ParsePrivateKey(kb)
	if err != nil {
		return err
	}
	raw, err := config.Sign(c, k)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = strings.TrimSuffix(pos[0], ".json") + ".cose"
	}
	if err := os.WriteFile(*out, raw, 0o644); err != nil {
		return err
	}
	h, _ := c.Hash()
	fmt.Printf("signed version %d (%s) -> %s\n", c.Version, h, *out)
	return nil
}

func cfgReadPub(path string) (crypto.PublicKey, error) {
	b, err := readBounded(path, maxPEMKeyFile, "a PEM key file")
	if err != nil {
		return nil, err
	}
	return config.ParsePublicKey(b)
}

func configVerify(_ context.Context, args []string) error {
	fs := cfgSubFlags("verify")
	pubPath := fs.String("pub", "admin.pub", "administrator public key (PEM)")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want one CONFIG.cose")
	}
	pub, err := cfgReadPub(*pubPath)
	if err != nil {
		return err
	}
	raw, err := readBounded(pos[0], config.MaxSignedSize, "a signed configuration")
	if err != nil {
		return err
	}
	sc, err := config.Verify(raw, pub)
	if err != nil {
		return fmt.Errorf("%s: REFUSED: %w", pos[0], err)
	}
	fmt.Printf("%s: OK: version %d, configuration %s, signed by %s\n", pos[0], sc.Version, sc.Hash, sc.KeyID)
	return nil
}

// cfgLoadSigned reads a signed configuration and verifies it against --pub, or the key pinned in
// the state directory (checked against the TPM's anchored key when device is given; a state
// anchored in a TPM refuses to be read without it).
func cfgLoadSigned(path, pubPath, stateDir, device string) (*config.Signed, error) {
	raw, err := readBounded(path, config.MaxSignedSize, "a signed configuration")
	if err != nil {
		return nil, err
	}
	var pub crypto.PublicKey
	if pubPath != "" {
		pub, err = cfgReadPub(pubPath)
	} else {
		var st *config.State
		st, err = cfgOpenState(stateDir, device)
		if st != nil {
			pub, _ = st.AdminKey()
		}
	}
	if err != nil {
		return nil, err
	}
	sc, err := config.Verify(raw, pub)
	if err != nil {
		return nil, fmt.Errorf("%s: REFUSED: %w", path, err)
	}
	return sc, nil
}

func configShow(_ context.Context, args []string) error {
	fs := cfgSubFlags("show")
	pubPath := fs.String("pub", "", "verify FILE against this administrator public key (default: the key pinned in --state-dir)")
	stateDir := fs.String("state-dir", configStateDir(), "state directory")
	tpmDev := cfgTPMFlag(fs)
	active := fs.Bool("active", false, "show the active configuration of --state-dir")
	asJSON := fs.Bool("json", false, "print the document as JSON, the form config sign takes")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	var c *config.Config
	var header string
	switch {
	case *active && len(pos) == 0:
		st, err := cfgOpenState(*stateDir, *tpmDev)
		if err != nil {
			return err
		}
		sc, err := st.Active()
		if err != nil {
			return err
		}
		head, _ := st.Head()
		c = sc.Config
		header = fmt.Sprintf("active configuration %s (history entry %d, signed by %s)\n", sc.Hash, head.Seq, sc.KeyID)
	case len(pos) == 1 && strings.HasSuffix(pos[0], ".json"):
		b, err := readBounded(pos[0], config.MaxDocumentSize, "a configuration document")
		if err != nil {
			return err
		}
		if c, err = config.ParseJSON(b); err != nil {
			return err
		}
		h, _ := c.Hash()
		header = fmt.Sprintf("unsigned document %s, configuration %s\n", pos[0], h)
	case len(pos) == 1:
		sc, err := cfgLoadSigned(pos[0], *pubPath, *stateDir, *tpmDev)
		if err != nil {
			return err
		}
		c = sc.Config
		header = fmt.Sprintf("signed configuration %s, signed by %s (verified)\n", sc.Hash, sc.KeyID)
	default:
		return usageErrorf("want FILE or --active")
	}
	if *asJSON {
		b, err := c.MarshalJSON()
		if err != nil {
			return err
		}
		fmt.Println(string(b))
		return nil
	}
	fmt.Print(header, c.Text())
	return nil
}

func configPlan(_ context.Context, args []string) error {
	fs := cfgSubFlags("plan")
	stateDir := fs.String("state-dir", configStateDir(), "state directory (its pinned key verifies the documents)")
	tpmDev := cfgTPMFlag(fs)
	pubPath := fs.String("pub", "", "verify with this administrator public key instead of the pinned one")
	from := fs.String("from", "", "compare with this signed configuration instead of the active one")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want one NEW.cose")
	}
	next, err := cfgLoadSigned(pos[0], *pubPath, *stateDir, *tpmDev)
	if err != nil {
		return err
	}
	var old *config.Config
	if *from != "" {
		o, err := cfgLoadSigned(*from, *pubPath, *stateDir, *tpmDev)
		if err != nil {
			return err
		}
		old = o.Config
	} else {
		st, err := cfgOpenState(*stateDir, *tpmDev)
		if err != nil {
			return err
		}
		act, err := st.Active()
		switch {
		case errors.Is(err, config.ErrNoActiveConfig):
		case err != nil:
			return err
		default:
			old = act.Config
		}
	}
	p := config.Diff(old, next.Config)
	fmt.Print(p.String())
	if old != nil && next.Version <= old.Version {
		fmt.Printf("apply would be REFUSED: version %d is not greater than %d\n", next.Version, old.Version)
	}
	return nil
}

func configApply(_ context.Context, args []string) error {
	fs := cfgSubFlags("apply")
	stateDir := fs.String("state-dir", configStateDir(), "state directory")
	tpmDev := cfgTPMFlag(fs)
	adminPub := fs.String("admin-pub", "", "pin this administrator public key if the state has none yet (first apply)")
	pos, _, err := cfgParse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want one NEW.cose")
	}
	if *adminPub != "" {
		pub, err := cfgReadPub(*adminPub)
		if err != nil {
			return err
		}
		if err := config.InitState(*stateDir, pub); err != nil {
			return err
		}
	}
	raw, err := readBounded(pos[0], config.MaxSignedSize, "a signed configuration")
	if err != nil {
		return err
	}
	st, err := cfgOpenState(*stateDir, *tpmDev)
	if err != nil {
		return err
	}
	sc, e, err := st.Apply(raw)
	if err != nil {
		return fmt.Errorf("%s: REFUSED: %w", pos[0], err)
	}
	fmt.Printf("applied version %d (configuration %s), history entry %d\n", sc.Version, sc.Hash, e.Seq)
	for _, l := range e.Changes {
		fmt.Println("  " + l)
	}
	return nil
}

func configHistory(_ context.Context, args []string) error {
	fs := cfgSubFlags("history")
	stateDir := fs.String("state-dir", configStateDir(), "state directory")
	tpmDev := cfgTPMFlag(fs)
	if pos, _, err := cfgParse(fs, args, false); err != nil {
		return err
	} else if len(pos) != 0 {
		return usageErrorf("unexpected arguments %q", pos)
	}
	st, err := cfgOpenState(*stateDir, *tpmDev)
	if err != nil {
		return err
	}
	hist, err := st.History()
	for _, e := range hist {
		fmt.Printf("#%d  version %d  %s  configuration %s\n    entry %s  previous %s\n",
			e.Seq, e.Version, e.When().Format("2006-01-02T15:04:05Z"), e.Config, e.Hash(), e.Prev)
		for _, l := range e.Changes {
			fmt.Println("    " + l)
		}
	}
	if err != nil {
		return fmt.Errorf("history NOT verified after %d entries: %w", len(hist), err)
	}
	head, err := st.Head()
	if err != nil {
		return err
	}
	fmt.Printf("chain verified: %d entries, head %s, active version %d\n", len(hist), head.Head, head.Version)
	if *tpmDev != "" && len(hist) > 0 {
		fmt.Printf("head anchored in the TPM (%s)\n", *tpmDev)
	}
	return nil
}

// configReplaceAdmin is the administrator replacement ceremony: the TPM anchors the key id of
// the administrator whose configurations a state accepts, and nothing else changes it. The
// old state directory keeps the old key's history: the new key starts a new directory.
func configReplaceAdmin(_ context.Context, args []string) error {
	fs := cfgSubFlags("replace-admin")
	tpmDev := fs.String("tpm", "", "the TPM that anchors the configuration state (required)")
	stateDir := fs.String("state-dir", "", "a new state directory for the new administrator (required; not the old one)")
	adminPub := fs.String("admin-pub", "", "the new administrator public key (required)")
	replacing := fs.String("replacing", "", "key id (64 hex) of the administrator being replaced, as 'config init' printed it (required)")
	if pos, _, err := cfgParse(fs, args, false); err != nil {
		return err
	} else if len(pos) != 0 {
		return usageErrorf("unexpected arguments %q", pos)
	}
	if *tpmDev == "" || *stateDir == "" || *adminPub == "" || *replacing == "" {
		return usageErrorf("--tpm, --state-dir, --admin-pub and --replacing are required")
	}
	oldM, err := config.ParseMeasurement(*replacing)
	if err != nil {
		return usageErrorf("--replacing: %v", err)
	}
	old := config.KeyID(oldM)
	pub, err := cfgReadPub(*adminPub)
	if err != nil {
		return err
	}
	next, err := config.PublicKeyID(pub)
	if err != nil {
		return err
	}
	if next == old {
		// Nothing to replace, and the ceremony would still fold a record into the TPM's
		// history digest, orphaning the state this key applied.
		return usageErrorf("--admin-pub %s is the key it replaces (%s): the ceremony changes the administrator key", *adminPub, old)
	}
	if _, err := os.Stat(filepath.Join(*stateDir, "active")); err == nil {
		return fmt.Errorf("%s has applied configurations signed by the old key: keep it as their record and give a new --state-dir", *stateDir)
	}
	a, err := tpm.OpenVersionAnchor(strings.TrimPrefix(*tpmDev, "tpm:"), 0)
	if err != nil {
		return err
	}
	defer a.Close()
	// Pin first: a directory pinning another key is refused before the TPM changes.
	if err := config.InitState(*stateDir, pub); err != nil {
		return err
	}
	rec, err := a.ReplaceAdmin(old, next)
	if err != nil {
		return fmt.Errorf("REFUSED: %w", err)
	}
	line := fmt.Sprintf("%s administrator %s replaced by %s in %s by uid %d; record %s folded into its history digest\n",
		time.Now().UTC().Format(time.RFC3339), old, next, a.ID(), os.Getuid(), rec)
	if err := cfgAppendAudit(filepath.Join(*stateDir, "admin-replacements"), line); err != nil {
		return fmt.Errorf("the TPM now anchors %s, but the audit record was not written: %w", next, err)
	}
	fmt.Print(line)
	return nil
}

// cfgAppendAudit appends line to an audit file, durably.
func cfgAppendAudit(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cfgOpenSecrets opens the secret store of a state. The master key comes from a file: this is the
// development path (unrooted, like the "none" root of trust); a visor with a TPM supplies the
// key from its root of trust instead.
func cfgOpenSecrets(st *config.State, masterPath string, create bool) (*config.SecretStore, error) {
	if masterPath == "" {
		masterPath = filepath.Join(st.Dir(), "master.key")
	}
	master, err := readBounded(masterPath, maxMasterKeyFile, "a master key file")
	if errors.Is(err, os.ErrNotExist) && create {
		master = make([]byte, 32)
		if _, err := rand.Read(master); err != nil {
			return nil, err
		}
		if err := cfgWriteNew(masterPath, master, 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "palisade: created development master key %s (not rooted in a TPM)\n", masterPath)
	} else if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	_, kid := st.AdminKey()
	return config.OpenSecretStore(st.SecretsDir(), master, kid, st.Active)
}

func configSecret(ctx context.Context, args []string) error {
	fs := cfgSubFlags("secret")
	stateDir := fs.String("state-dir", configStateDir(), "state directory")
	tpmDev := cfgTPMFlag(fs)
	masterPath := fs.String("master-key", "", "development master key file (default: STATE/master.key, created if absent)")
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fs.Usage()
		return flag.ErrHelp
	}
	if len(args) == 0 || (args[0] != "put" && args[0] != "list") {
		return usageErrorf("secret put|list")
	}
	pos, _, err := cfgParse(fs, args[1:], false)
	if err != nil {
		return err
	}
	st, err := cfgOpenState(*stateDir, *tpmDev)
	if err != nil {
		return err
	}
	store, err := cfgOpenSecrets(st, *masterPath, args[0] == "put")
	if err != nil {
		return err
	}
	if args[0] == "list" {
		names, err := store.List()
		if err != nil {
			return err
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Println(n)
		}
		return nil
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usageErrorf("secret put NAME [FILE|-]")
	}
	var value []byte
	switch {
	case (len(pos) == 1 || pos[1] == "-") && isTerminal(os.Stdin):
		// Typed: one line, echo off (docs/cli.md); a file or pipe is taken byte for byte.
		value, err = readTerminal(ctx, os.Stdin, os.Stderr, "secret", config.MaxSecretSize, "value of secret "+pos[0]+": ")
	case len(pos) == 1 || pos[1] == "-":
		value, err = io.ReadAll(io.LimitReader(os.Stdin, config.MaxSecretSize+1))
	default:
		value, err = readBounded(pos[1], config.MaxSecretSize, "a secret")
	}
	if err != nil {
		return err
	}
	if err := store.Put(pos[0], value); err != nil {
		return err
	}
	fmt.Printf("stored secret %s (%d bytes, encrypted)\n", pos[0], len(value))
	return nil
}

// Bounds of the small files the commands read besides documents and evidence, far above any
// real one.
const (
	maxPEMKeyFile    = 64 << 10 // an administrator key, an AK
	maxPEMCertFile   = 1 << 20  // --ek-roots: a bundle of CA certificates
	maxMasterKeyFile = 4 << 10  // the development master key (32 bytes)
)

// readBounded reads the file at path, but never more than limit bytes: an input over the limit
// is refused with an error naming it (what: "a signed configuration"...), so that a device, a
// FIFO that never ends or a huge file named by mistake is an error, not a command that reads
// until memory runs out. Only one byte past the limit is ever read.
func readBounded(path string, limit int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes, the limit of %s", path, limit, what)
	}
	return b, nil
}
