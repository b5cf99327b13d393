package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/configtest"
	"github.com/palisade-project/palisade/internal/swtpmtest"
	"github.com/palisade-project/palisade/pal"
)

// TestCfgCLIHelper is not a test: cfgCLI runs the test binary with it to execute one CLI
// invocation in a child process (exec replaces the process, so it cannot run in-process).
func TestCfgCLIHelper(t *testing.T) {
	if os.Getenv("PALISADE_CFG_CLI") == "" {
		t.Skip("helper process only")
	}
	os.Exit(run(flag.Args()))
}

// cfgCLI runs `palisade ARGS` in a child process and returns its status, stdout and stderr.
func cfgCLI(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestCfgCLIHelper$", "--"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PALISADE_CFG_CLI=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func mustCLI(t *testing.T, dir string, args ...string) string {
	t.Helper()
	code, out, errs := cfgCLI(t, dir, args...)
	if code != 0 {
		t.Fatalf("palisade %s: status %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func refusedCLI(t *testing.T, dir, want string, args ...string) {
	t.Helper()
	code, out, errs := cfgCLI(t, dir, args...)
	if code != 1 || !strings.Contains(errs, want) {
		t.Fatalf("palisade %s: status %d, want 1 with %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errs)
	}
}

func fakeMeas(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

func writeDoc(t *testing.T, path string, version int, apps, pals map[string][]string, secrets map[string][]string) {
	t.Helper()
	j := func(m map[string][]string) string {
		var parts []string
		for k, v := range m {
			parts = append(parts, fmt.Sprintf("%q: [%s]", k, quoteAll(v)))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	doc := fmt.Sprintf(`{"version": %d, "apps": %s, "pals": %s, "secrets": %s}`, version, j(apps), j(pals), j(secrets))
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

func quoteAll(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func TestConfigCLISignVerifyPlanApplyHistory(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	mustCLI(t, dir, "config", "init", "--dir", "adm", "--state-dir", state)
	mustCLI(t, dir, "config", "init", "--dir", "other", "--alg", "es256")
	refusedCLI(t, dir, "refusing to replace", "config", "init", "--dir", "adm")

	pals := map[string][]string{"signer": {fakeMeas("signer-1")}}
	writeDoc(t, filepath.Join(dir, "v1.json"), 1,
		map[string][]string{"web": {fakeMeas("web-1")}, "db": {fakeMeas("db-1")}}, pals,
		map[string][]string{"tls-key": {"web", "signer"}, "db-pass": {"db"}})
	writeDoc(t, filepath.Join(dir, "v2.json"), 2,
		map[string][]string{"web": {fakeMeas("web-2")}}, map[string][]string{"signer": {fakeMeas("signer-1"), fakeMeas("signer-2")}},
		map[string][]string{"tls-key": {"web"}})
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v1.json")
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v2.json")
	mustCLI(t, dir, "config", "sign", "--key", "other/admin.key", "-o", "foreign.cose", "v2.json")

	if out := mustCLI(t, dir, "config", "verify", "--pub", "adm/admin.pub", "v1.cose"); !strings.Contains(out, "OK: version 1") {
		t.Fatalf("verify: %s", out)
	}
	refusedCLI(t, dir, "signed by another administrator key", "config", "verify", "--pub", "adm/admin.pub", "foreign.cose")
	raw, _ := os.ReadFile(filepath.Join(dir, "v2.cose"))
	i := bytes.Index(raw, []byte("signer"))
	raw[i] = 'S'
	os.WriteFile(filepath.Join(dir, "tampered.cose"), raw, 0o644)
	refusedCLI(t, dir, "signature does not verify", "config", "verify", "--pub", "adm/admin.pub", "tampered.cose")
	refusedCLI(t, dir, "REFUSED", "config", "apply", "--state-dir", state, "tampered.cose")
	refusedCLI(t, dir, "another administrator key", "config", "apply", "--state-dir", state, "foreign.cose")

	// plan, against nothing and against v1, pinned by golden files.
	golden := func(name, got string) {
		t.Helper()
		p := filepath.Join("..", "..", "internal", "config", "testdata", "cli", name)
		if os.Getenv("PALISADE_UPDATE_GOLDEN") != "" {
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(got), 0o644)
		}
		want, err := os.ReadFile(p)
		if err != nil || string(want) != got {
			t.Fatalf("%s (%v):\n--- got\n%s--- want\n%s", name, err, got, want)
		}
	}
	golden("plan-first.golden", mustCLI(t, dir, "config", "plan", "--state-dir", state, "v1.cose"))
	golden("plan-v1-v2.golden", mustCLI(t, dir, "config", "plan", "--state-dir", state, "--from", "v1.cose", "v2.cose"))

	mustCLI(t, dir, "config", "apply", "--state-dir", state, "v1.cose")
	golden("plan-active-v2.golden", mustCLI(t, dir, "config", "plan", "--state-dir", state, "v2.cose"))
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "v2.cose")
	refusedCLI(t, dir, "rollback refused: version 1 is not greater than the active version 2", "config", "apply", "--state-dir", state, "v1.cose")
	refusedCLI(t, dir, "rollback refused", "config", "apply", "--state-dir", state, "v2.cose")

	show := mustCLI(t, dir, "config", "show", "--active", "--state-dir", state)
	if !strings.Contains(show, "version: 2") || !strings.Contains(show, "secret tls-key: web") {
		t.Fatalf("show: %s", show)
	}
	js := mustCLI(t, dir, "config", "show", "--json", "--state-dir", state, "v2.cose")
	if c, err := config.ParseJSON([]byte(js)); err != nil || c.Version != 2 {
		t.Fatalf("show --json does not parse back: %v\n%s", err, js)
	}

	hist := mustCLI(t, dir, "config", "history", "--state-dir", state)
	if !strings.Contains(hist, "chain verified: 2 entries") || !strings.Contains(hist, "pal signer: loses secret tls-key") {
		t.Fatalf("history: %s", hist)
	}
	// Break a link: flip a byte of the first entry.
	hp := filepath.Join(state, "history")
	h, _ := os.ReadFile(hp)
	h[20] ^= 0xff
	os.WriteFile(hp, h, 0o644)
	refusedCLI(t, dir, "history is corrupt", "config", "history", "--state-dir", state)
}

func TestExecCLI(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	mustCLI(t, dir, "config", "init", "--dir", "adm", "--state-dir", state)

	tool := filepath.Join(dir, "tool")
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skip(err)
	}
	os.WriteFile(tool, b, 0o755)
	script := filepath.Join(dir, "reader.sh")
	out := filepath.Join(dir, "got")
	os.WriteFile(script, []byte("#!/bin/sh\ncat <&5 > "+out+"\n"), 0o755)
	mTool := strings.TrimSpace(mustCLI(t, dir, "measure", "-q", "--kind", "file", tool))
	mScript := strings.TrimSpace(mustCLI(t, dir, "measure", "-q", script))
	if want, _ := config.MeasureFile(tool); mTool != want.String() {
		t.Fatalf("measure: %s, want %s", mTool, want)
	}
	writeDoc(t, filepath.Join(dir, "v1.json"), 1,
		map[string][]string{"tool": {mTool, mScript}, "other": {}}, map[string][]string{"apal": {mTool}},
		map[string][]string{"token": {"tool"}, "private": {"other"}})
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v1.json")
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "v1.cose")
	os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret"), 0o600)
	mustCLI(t, dir, "config", "secret", "put", "--state-dir", state, "token", "token")
	mustCLI(t, dir, "config", "secret", "put", "--state-dir", state, "private", "token")

	mustCLI(t, dir, "exec", "tool", "--state-dir", state, "--", tool)
	// The secret arrives on fd 5 and nowhere else.
	mustCLI(t, dir, "exec", "tool", "--state-dir", state, "--secret", "token:5", "--", script)
	if got, _ := os.ReadFile(out); string(got) != "s3cret" {
		t.Fatalf("secret on fd 5: %q", got)
	}
	if shm, err := os.Stat("/dev/shm"); err == nil && shm.IsDir() {
		p := filepath.Join("/dev/shm", fmt.Sprintf("palisade-test-%d", os.Getpid()))
		defer os.Remove(p)
		mustCLI(t, dir, "exec", "tool", "--state-dir", state, "--secret", "token:"+p, "--", tool)
		st, err := os.Stat(p)
		got, _ := os.ReadFile(p)
		if err != nil || st.Mode().Perm() != 0o600 || string(got) != "s3cret" {
			t.Fatalf("secret file: %v %v %q", err, st.Mode(), got)
		}
	}
	refusedCLI(t, dir, "not on a tmpfs", "exec", "tool", "--state-dir", state, "--secret", "token:"+filepath.Join(dir, "leak"), "--", tool)
	refusedCLI(t, dir, "not released to this name", "exec", "tool", "--state-dir", state, "--secret", "private:5", "--", tool)
	refusedCLI(t, dir, "not in the active configuration", "exec", "ghost", "--state-dir", state, "--", tool)
	refusedCLI(t, dir, "not listed", "exec", "other", "--state-dir", state, "--", tool)
	refusedCLI(t, dir, "is a pal, not an application", "exec", "apal", "--state-dir", state, "--", tool)
	// The command without its --: named as such (it said "want one NAME"), status 2.
	if code, _, errs := cfgCLI(t, dir, "exec", "tool", "--state-dir", state, tool); code != 2 || !strings.Contains(errs, "put -- before the command") {
		t.Fatalf("exec without --: status %d, %s", code, errs)
	}

	// A modified binary is refused.
	f, _ := os.OpenFile(tool, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0})
	f.Close()
	refusedCLI(t, dir, "is not trusted by configuration version 1", "exec", "tool", "--state-dir", state, "--", tool)
	refusedCLI(t, dir, "is not trusted", "exec", "tool", "--state-dir", state, "--secret", "token:5", "--", tool)

	// A tree image: the command must be inside the measured tree.
	tree := filepath.Join(dir, "app")
	os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
	os.WriteFile(filepath.Join(tree, "bin", "true"), b, 0o755)
	mTree := strings.TrimSpace(mustCLI(t, dir, "measure", "-q", tree))
	writeDoc(t, filepath.Join(dir, "v2.json"), 2, map[string][]string{"tool": {mTree}}, nil, nil)
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v2.json")
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "v2.cose")
	mustCLI(t, dir, "exec", "tool", "--state-dir", state, "--tree", tree, "--", filepath.Join(tree, "bin", "true"))
	refusedCLI(t, dir, "not inside the measured tree", "exec", "tool", "--state-dir", state, "--tree", tree, "--", "/bin/true")
	os.WriteFile(filepath.Join(tree, "extra"), nil, 0o644)
	refusedCLI(t, dir, "not trusted", "exec", "tool", "--state-dir", state, "--tree", tree, "--", filepath.Join(tree, "bin", "true"))
}

func TestMeasureCLI(t *testing.T) {
	dir := t.TempDir()
	wasm := []byte("\x00asm\x01\x00\x00\x00")
	os.WriteFile(filepath.Join(dir, "p.wasm"), wasm, 0o644)
	img, err := pal.Parse(wasm)
	if err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, dir, "measure", "p.wasm")
	if !strings.Contains(out, "kind:        pal") || !strings.Contains(out, "engine:      wasm") || !strings.Contains(out, img.Measurement.String()) {
		t.Fatalf("measure wasm: %s", out)
	}
	asFile := strings.TrimSpace(mustCLI(t, dir, "measure", "-q", "--kind", "file", "p.wasm"))
	if asFile != config.MeasureBytes(wasm).String() || asFile == img.Measurement.String() {
		t.Fatalf("measure --kind file: %s", asFile)
	}
	code, _, errs := cfgCLI(t, dir, "measure", "--kind", "pal", filepath.Join(dir))
	if code == 0 {
		t.Fatalf("a directory measured as a PAL: %s", errs)
	}
	if code, _, _ := cfgCLI(t, dir, "measure", "--kind", "bogus", "p.wasm"); code != 2 {
		t.Fatalf("bad --kind: status %d, want 2", code)
	}
}

// TestConfigSubcommandHelp: `config SUB -h` prints that subcommand's own usage line, and every
// flag line names one flag with at most one argument placeholder (flag.PrintDefaults takes a
// back-quoted word of the help text as the placeholder).
func TestConfigSubcommandHelp(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range cfgSubs {
		t.Run(sub.name, func(t *testing.T) {
			code, out, errs := cfgCLI(t, dir, "config", sub.name, "-h")
			help := out + errs
			if code != 0 {
				t.Fatalf("status %d\n%s", code, help)
			}
			first, _, _ := strings.Cut(help, "\n")
			if want := "usage: palisade config " + sub.name + " " + sub.args; first != want {
				t.Errorf("first line %q, want %q", first, want)
			}
			if !strings.Contains(help, sub.summary) {
				t.Errorf("help does not say what %s does (%q):\n%s", sub.name, sub.summary, help)
			}
			for _, l := range strings.Split(help, "\n") {
				if strings.HasPrefix(l, "  -") && len(strings.Fields(l)) > 2 {
					t.Errorf("flag line %q has more than one placeholder", l)
				}
			}
		})
	}
	// The command's own help lists every subcommand.
	code, out, errs := cfgCLI(t, dir, "config", "-h")
	if code != 0 {
		t.Fatalf("config -h: status %d", code)
	}
	for _, sub := range cfgSubs {
		if !strings.Contains(out+errs, "\n  "+sub.name+" ") {
			t.Errorf("config -h does not list %s:\n%s", sub.name, out+errs)
		}
	}
}

// TestConfigCLIAnchoredInTPM walks the administrator's workflow on a real swtpm and tries what
// someone who can write the state directory can do (issue #16): run exec without --tpm on a
// rolled-back directory, wipe the directory and bring another administrator key, rewrite the
// history consistently. Each is refused, and the replacement ceremony is the one way to change
// the administrator.
func TestConfigCLIAnchoredInTPM(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed")
	}
	sw := swtpmtest.Start(t)
	dev := sw.Device()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	initOut := mustCLI(t, dir, "config", "init", "--dir", "adm", "--state-dir", state)
	mustCLI(t, dir, "config", "init", "--dir", "intruder")

	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skip(err)
	}
	tool := filepath.Join(dir, "tool")
	os.WriteFile(tool, b, 0o755)
	mTool := strings.TrimSpace(mustCLI(t, dir, "measure", "-q", "--kind", "file", tool))
	writeDoc(t, filepath.Join(dir, "v1.json"), 1, map[string][]string{"tool": {mTool}}, nil, map[string][]string{"token": {"tool"}})
	writeDoc(t, filepath.Join(dir, "v2.json"), 2, map[string][]string{"tool": {}}, nil, map[string][]string{"token": {"tool"}})
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v1.json")
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v2.json")
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "--tpm", dev, "v1.cose")
	os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret"), 0o600)
	mustCLI(t, dir, "config", "secret", "put", "--state-dir", state, "--tpm", dev, "token", "token")
	mustCLI(t, dir, "exec", "tool", "--state-dir", state, "--tpm", dev, "--secret", "token:5", "--", tool)
	snapshot := filepath.Join(t.TempDir(), "v1")
	copyTree(t, state, snapshot)

	// Version 2 revokes the tool.
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "--tpm", dev, "v2.cose")
	refusedCLI(t, dir, "not listed", "exec", "tool", "--state-dir", state, "--tpm", dev, "--", tool)

	// Item 3: the version-1 directory put back; exec without --tpm must not run the tool.
	os.RemoveAll(state)
	copyTree(t, snapshot, state)
	refusedCLI(t, dir, "anchored in TPM NV index", "exec", "tool", "--state-dir", state, "--secret", "token:5", "--", tool)
	refusedCLI(t, dir, "anchored in TPM NV index", "config", "show", "--active", "--state-dir", state)
	refusedCLI(t, dir, "rollback", "exec", "tool", "--state-dir", state, "--tpm", dev, "--", tool)
	os.RemoveAll(state)

	// Item 4: a wiped directory with another administrator key, on the same TPM.
	writeDoc(t, filepath.Join(dir, "evil.json"), 3, map[string][]string{"tool": {mTool}}, nil, nil)
	mustCLI(t, dir, "config", "sign", "--key", "intruder/admin.key", "-o", "evil.cose", "evil.json")
	refusedCLI(t, dir, "does not hold", "config", "apply", "--state-dir", state, "--tpm", dev,
		"--admin-pub", "intruder/admin.pub", "evil.cose")
	os.RemoveAll(state)

	// Item 5: the history rewritten consistently (chain and head recomputed). A wiped
	// directory with the anchored key takes versions above the anchor's.
	writeDoc(t, filepath.Join(dir, "v3.json"), 3, map[string][]string{"tool": {}}, nil, nil)
	writeDoc(t, filepath.Join(dir, "v4.json"), 4, map[string][]string{"tool": {}}, nil, nil)
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v3.json")
	mustCLI(t, dir, "config", "sign", "--key", "adm/admin.key", "v4.json")
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "--tpm", dev, "--admin-pub", "adm/admin.pub", "v3.cose")
	mustCLI(t, dir, "config", "apply", "--state-dir", state, "--tpm", dev, "v4.cose")
	if out := mustCLI(t, dir, "config", "history", "--state-dir", state, "--tpm", dev); !strings.Contains(out, "head anchored in the TPM") {
		t.Fatalf("history: %s", out)
	}
	// plan reads the pinned key and the active configuration over one TPM connection.
	if out := mustCLI(t, dir, "config", "plan", "--state-dir", state, "--tpm", dev, "v4.cose"); !strings.Contains(out, "REFUSED: version 4 is not greater than 4") {
		t.Fatalf("plan: %s", out)
	}
	configtest.RewriteLastEntry(t, state)
	refusedCLI(t, dir, "does not match its anchor", "config", "history", "--state-dir", state, "--tpm", dev)

	// The ceremony: the administrator key the TPM anchors changes only this way, into a new
	// directory, and leaves an audit record.
	kid := regexp.MustCompile(`administrator key ([0-9a-f]{64})`).FindStringSubmatch(initOut)[1]
	newState := filepath.Join(dir, "state-new")
	code, _, errs := cfgCLI(t, dir, "config", "replace-admin", "--tpm", dev, "--state-dir", newState,
		"--admin-pub", "intruder/admin.pub", "--replacing", strings.Repeat("ab", 32))
	if code != 1 || !strings.Contains(errs, "REFUSED") {
		t.Fatalf("ceremony naming the wrong key: %d %s", code, errs)
	}
	os.RemoveAll(newState)
	out := mustCLI(t, dir, "config", "replace-admin", "--tpm", dev, "--state-dir", newState,
		"--admin-pub", "intruder/admin.pub", "--replacing", kid)
	audit, _ := os.ReadFile(filepath.Join(newState, "admin-replacements"))
	if !strings.Contains(out, "replaced by") || string(audit) != out {
		t.Fatalf("ceremony printed %q, audit %q", out, audit)
	}
	writeDoc(t, filepath.Join(dir, "v5.json"), 5, map[string][]string{"tool": {}}, nil, nil)
	mustCLI(t, dir, "config", "sign", "--key", "intruder/admin.key", "v5.json")
	mustCLI(t, dir, "config", "apply", "--state-dir", newState, "--tpm", dev, "v5.cose")
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}
