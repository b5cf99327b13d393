package main

// Tests of the daemon's trusted-core integrations: key-use audit, a trusted configuration
// anchored in the TPM and carried in evidence, and the PolicyAuthorize'd master secret.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/swtpmtest"
	"github.com/palisade-project/palisade/internal/utpm"
)

// TestKeyUseAudit: every key creation and signature of a PAL, failed ones included, is in the
// audit log with the PAL's handle, name, measurement and owner.
func TestKeyUseAudit(t *testing.T) {
	d := startDaemon(t, newDaemonDir(t), Config{}, false)
	c := d.dial()
	ctx := context.Background()
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "audited"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Call(ctx, info.Handle, []byte{'c', 1}); err != nil || res.Status != 0 {
		t.Fatalf("key create: %+v %v", res, err)
	}
	digest := sha256.Sum256([]byte("m"))
	ecdsaSHA256 := []byte{0x18, 0x00, 0x0b, 0x00}
	if res, err := c.Call(ctx, info.Handle, append(ecdsaSHA256, digest[:]...)); err != nil || res.Status != 0 {
		t.Fatalf("key sign: %+v %v", res, err)
	}
	// A 20-byte digest for SHA-256: the µTPM refuses (E_INVAL, PAL status 201).
	if res, err := c.Call(ctx, info.Handle, append(ecdsaSHA256, digest[:20]...)); err != nil || res.Status != 201 {
		t.Fatalf("bad key sign: %+v %v", res, err)
	}

	var uses []map[string]any
	for _, e := range d.auditEvents() {
		if e["event"] == "key_use" {
			uses = append(uses, e)
		}
	}
	want := []struct {
		op string
		ok bool
	}{{"key-create", true}, {"key-sign", true}, {"key-sign", false}}
	if len(uses) != len(want) {
		t.Fatalf("%d key_use events, want %d: %v", len(uses), len(want), uses)
	}
	m := hex.EncodeToString(info.Measurement[:])
	for i, w := range want {
		e := uses[i]
		if e["op"] != w.op || e["ok"] != w.ok || e["pal"] != info.Handle || e["name"] != "audited" ||
			e["measurement"] != m || e["owner"] != float64(os.Getuid()) {
			t.Errorf("event %d = %v, want op %s ok %v pal %s owner %d", i, e, w.op, w.ok, info.Handle, os.Getuid())
		}
		if _, hasErr := e["error"]; hasErr == w.ok {
			t.Errorf("event %d: error field %v with ok %v", i, e["error"], w.ok)
		}
	}
}

// cli runs the palisade CLI outside any daemon and returns its stdout; it fails the test on a
// non-zero exit unless fail is set, in which case it returns stderr of the expected failure.
func cli(t *testing.T, fail bool, args ...string) string {
	t.Helper()
	_, bin, _ := artifacts(t)
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if fail {
		if err == nil {
			t.Fatalf("palisade %v succeeded, want a failure:\n%s", args, out.String())
		}
		return errb.String()
	}
	if err != nil {
		t.Fatalf("palisade %v: %v\n%s%s", args, err, out.String(), errb.String())
	}
	return out.String()
}

var appliedRE = regexp.MustCompile(`applied version (\d+) \(configuration ([0-9a-f]{64})\)`)

