package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/engine/conformance"
)

// subcommands lists the sub-commands of every command ("" alone: none). Every registered
// command must be listed, so that a new command or sub-command is covered by the help and
// parsing tests below.
var subcommands = map[string][]string{
	"attest":    {""},
	"bench":     {""},
	"config":    {"init", "sign", "verify", "show", "plan", "apply", "history", "secret put", "secret list", "authorize-visor", "replace-admin"},
	"demo":      nil, // filled from the demos map
	"exec":      {""},
	"key":       {"create", "import", "list", "show", "public", "delete", "access", "pin", "csr", "selfsign", "chain", "attest", "verify"}, // the keys branch
	"measure":   {""},
	"pal":       {"register", "call", "list", "unregister"},
	"passwd":    {""},
	"run":       {""},
	"ssh-agent": {""},
	"verify":    {""},
}

// commandLines returns "palisade CMD [SUB]" for every command and sub-command, checking that
// the subcommands table lists every registered command.
func commandLines(t *testing.T) [][]string {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var lines [][]string
	for _, name := range names {
		subs, ok := subcommands[name]
		if !ok {
			t.Errorf("command %q is not in the subcommands table of this test: add it with its sub-commands", name)
			subs = []string{""}
		}
		if name == "demo" {
			subs = []string{""}
			for d := range demos {
				subs = append(subs, d)
			}
			sort.Strings(subs)
		}
		for _, sub := range subs {
			lines = append(lines, append([]string{name}, strings.Fields(sub)...))
		}
	}
	return lines
}

// TestHelpExitsZero: -h, -help and --help on every command and sub-command, wherever they
// stand, print the usage and exit 0; so does 'palisade help COMMAND'.
func TestHelpExitsZero(t *testing.T) {
	for name := range commands {
		if code, out, errOut := capture(t, "help", name); code != 0 || !strings.Contains(out+errOut, "usage: palisade "+name) {
			t.Errorf("palisade help %s: status %d, output lacks its usage:\n%s%s", name, code, out, errOut)
		}
	}
	for _, base := range commandLines(t) {
		for _, h := range []string{"-h", "-help", "--help"} {
			for _, args := range [][]string{
				append(append([]string{}, base...), h),
				append(append([]string{}, base...), "ARG", h), // after a positional argument
			} {
				code, out, errOut := capture(t, args...)
				if code != 0 {
					t.Errorf("palisade %s: status %d, want 0\n%s%s", strings.Join(args, " "), code, out, errOut)
					continue
				}
				if !strings.Contains(out+errOut, "usage: palisade "+base[0]) {
					t.Errorf("palisade %s: no usage in the output:\n%s%s", strings.Join(args, " "), out, errOut)
				}
			}
		}
	}
}

// secretName matches flag names that would carry a secret.
var secretName = regexp.MustCompile(`(?i)pass(word|wd|phrase)?|pin|token|secret|private|^key$`)

// pathFlags are flags whose name says "key" but whose value is a file's path, though their help
// does not say so (checked by reading the code: os.ReadFile of the value).
var pathFlags = map[string]bool{
	"config authorize-visor --key": true,
}

// notSecrets are flags whose name matches secretName but whose value is no secret.
var notSecrets = map[string]bool{
	"ssh-agent --pin-cache": true, // a duration: how long a PIN stays cached
}

