package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/e2e/openssh"
)

// TestIsolationCosts checks the formula on hand-made medians: one row per (pam_unix
// hash, pam_palisade engine) pair, pam_palisade − pam_unix − native, the verdict against the
// 2 ms goal, and the pam_permit baseline beside it when there is one.
func TestIsolationCosts(t *testing.T) {
	permit := sshResult{Mode: "pam_permit (no check)", Stack: stackPermit, MedianMs: 10}
	sha := sshResult{Mode: "pam_unix, SHA-512 crypt", Stack: stackUnix, Hash: "$6$", MedianMs: 13}
	yes := sshResult{Mode: "pam_unix, yescrypt", Stack: stackUnix, Hash: "$y$j9T$", MedianMs: 200}
	wasm := sshResult{Mode: "pam_palisade (wasm PAL)", Stack: stackPalisade, Engine: "wasm", MedianMs: 90}
	kvm := sshResult{Mode: "pam_palisade (kvm PAL)", Stack: stackPalisade, Engine: "kvm", MedianMs: 44}
	type want struct {
		hash, engine string
		cost         float64
		met          bool
		vsPermit     float64
	}
	for _, tt := range []struct {
		name   string
		rows   []sshResult
		native float64
		want   []want
	}{
		{"sha512 and yescrypt, wasm", []sshResult{permit, sha, yes, wasm}, 30, []want{
			{"$6$", "wasm", 47, false, 50}, {"$y$j9T$", "wasm", -140, true, 50}}},
		{"two engines", []sshResult{sha, wasm, kvm}, 30, []want{
			{"$6$", "wasm", 47, false, 0}, {"$6$", "kvm", 1, true, 0}}},
		{"exactly the goal", []sshResult{sha, sshResult{Stack: stackPalisade, Engine: "wasm", MedianMs: 45}}, 30, []want{
			{"$6$", "wasm", 2, true, 0}}},
		{"no pam_unix row", []sshResult{permit, wasm}, 30, nil},
		{"no pam_palisade row", []sshResult{permit, sha}, 30, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := isolationCosts("pamtester", tt.rows, tt.native)
			if len(got) != len(tt.want) {
				t.Fatalf("%d costs, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.UnixHash != w.hash || g.Engine != w.engine || math.Abs(g.CostMs-w.cost) > 1e-9 || g.Met != w.met ||
					math.Abs(g.VsPermitMs-w.vsPermit) > 1e-9 || g.Measure != "pamtester" || g.GoalMs != isolationGoalMs {
					t.Errorf("cost %d: %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// TestOpenSSHReport checks how the OpenSSH part of results.md renders: the rows, the formula
// and a verdict per pair (with the caveat when the formula goes negative), and what was not
// measured, also when nothing was.
func TestOpenSSHReport(t *testing.T) {
	rows := []sshResult{
		{Mode: "pam_unix, SHA-512 crypt", Stack: stackUnix, Hash: "$6$", Logins: 31, MedianMs: 466.2, P90Ms: 500},
		{Mode: "pam_unix, yescrypt", Stack: stackUnix, Hash: "$y$j9T$", Logins: 31, MedianMs: 1291, P90Ms: 1400},
		{Mode: "pam_permit (no check)", Stack: stackPermit, Logins: 31, MedianMs: 453.5, P90Ms: 480},
		{Mode: "pam_palisade (wasm PAL)", Stack: stackPalisade, Engine: "wasm", Logins: 31, MedianMs: 668.7, P90Ms: 700},
	}
	pamt := []sshResult{
		{Mode: "pam_unix, SHA-512 crypt", Stack: stackUnix, Hash: "$6$", Logins: 31, MedianMs: 18.5, P90Ms: 20},
		{Mode: "pam_unix, yescrypt", Stack: stackUnix, Hash: "$y$j9T$", Logins: 31, MedianMs: 215, P90Ms: 230},
		{Mode: "pam_permit (no check)", Stack: stackPermit, Logins: 31, MedianMs: 13.3, P90Ms: 15},
		{Mode: "pam_palisade (wasm PAL)", Stack: stackPalisade, Engine: "wasm", Logins: 31, MedianMs: 20.4, P90Ms: 22},
	}
	const native = 28.8
	noKVM := "pam_palisade (kvm PAL): not measured: no /dev/kvm"
	tests := []struct {
		name      string
		r         benchReport
		want, not []string
	}{
		{"measured", benchReport{OpenSSH: rows, OpenSSHPamtester: pamt, OpenSSHNativeArgon2Ms: native, OpenSSHArgon2: "m=19456 KiB, t=2, p=1",
			OpenSSHIsolation:   append(isolationCosts("ssh login", rows, native), isolationCosts("pamtester", pamt, native)...),
			OpenSSHNotMeasured: []string{noKVM}},
			[]string{"## OpenSSH password login", "| pam_unix, SHA-512 crypt | `$6$` | 31 | 466.2 | 500.0 | 31 | 18.5 | 20.0 |",
				"| pam_permit (no check) | – | 31 | 453.5 |", "Argon2id (m=19456 KiB, t=2, p=1)", "one per round): 28.8 ms", "ensure_minimum_time_since",
				"pam_palisade login − pam_unix login − native Argon2id",
				"| ssh login | pam_unix, SHA-512 crypt (`$6$`) | wasm | 668.7 | 466.2 | 28.8 | 173.7 | **not met** | 186.4 |",
				"| pamtester | pam_unix, SHA-512 crypt (`$6$`) | wasm | 20.4 | 18.5 | 28.8 | -26.9 | **met** (negative",
				"| ssh login | pam_unix, yescrypt (`$y$j9T$`) | wasm | 668.7 | 1291.0 | 28.8 | -651.1 | **met** (negative", "- " + noKVM}, nil},
		{"no pamtester", benchReport{OpenSSH: rows[:1], OpenSSHNativeArgon2Ms: native},
			[]string{"| pam_unix, SHA-512 crypt | `$6$` | 31 | 466.2 | 500.0 | – | – | – |", "not computed, it needs a pam_unix and a pam_palisade row"},
			[]string{"**met**", "**not met**"}},
		{"not root", benchReport{OpenSSHNotMeasured: []string{"OpenSSH logins (pam_unix, pam_palisade): not measured: not root"}},
			[]string{"## OpenSSH password login", "- OpenSSH logins (pam_unix, pam_palisade): not measured: not root"},
			[]string{"| PAM stack", "Isolation cost", "not computed"}},
		{"nothing", benchReport{}, nil, []string{"OpenSSH"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := tt.r.markdown()
			checkMarkdown(t, md, tt.want, tt.not)
		})
	}
}

// TestSSHSectionQuick runs the SSH section alone as `palisade bench --quick --sections ssh`
// does: the example server with both checkers and, where this machine allows it (root,
// scripts/setup.sh's packages), the real sshd with every PAM stack, one login each. It checks
// the shape of what is written, the formula's arithmetic, the not-measured notes, that no
// temporary user of this run is left, and (as root) that a user a dead run left is removed
// while a user with the prefix but without the marker is not; the sizes of the numbers mean
// nothing at these counts.
func TestSSHSectionQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the SSH section (about 20 s)")
	}
	var leftover, unmarked string
	if os.Geteuid() == 0 {
		dead := exec.Command("true")
		if err := dead.Run(); err != nil {
			t.Fatal(err)
		}
		leftover = addUser(t, openssh.Marker(dead.Process.Pid))
		unmarked = addUser(t, "an admin's user whose name happens to start with "+tempUserPrefix)
	}
	before := prefixedUsers(t)
	out := t.TempDir()
	var stdout, stderr strings.Builder
	err := Run(context.Background(), Options{Out: out, Quick: true, Config: Quick, Sections: map[string]bool{"ssh": true}, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var r benchReport
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.SSH) != 2 || r.SSH[0].Mode != "plain" || !strings.Contains(r.SSH[1].Mode, "C checking PAL") {
		t.Fatalf("example-server rows %+v", r.SSH)
	}
	for _, s := range r.SSH {
		if s.Logins != Quick.SSHLogins || s.MedianMs <= 0 || s.CheckMedianMs <= 0 {
			t.Errorf("example-server row %+v", s)
		}
	}
	// Only this run's users count: another run (another test binary) may be going on.
	after := prefixedUsers(t)
	for name := range after {
		if !before[name] {
			t.Errorf("this run's temporary user %s is left in /etc/passwd", name)
		}
	}
	if leftover != "" {
		if after[leftover] {
			t.Errorf("%s, left by a dead run, was not removed", leftover)
		}
		if !after[unmarked] {
			t.Errorf("%s, which lacks the marker, was removed", unmarked)
		}
		if !strings.Contains(string(md), leftover) {
			t.Errorf("results.md does not name the removed leftover %s", leftover)
		}
	}
	if why := openSSHMissing(); why != "" {
		if len(r.OpenSSH) != 0 || len(r.OpenSSHNotMeasured) != 1 || !strings.Contains(string(md), "not measured: "+why) {
			t.Errorf("OpenSSH part on a machine without it (%s): rows %+v, notes %q", why, r.OpenSSH, r.OpenSSHNotMeasured)
		}
		t.Skipf("OpenSSH logins not measured here: %s", why)
	}
	stacks := map[string]int{}
	for _, s := range r.OpenSSH {
		stacks[s.Stack]++
		if s.Logins != Quick.OpenSSHLogins || s.MedianMs <= 0 {
			t.Errorf("OpenSSH row %+v", s)
		}
	}
	engines := 1
	if _, err := os.Stat("/dev/kvm"); err == nil {
		engines = 2
	}
	if stacks[stackPermit] != 1 || stacks[stackUnix] != len(unixHashes) || stacks[stackPalisade] != engines {
		t.Errorf("OpenSSH stacks %v (rows %+v), notes %q", stacks, r.OpenSSH, r.OpenSSHNotMeasured)
	}
	hashes := map[string]bool{}
	for _, s := range r.OpenSSH {
		if s.Stack == stackUnix {
			hashes[s.Hash[:3]] = true
		}
	}
	if !hashes["$6$"] || !hashes["$y$"] {
		t.Errorf("pam_unix hashes %v, want $6$ and $y$…", hashes)
	}
	if engines == 1 && !strings.Contains(string(md), "pam_palisade (kvm PAL): not measured: no /dev/kvm") {
		t.Error("results.md does not say the kvm PAL was not measured")
	}
	if r.OpenSSHNativeArgon2Ms <= 0 {
		t.Errorf("native Argon2id %v", r.OpenSSHNativeArgon2Ms)
	}
	measures := 1
	if _, err := exec.LookPath("pamtester"); err == nil {
		measures = 2
		if len(r.OpenSSHPamtester) != len(r.OpenSSH) {
			t.Errorf("%d pamtester rows for %d stacks", len(r.OpenSSHPamtester), len(r.OpenSSH))
		}
	}
	if len(r.OpenSSHIsolation) != measures*len(unixHashes)*engines {
		t.Fatalf("%d isolation costs: %+v", len(r.OpenSSHIsolation), r.OpenSSHIsolation)
	}
	for _, c := range r.OpenSSHIsolation {
		if math.Abs(c.CostMs-(c.PalisadeMs-c.UnixMs-c.NativeMs)) > 1e-9 || c.Met != (c.CostMs <= isolationGoalMs) {
			t.Errorf("isolation cost %+v", c)
		}
	}
	if !strings.Contains(string(md), "**Isolation cost**") {
		t.Errorf("results.md has no isolation cost:\n%s", md)
	}
}

// TestBenchSSHDConfig (root): a real sshd with the bench's configuration and its most open
// stack, pam_permit (any password), admits only its temporary user and runs only
// loginCommand for it: root and another existing user are refused, whatever the password, and
// a command the client asks for does not run.
func TestBenchSSHDConfig(t *testing.T) {
	if why := openSSHMissing(); why != "" {
		t.Skip(why)
	}
	ctx := context.Background()
	pw, err := openssh.RandomPassword()
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for range 2 {
		u, remove, err := openssh.TempUser(ctx, "pptest", pw, "SHA512")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := remove(); err != nil {
				t.Error(err)
			}
		})
		users = append(users, u.Name)
	}
	dir := t.TempDir()
	svc := filepath.Join(dir, "pam.d")
	if err := os.MkdirAll(svc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(svc, "sshd"), []byte("auth required "+pamLib+"pam_permit.so\naccount required "+pamLib+
		"pam_permit.so\nsession required "+pamLib+"pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostKey := filepath.Join(dir, "host_key")
	pub, err := openssh.HostKey(ctx, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openssh.StartSSHD(ctx, dir, openssh.PAMWrapperEnv(svc), benchSSHDConfig(hostKey, users[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(openssh.KnownHostsLine(s.Port, pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, user, pw, command string
		in                      bool
	}{
		{"root", "root", "anything", "id -un", false},
		{"root, run's password", "root", pw, "id -un", false},
		{"another user", users[1], pw, "id -un", false},
		{"the temporary user, its command", users[0], "anything", loginCommand, true},
		{"the temporary user, another command", users[0], "anything", "echo escaped", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := openssh.PasswordLogin(ctx, s.Port, kh, tt.user, tt.pw, tt.command)
			if (err == nil) != tt.in {
				t.Fatalf("logged in %v (%v), want %v; output %q\nsshd:\n%s", err == nil, err, tt.in, out, s.Log.String())
			}
			if out != "" {
				t.Errorf("the login printed %q: %q ran instead of %s", out, tt.command, loginCommand)
			}
		})
	}
}

// TestOpenSSHNeverRoot (root): when no temporary user can be made (here chpasswd refuses the
// crypt method, so TempUser fails and removes its user), the stacks that would log in as
// someone else, pam_permit and pam_palisade, are not measured and results say why; no login
// as root takes their place.
func TestOpenSSHNeverRoot(t *testing.T) {
	if why := openSSHMissing(); why != "" {
		t.Skip(why)
	}
	ctx := context.Background()
	d, err := apps.StartDaemon(ctx, apps.DaemonOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	var r benchReport
	err = benchOpenSSHWith(ctx, d, Config{OpenSSHLogins: 1}, newProgress(io.Discard, Quick, nil), &r, []unixHash{{"NO-SUCH-METHOD", "bogus"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.OpenSSH) != 0 || len(r.OpenSSHPamtester) != 0 {
		t.Errorf("rows measured without a temporary user: %+v %+v", r.OpenSSH, r.OpenSSHPamtester)
	}
	notes := strings.Join(r.OpenSSHNotMeasured, "\n")
	for _, want := range []string{"pam_unix with bogus: not measured", "pam_permit and pam_palisade: not measured: no temporary user", "never logs in as root"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	if md := r.markdown(); !strings.Contains(md, "pam_permit and pam_palisade: not measured") {
		t.Errorf("results.md does not say pam_permit and pam_palisade were not measured:\n%s", md)
	}
}

// prefixedUsers are the users of /etc/passwd whose names start with tempUserPrefix.
func prefixedUsers(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range openssh.ParsePasswd(string(b)) {
		if strings.HasPrefix(e.Name, tempUserPrefix) {
			out[e.Name] = true
		}
	}
	return out
}

// addUser creates a system user named tempUserPrefix and random hex digits with comment, and
// removes it at cleanup if it is still there.
func addUser(t *testing.T, comment string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := tempUserPrefix + "t" + hex.EncodeToString(b[:])
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
		"--comment", comment, name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", "-f", name).Run() })
	return name
}