// applyConfig signs a configuration of version v listing visors (a JSON array) and pals (a
// JSON object) with the key in keys/ and applies it to the state directory, with the TPM
// anchor of device if not empty; it returns the configuration hash.
func applyConfig(t *testing.T, keys, stateDir, device string, v int, visors, pals string) string {
	t.Helper()
	doc := filepath.Join(keys, "v.json")
	body := `{"version": ` + itoa(v) + `, "visors": ` + visors + `, "pals": ` + pals + `, "apps": {}, "secrets": {}}`
	if err := os.WriteFile(doc, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	signed := filepath.Join(keys, "v"+itoa(v)+".cose")
	cli(t, false, "config", "sign", "--key", filepath.Join(keys, "admin.key"), "-o", signed, doc)
	args := []string{"config", "apply", "--state-dir", stateDir, "--admin-pub", filepath.Join(keys, "admin.pub")}
	if device != "" {
		args = append(args, "--tpm", device)
	}
	out := cli(t, false, append(args, signed)...)
	m := appliedRE.FindStringSubmatch(out)
	if m == nil || m[1] != itoa(v) {
		t.Fatalf("apply printed %q", out)
	}
	return m[2]
}

func itoa(v int) string { return strconv.Itoa(v) }

// writeConfig writes cfg as dir/config.json, as startDaemon does.
func writeConfig(t *testing.T, dir string, cfg Config) string {
	t.Helper()
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTrustedConfiguration: a configuration applied with palisade config apply --tpm is
// anchored in the TPM's NV counter; the daemon (on the same TPM) puts its head in evidence,
// which palisade verify checks; a rolled-back state directory is refused by the CLI with
// --tpm and by the daemon.
func TestTrustedConfiguration(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	sw := swtpmtest.Start(t)
	dir := newDaemonDir(t)
	keys := t.TempDir()
	stateDir := filepath.Join(dir, "state", "config")
	cli(t, false, "config", "init", "--dir", keys)
	hash1 := applyConfig(t, keys, stateDir, sw.Device(), 1, "[]", "{}")
	snapshot := filepath.Join(t.TempDir(), "config-v1")
	if out, err := exec.Command("cp", "-a", stateDir, snapshot).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}

	cfg := Config{Rot: sw.Device()}
	d := startDaemon(t, dir, cfg, false)
	c := d.dial()
	ctx := context.Background()
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Register(ctx, testPAL(t), client.RegisterOptions{Name: "configured"})
	if err != nil {
		t.Fatal(err)
	}
	ev := filepath.Join(t.TempDir(), "ev.cbor")
	if r := d.runCLI(-1, nil, "attest", info.Handle, "--nonce", "beef", "-o", ev); r.code != 0 {
		t.Fatalf("attest: %d %s", r.code, r.stderr)
	}
	verify := func(extra ...string) cliResult {
		args := append([]string{"verify", ev, "--nonce", "beef", "--pal", hex.EncodeToString(info.Measurement[:]),
			"--visor", hex.EncodeToString(h.VisorMeasurement[:])}, extra...)
		return d.runCLI(-1, nil, args...)
	}
	r := verify("--config-min-version", "1", "--config-hash", hash1)
	if r.code != 0 || !strings.Contains(r.stdout, "config     version 1") || !strings.Contains(r.stdout, hash1) {
		t.Fatalf("verify with configuration checks: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := verify("--config-min-version", "2"); r.code == 0 || !strings.Contains(r.stderr, "config") {
		t.Fatalf("verify --config-min-version 2 of version 1: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	other := strings.Repeat("ab", 32)
	if r := verify("--config-hash", other); r.code == 0 {
		t.Fatalf("verify --config-hash of another configuration passed:\n%s", r.stdout)
	}
	c.Close()
	d.stop() // the swtpm socket serves one connection at a time

	// Version 2 advances the TPM's counter; putting the version-1 directory back is a rollback.
	hash2 := applyConfig(t, keys, stateDir, sw.Device(), 2, "[]", "{}")
	if hash2 == hash1 {
		t.Fatal("versions 1 and 2 have the same hash")
	}
	if out := cli(t, false, "config", "history", "--state-dir", stateDir, "--tpm", sw.Device()); !strings.Contains(out, "active version 2") {
		t.Fatalf("history: %s", out)
	}
	if err := os.RemoveAll(stateDir); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", snapshot, stateDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	// The state's own anchor file was rolled back with it, but the state remembers that it
	// is anchored in the TPM: without --tpm it is refused, not served.
	if e := cli(t, true, "config", "history", "--state-dir", stateDir); !strings.Contains(e, "anchored in TPM NV index") {
		t.Fatalf("history without --tpm of a TPM-anchored state: %s", e)
	}
	if e := cli(t, true, "config", "history", "--state-dir", stateDir, "--tpm", sw.Device()); !strings.Contains(e, "rollback") {
		t.Fatalf("history --tpm of a rolled-back state: %s", e)
	}
	if e := daemonMustFail(t, dir, cfg); !strings.Contains(e, "rollback") {
		t.Fatalf("daemon on a rolled-back state: %s", e)
	}
}

// daemonMustFail runs palisaded with cfg in dir and returns its stderr; it must exit non-zero
// at start.
func daemonMustFail(t *testing.T, dir string, cfg Config) string {
	t.Helper()
	bin, _, _ := artifacts(t)
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Socket = filepath.Join(dir, "run", "palisade.sock")
	cfg.ShutdownTimeout = "5s"
	if cfg.LogLevel == "" {
		cfg.LogLevel = "debug"
	}
	cfgPath := writeConfig(t, dir, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--config", cfgPath).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("palisaded did not fail at start (%v):\n%s", err, out)
	}
	return string(out)
}

// TestAuthorizedMasterSecret: with an administrator authority configured, the master secret is
// sealed with PolicyAuthorize; a restart unseals it only once palisade config authorize-visor
// has approved this visor's measurement.
func TestAuthorizedMasterSecret(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	sw := swtpmtest.Start(t)
	dir := newDaemonDir(t)
	keys := t.TempDir()
	cli(t, false, "config", "init", "--dir", keys, "--alg", "es256")
	cfg := Config{Rot: sw.Device(), Authority: filepath.Join(keys, "admin.pub")}

	d := startDaemon(t, dir, cfg, false)
	h, err := d.dial().Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d.stop()

	// No authorization for this visor yet: the master secret stays sealed.
	if e := daemonMustFail(t, dir, cfg); !strings.Contains(e, "authorization") {
		t.Fatalf("restart without an authorization: %s", e)
	}
	authDir := filepath.Join(dir, "state", "rot-tpm", "authorizations")
	if err := os.MkdirAll(authDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// An authorization of another visor build does not help.
	cli(t, false, "config", "authorize-visor", "--key", filepath.Join(keys, "admin.key"),
		"--visor", strings.Repeat("00", 31)+"01", "-o", filepath.Join(authDir, "other"))
	if e := daemonMustFail(t, dir, cfg); !strings.Contains(e, "no authorization") {
		t.Fatalf("restart with another visor's authorization: %s", e)
	}

	out := cli(t, false, "config", "authorize-visor", "--key", filepath.Join(keys, "admin.key"),
		"--visor", hex.EncodeToString(h.VisorMeasurement[:]), "-o", filepath.Join(authDir, "this"))
	if !strings.Contains(out, hex.EncodeToString(h.VisorMeasurement[:])) {
		t.Fatalf("authorize-visor printed %q", out)
	}
	d = startDaemon(t, dir, cfg, false)
	h2, err := d.dial().Health(context.Background())
	if err != nil || !bytes.Equal(h2.VisorMeasurement[:], h.VisorMeasurement[:]) {
		t.Fatalf("after authorization: %+v %v", h2, err)
	}
	d.stop()

	// An Ed25519 administrator key cannot authorize a TPM policy.
	edKeys := t.TempDir()
	cli(t, false, "config", "init", "--dir", edKeys)
	if e := cli(t, true, "config", "authorize-visor", "--key", filepath.Join(edKeys, "admin.key"),
		"--visor", hex.EncodeToString(h.VisorMeasurement[:]), "-o", filepath.Join(t.TempDir(), "x")); e == "" {
		t.Fatal("authorize-visor with an Ed25519 key: no error")
	}
}

var adminKeyRE = regexp.MustCompile(`administrator key ([0-9a-f]{64})`)

// TestSealToNameDaemon: a PAL seals to a name under the administrator's key; the daemon's
// active trusted configuration decides at each unseal which PAL may act as that name, and an
// apply while the daemon runs moves the name to another build without resealing.
func TestSealToNameDaemon(t *testing.T) {
	dir := newDaemonDir(t)
	keys := t.TempDir()
	stateDir := filepath.Join(dir, "state", "config")
	m := adminKeyRE.FindStringSubmatch(cli(t, false, "config", "init", "--dir", keys, "--state-dir", stateDir))
	if m == nil {
		t.Fatal("config init printed no key id")
	}
	kid, err := config.ParseMeasurement(m[1])
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, Config{}, false)
	c := d.dial()
	ctx := context.Background()
	img := testPAL(t)
	a, err := c.Register(ctx, img, client.RegisterOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// A custom section (id 0, name "b") gives the same code another measurement.
	b, err := c.Register(ctx, append(append([]byte(nil), img...), 0, 3, 1, 'b', 'x'), client.RegisterOptions{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Measurement == b.Measurement {
		t.Fatal("a and b have the same measurement")
	}
	call := func(h string, in []byte) (int32, []byte) {
		t.Helper()
		res, err := c.Call(ctx, h, in)
		if err != nil {
			t.Fatal(err)
		}
		return res.Status, res.Output
	}
	// Nothing applied yet: evidence carries no configuration head.
	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev0 := filepath.Join(t.TempDir(), "ev0.cbor")
	if r := d.runCLI(-1, nil, "attest", a.Handle, "--nonce", "00", "-o", ev0); r.code != 0 {
		t.Fatalf("attest: %d %s", r.code, r.stderr)
	}
	if r := d.runCLI(-1, nil, "verify", ev0, "--nonce", "00", "--pal", config.Measurement(a.Measurement).String(),
		"--visor", config.Measurement(h.VisorMeasurement).String(), "--allow-unrooted", "--require-config"); r.code == 0 || !strings.Contains(r.stderr, "configuration") {
		t.Fatalf("verify --require-config without a configuration: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	policy := engine.EncodePolicy(utpm.Policy{Name: "vault", Signer: utpm.Digest(kid)})
	seal := append(append([]byte{'S'}, policy...), "secret"...)

	// Before any apply there is no active configuration: nobody is the name.
	st, blob0 := call(a.Handle, seal)
	if st != 0 {
		t.Fatalf("seal before any apply: status %d", st)
	}
	if st, _ := call(b.Handle, append([]byte{'U'}, blob0...)); st != 200+engine.ENotAuthorized {
		t.Fatalf("unseal with no active configuration: status %d", st)
	}
	hex := func(m [32]byte) string { return `"` + config.Measurement(m).String() + `"` }
	thisVisor := "[" + hex(h.VisorMeasurement) + "]"
	applyConfig(t, keys, stateDir, "", 1, thisVisor, `{"vault": [`+hex(b.Measurement)+`]}`)
	st, blob := call(a.Handle, seal)
	if st != 0 || bytes.Equal(blob, blob0) {
		t.Fatalf("seal: status %d", st)
	}
	unseal := append([]byte{'U'}, blob...)
	st, out := call(b.Handle, unseal)
	if st != 0 || !bytes.Equal(out[:32], a.Measurement[:]) || string(out[32:]) != "secret" {
		t.Fatalf("b unseals: status %d, %q", st, out)
	}
	if st, _ := call(a.Handle, unseal); st != 200+engine.ENotAuthorized {
		t.Fatalf("a unseals: status %d, want %d (E_NOTAUTHORIZED)", st, 200+engine.ENotAuthorized)
	}

	// Version 2 lists a instead of b: the next unseal follows it.
	applyConfig(t, keys, stateDir, "", 2, thisVisor, `{"vault": [`+hex(a.Measurement)+`]}`)
	if st, _ := call(b.Handle, unseal); st != 200+engine.ENotAuthorized {
		t.Fatalf("b after revocation: status %d", st)
	}
	if st, out := call(a.Handle, unseal); st != 0 || string(out[32:]) != "secret" {
		t.Fatalf("a after the update: status %d %q", st, out)
	}

	// Evidence names the configuration active when it is made (here unrooted: rot "none").
	ev := filepath.Join(t.TempDir(), "ev.cbor")
	if r := d.runCLI(-1, nil, "attest", a.Handle, "--nonce", "01", "-o", ev); r.code != 0 {
		t.Fatalf("attest: %d %s", r.code, r.stderr)
	}
	verify := func(ev string, nonce string, extra ...string) cliResult {
		return d.runCLI(-1, nil, append([]string{"verify", ev, "--nonce", nonce, "--pal", config.Measurement(a.Measurement).String(),
			"--visor", config.Measurement(h.VisorMeasurement).String(), "--allow-unrooted"}, extra...)...)
	}
	// It names the signer and says the visor is listed; a relying party can require both.
	r := verify(ev, "01", "--config-min-version", "2", "--config-signer", m[1], "--config-visor-listed")
	if r.code != 0 || !strings.Contains(r.stdout, "config     version 2") || !strings.Contains(r.stdout, "config signer "+m[1]) {
		t.Fatalf("verify: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := verify(ev, "01", "--config-signer", strings.Repeat("ab", 32)); r.code == 0 || !strings.Contains(r.stderr, "configuration-signer") {
		t.Fatalf("verify --config-signer of another key: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Version 3 lists another visor build, applied while this one runs: it serves the name no
	// longer, and its evidence says why.
	applyConfig(t, keys, stateDir, "", 3, `["`+strings.Repeat("0", 63)+`1"]`, `{"vault": [`+hex(a.Measurement)+`]}`)
	if st, _ := call(a.Handle, unseal); st != 200+engine.ENotAuthorized {
		t.Fatalf("unseal on a visor the configuration does not list: status %d", st)
	}
	ev3 := filepath.Join(t.TempDir(), "ev3.cbor")
	if r := d.runCLI(-1, nil, "attest", a.Handle, "--nonce", "03", "-o", ev3); r.code != 0 {
		t.Fatalf("attest: %d %s", r.code, r.stderr)
	}
	if r := verify(ev3, "03"); r.code != 0 || !strings.Contains(r.stdout, "config visor NOT listed") {
		t.Fatalf("verify of an unlisted visor: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := verify(ev3, "03", "--config-visor-listed"); r.code == 0 || !strings.Contains(r.stderr, "configuration-visor") {
		t.Fatalf("verify --config-visor-listed of an unlisted visor: code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// And so does its log when it starts under such a configuration.
	c.Close()
	d.stop()
	d = startDaemon(t, dir, Config{}, false)
	if log := d.stderr.String(); !strings.Contains(log, "not listed in the active configuration's visors") {
		t.Fatalf("start under a configuration that does not list the visor logged:\n%s", log)
	}
}