// TestNoSecretsInArgv audits every command's and sub-command's flags (as -h lists them): a flag
// whose name says it carries a secret must name a file or descriptor holding it (its name ends
// in -file or its help says FILE, PEM or descriptor), or be one that refuses the secret.
func TestNoSecretsInArgv(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^  -(\S+)(?: (\S+))?\n\s+(.*)$`)
	for _, base := range commandLines(t) {
		_, out, errOut := capture(t, append(append([]string{}, base...), "-h")...)
		for _, m := range flagLine.FindAllStringSubmatch(out+errOut, -1) {
			name, help := m[1], m[3]
			if !secretName.MatchString(name) || m[2] == "" { // boolean flags carry no value
				continue
			}
			if pathFlags[strings.Join(base, " ")+" --"+name] || notSecrets[strings.Join(base, " ")+" --"+name] {
				continue
			}
			if strings.HasSuffix(name, "-file") || strings.HasPrefix(help, "refused:") ||
				regexp.MustCompile(`FILE|PEM|file|descriptor|S:FD`).MatchString(help) {
				continue
			}
			t.Errorf("palisade %s --%s takes its value on the command line and looks like a secret: %s", strings.Join(base, " "), name, help)
		}
	}
	// The SSH demo's password: refused on the command line, with the rule.
	code, _, errOut := capture(t, "demo", "ssh", "--password", "hunter2")
	if code != exitUsage || !strings.Contains(errOut, "/proc/PID/cmdline") || !strings.Contains(errOut, "--password-file") {
		t.Errorf("demo ssh --password: status %d, want %d and the rule:\n%s", code, exitUsage, errOut)
	}
}

// TestSplitArgs: flags anywhere, "--" ends them, values are read as the flag package reads them.
func TestSplitArgs(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Bool("b", false, "")
	fs.String("s", "", "")
	fs.Int("n", 0, "")
	for _, tt := range []struct {
		args             []string
		flags, pos, rest []string
		dashdash         bool
	}{
		{args: []string{"a", "-b", "c"}, flags: []string{"-b"}, pos: []string{"a", "c"}},
		{args: []string{"a", "--s", "v", "c"}, flags: []string{"--s", "v"}, pos: []string{"a", "c"}},
		{args: []string{"a", "--s=v", "c"}, flags: []string{"--s=v"}, pos: []string{"a", "c"}},
		{args: []string{"-s", "-b", "a"}, flags: []string{"-s", "-b"}, pos: []string{"a"}},   // a value that looks like a flag
		{args: []string{"--s", "--", "a"}, flags: []string{"--s", "--"}, pos: []string{"a"}}, // "--" as a value
		{args: []string{"-", "-n", "-1"}, flags: []string{"-n", "-1"}, pos: []string{"-"}},   // "-" is stdin
		{args: []string{"a", "--", "-b", "--s"}, pos: []string{"a"}, rest: []string{"-b", "--s"}, dashdash: true},
		{args: []string{"a", "--nosuch", "b"}, flags: []string{"--nosuch"}, pos: []string{"a", "b"}}, // left for Parse to refuse
		{args: []string{"a", "-h"}, flags: []string{"-h"}, pos: []string{"a"}},
		{args: []string{"a", "--s"}, flags: []string{"--s"}, pos: []string{"a"}}, // missing value: Parse reports it
	} {
		flags, pos, rest, dd := splitArgs(fs, tt.args)
		if !eqStrings(flags, tt.flags) || !eqStrings(pos, tt.pos) || !eqStrings(rest, tt.rest) || dd != tt.dashdash {
			t.Errorf("splitArgs(%q) = %q %q %q %v, want %q %q %q %v", tt.args, flags, pos, rest, dd, tt.flags, tt.pos, tt.rest, tt.dashdash)
		}
	}
}

func eqStrings(a, b []string) bool { return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b) }

// testEnv is a PAL image and a private palisaded for the command tests.
type testEnv struct {
	pal, socket, dir string
}

func newTestEnv(t *testing.T) testEnv {
	t.Helper()
	dir := t.TempDir()
	img := conformance.BuildCWasm(t, "a")
	pal := filepath.Join(dir, "conformance.wasm")
	if err := os.WriteFile(pal, img, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := apps.StartDaemon(context.Background(), apps.DaemonOptions{Engines: []string{"wasm"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	return testEnv{pal: pal, socket: d.Socket, dir: dir}
}

func (e testEnv) file(t *testing.T, name string, b []byte) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFlagsAnywhere runs every command that takes positional arguments with its flags after
// them (the README's own `palisade run PAL --input FILE` was refused), and checks that each
// flag took effect: the output depends on it, or the error names the value it was given.
func TestFlagsAnywhere(t *testing.T) {
	e := newTestEnv(t)
	in := e.file(t, "in", []byte("hhello"))
	state := t.TempDir()
	sum := sha256.Sum256([]byte("hello"))

	code, out, errOut := capture(t, "pal", "register", e.pal, "--name", "late-flag", "--socket", e.socket)
	if code != 0 {
		t.Fatalf("pal register: status %d\n%s", code, errOut)
	}
	h := strings.TrimSpace(out)
	missing := filepath.Join(t.TempDir(), "no-such")
	zeros := strings.Repeat("0", 64)
	doc := e.file(t, "config.json", []byte(`{"version": 1, "visors": [], "pals": {}}`))
	for _, tt := range []struct {
		args    []string
		code    int
		stdout  string // expected exactly, if not ""
		contain string // expected in stdout+stderr, if not ""
	}{
		{args: []string{"run", e.pal, "--input", in, "--state-dir", state}, stdout: string(sum[:])},
		{args: []string{"run", "--state-dir", state, e.pal, "--input", in}, stdout: string(sum[:])},
		{args: []string{"run", e.pal, "--state-dir", state, "--input", missing}, code: exitFailure, contain: missing},
		{args: []string{"run", "--state-dir", state, "--", e.pal}, code: exitPALStatus}, // empty input: status 254
		{args: []string{"pal", "call", h, "--data", "hhello", "--hex", "--socket", e.socket}, stdout: hex.EncodeToString(sum[:]) + "\n"},
		{args: []string{"pal", "list", "--socket", e.socket}, contain: "late-flag"},
		{args: []string{"pal", "list", "extra", "--socket", e.socket}, code: exitUsage},
		{args: []string{"pal", "register", e.pal, "--socket", missing}, code: exitUnavailable, contain: missing},
		{args: []string{"attest", h, "--nonce", "00", "-o", filepath.Join(e.dir, "ev"), "--socket", e.socket}, contain: "evidence for PAL"},
		{args: []string{"attest", h, "--nonce", strings.Repeat("00", 1025), "--socket", e.socket}, code: exitUsage, contain: "--nonce: 1025 bytes, at most 1024"},
		{args: []string{"attest", h, "--nonce", "00", "--user-data", strings.Repeat("00", 4097), "--socket", e.socket}, code: exitUsage, contain: "at most 4096"},
		{args: []string{"measure", e.pal, "-q"}, contain: "\n"},
		{args: []string{"verify", missing, "--nonce", "00", "--pal", zeros, "--visor", zeros}, code: exitFailure, contain: missing},
		{args: []string{"config", "sign", doc, "--key", missing}, code: exitFailure, contain: missing},
		{args: []string{"exec", "app", "--state-dir", missing, "--", "true"}, code: exitFailure, contain: missing},
		{args: []string{"demo", "seal", "--pal-dir", missing}, code: exitFailure, contain: missing},
		{args: []string{"bench", "stray", "--out", missing}, code: exitUsage},
		{args: []string{"pal", "unregister", h, "--socket", e.socket}},
	} {
		code, out, errOut := capture(t, tt.args...)
		if code != tt.code {
			t.Errorf("palisade %s: status %d, want %d\n%s%s", strings.Join(tt.args, " "), code, tt.code, out, errOut)
			continue
		}
		if tt.stdout != "" && out != tt.stdout {
			t.Errorf("palisade %s: stdout %q, want %q", strings.Join(tt.args, " "), out, tt.stdout)
		}
		if tt.contain != "" && !strings.Contains(out+errOut, tt.contain) {
			t.Errorf("palisade %s: output lacks %q:\n%s%s", strings.Join(tt.args, " "), tt.contain, out, errOut)
		}
	}
	// The measurement printed with -q after the file is the one of the file.
	if _, out, _ := capture(t, "measure", e.pal, "-q"); len(strings.TrimSpace(out)) != 64 {
		t.Errorf("measure FILE -q printed %q, want 64 hex digits alone", out)
	}
}

// TestExitStatuses checks the exit statuses of docs/cli.md for run (embedded visor) and pal
// call (daemon), and that --json reports the same outcome as the status.
func TestExitStatuses(t *testing.T) {
	e := newTestEnv(t)
	state := t.TempDir()
	inputs := map[string]string{
		"null":    "n",
		"status":  "Z", // unknown command: the PAL returns status 255
		"loop":    "L",
		"trap":    "T",
		"alloc":   "A",
		"toolong": strings.Repeat("x", 2<<20),
	}
	files := map[string]string{}
	for k, v := range inputs {
		files[k] = e.file(t, k, []byte(v))
	}
	notPAL := e.file(t, "not-a-pal", []byte("just text"))
	code, out, errOut := capture(t, "pal", "register", e.pal, "--timeout", "300ms", "--memory-mib", "4", "--socket", e.socket)
	if code != 0 {
		t.Fatalf("pal register: status %d\n%s", code, errOut)
	}
	h := strings.TrimSpace(out)

	type want struct {
		code   int
		class  string // the JSON "error"
		status int32  // the JSON "status" when the call completed (class "" or "pal-status")
	}
	for _, tt := range []struct {
		name string
		run  []string // palisade run arguments (before --json), nil to skip
		call []string // palisade pal call arguments (before --json), nil to skip
		want want
	}{
		{"success", []string{e.pal, "--input", files["null"]}, []string{h, "--input", files["null"]}, want{exitOK, "", 0}},
		{"PAL status", []string{e.pal, "--input", files["status"]}, []string{h, "--input", files["status"]}, want{exitPALStatus, "pal-status", 255}},
		{"timeout", []string{e.pal, "--input", files["loop"], "--timeout", "300ms"}, []string{h, "--input", files["loop"]}, want{exitTimeout, "timeout", 0}},
		{"caller's timeout", nil, []string{h, "--input", files["loop"], "--timeout", "100ms"}, want{exitTimeout, "timeout", 0}},
		{"trap", []string{e.pal, "--input", files["trap"]}, []string{h, "--input", files["trap"]}, want{exitTrap, "trap", 0}},
		{"out of memory", []string{e.pal, "--input", files["alloc"], "--memory-mib", "4"}, []string{h, "--input", files["alloc"]}, want{exitOutOfMemory, "out-of-memory", 0}},
		{"input over the limit", []string{e.pal, "--input", files["toolong"]}, []string{h, "--input", files["toolong"]}, want{exitRefused, "refused", 0}},
		{"not a PAL", []string{notPAL}, nil, want{exitRefused, "refused", 0}},
		{"no such PAL", nil, []string{"pal-0000000000000001", "--data", "n"}, want{exitRefused, "refused", 0}},
		{"no daemon", nil, []string{h, "--data", "n", "--socket", filepath.Join(e.dir, "nosock")}, want{exitUnavailable, "unavailable", 0}},
		{"no such file", []string{filepath.Join(e.dir, "nofile")}, nil, want{exitFailure, "failure", 0}},
	} {
		var cases [][]string
		if tt.run != nil {
			cases = append(cases, append([]string{"run", "--state-dir", state}, tt.run...))
		}
		if tt.call != nil {
			args := append([]string{"pal", "call"}, tt.call...)
			if !strings.Contains(strings.Join(tt.call, " "), "--socket") {
				args = append(args, "--socket", e.socket)
			}
			cases = append(cases, args)
		}
		for _, args := range cases {
			if code, out, errOut := capture(t, args...); code != tt.want.code {
				t.Errorf("%s: palisade %s: status %d, want %d\n%s%s", tt.name, strings.Join(args, " "), code, tt.want.code, out, errOut)
			}
			code, out, errOut := capture(t, append(args, "--json")...)
			var r callReport
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Errorf("%s: palisade %s --json: %v\n%s%s", tt.name, strings.Join(args, " "), err, out, errOut)
				continue
			}
			if code != tt.want.code || r.Exit != code || r.Error != tt.want.class {
				t.Errorf("%s: palisade %s --json: status %d, report %+v; want status %d, error %q", tt.name, strings.Join(args, " "), code, r, tt.want.code, tt.want.class)
			}
			completed := tt.want.class == "" || tt.want.class == "pal-status"
			if completed != (r.Status != nil) || completed != (r.Output != nil) {
				t.Errorf("%s: --json status %v output %v: want both present iff the call completed (%v)", tt.name, r.Status, r.Output, completed)
			}
			if r.Status != nil && *r.Status != tt.want.status {
				t.Errorf("%s: --json status %d, want %d", tt.name, *r.Status, tt.want.status)
			}
		}
	}
	// The output travels in --json as it is.
	code, out, _ = capture(t, "pal", "call", h, "--data", "hhello", "--socket", e.socket, "--json")
	var r callReport
	sum := sha256.Sum256([]byte("hello"))
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !bytes.Equal(r.Output, sum[:]) || r.Handle != h {
		t.Errorf("pal call --json: status %d, %v, report %+v; want the SHA-256 of hello", code, err, r)
	}
}
