package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/palisade-project/palisade/integrations/pam"
	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/e2e/openssh"
)

// pamLib is where Debian installs the PAM modules the baseline stacks use.
const pamLib = "/lib/x86_64-linux-gnu/security/"

// tempUserPrefix starts the names of the temporary users the bench creates for pam_unix
// (TestSSHSectionQuick checks none is left). A leftover of a run that died is removed by the
// next run only if it also carries the creator's marker (openssh.SweepTempUsers).
const tempUserPrefix = "ppbench"

// loginCommand is what every bench login runs, and every bench sshd forces (ForceCommand):
// whatever a client asks, a login to a bench sshd runs this and nothing else.
const loginCommand = "/bin/true"

// benchSSHDConfig is a bench sshd's configuration (after Port, ListenAddress and PidFile):
// password logins through PAM for user alone (AllowUsers; never root, PermitRootLogin no),
// running loginCommand only, with no forwarding, tty or rc file. The pam_permit stack admits
// any password, so while the bench runs any local user can log in as user: this is all they
// get.
func benchSSHDConfig(hostKey, user string) string {
	return "HostKey " + hostKey + "\n" +
		"UsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n" +
		"PermitRootLogin no\nAllowUsers " + user + "\nForceCommand " + loginCommand + "\n" +
		"DisableForwarding yes\nPermitTunnel no\nPermitTTY no\nPermitUserRC no\n"
}

// unixHashes are the crypt methods pam_unix is measured with: Debian 12's default for passwd
// (yescrypt, a deliberately slow hash) and SHA-512 crypt (what many systems' login.defs
// ENCRYPT_METHOD still says; cheap next to Argon2id, which the formula assumes of
// pam_unix).
var unixHashes = []unixHash{{"SHA512", "SHA-512 crypt"}, {"YESCRYPT", "yescrypt"}}

// unixHash is a crypt method of chpasswd --crypt-method and its name in results.md.
type unixHash struct{ method, label string }

// Stack kinds (sshResult.Stack).
const (
	stackPermit   = "pam_permit"
	stackUnix     = "pam_unix"
	stackPalisade = "pam_palisade"
)

// pamStack is one sshd and the PAM stack it authenticates with.
type pamStack struct {
	sshResult
	auth   string // the pam.d auth line
	user   string // who logs in
	svcDir string // its PAM service directory (pam_wrapper)
	sshd   *openssh.SSHD
	ssh    []float64
	pamt   []float64
}

// benchOpenSSH times password logins with the real OpenSSH (docs/ssh.md): sshpass + ssh, a new
// connection each, against one sshd with UsePAM yes per PAM stack, the stacks differing only in
// the auth line: pam_permit (no check), pam_unix for a temporary system user whose password is
// hashed with each of unixHashes, and pam_palisade (pam.DefaultParams) with the checking PAL on
// each engine the daemon offers; the stacks alternate so all see the same load. Every login is
// a temporary user's (the password random per run), never root's: without a temporary user,
// pam_permit and pam_palisade are not measured, and results.md says so. Each round
// also runs the same stacks under pamtester (pam_authenticate alone, without ssh's and sshd's
// noise) if it is installed, and native Argon2id (x/crypto, the same parameters). The report
// gives the isolation cost, pam_palisade − pam_unix − native Argon2id. It needs root
// (sshd, useradd), the OpenSSH programs, sshpass, make, a C compiler, libpam0g-dev,
// libpam-wrapper and the source tree (for pam_palisade.so); without them it records why it did
// not run. The temporary users are removed before it returns, on failure too; those an earlier
// run left (it was killed) are removed first.
func benchOpenSSH(ctx context.Context, d *apps.Daemon, cfg Config, p *progress, r *benchReport) error {
	return benchOpenSSHWith(ctx, d, cfg, p, r, unixHashes)
}

// benchOpenSSHWith is benchOpenSSH with pam_unix measured for hashes.
func benchOpenSSHWith(ctx context.Context, d *apps.Daemon, cfg Config, p *progress, r *benchReport, hashes []unixHash) (err error) {
	defer p.step("SSH: OpenSSH") // measured or not, the progress bar's step is done
	if os.Geteuid() == 0 {
		swept, err := openssh.SweepTempUsers(tempUserPrefix)
		if len(swept) > 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("SSH: removed %d temporary users an earlier run left (its process had died): %s", len(swept), strings.Join(swept, ", ")))
		}
		if err != nil {
			r.Errors = append(r.Errors, "SSH: removing an earlier run's temporary users: "+err.Error())
		}
	}
	dp := pam.DefaultParams
	r.OpenSSHArgon2 = fmt.Sprintf("m=%d KiB, t=%d, p=%d", dp.Memory, dp.Time, dp.Threads)
	if cfg.OpenSSHLogins <= 0 {
		r.OpenSSHNotMeasured = append(r.OpenSSHNotMeasured, "OpenSSH logins: not measured (0 logins asked)")
		return nil
	}
	if why := openSSHMissing(); why != "" {
		r.OpenSSHNotMeasured = append(r.OpenSSHNotMeasured, "OpenSSH logins (pam_unix, pam_palisade): not measured: "+why)
		return nil
	}
	root, err := apps.SourceRoot()
	if err != nil {
		r.OpenSSHNotMeasured = append(r.OpenSSHNotMeasured, "OpenSSH logins: not measured: "+err.Error())
		return nil
	}
	dir, err := os.MkdirTemp("", "palisade-bench-openssh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p.note("SSH: building pam_palisade.so")
	if out, err := exec.CommandContext(ctx, "make", "-C", filepath.Join(root, "integrations", "pam", "module"), "BUILD="+dir).CombinedOutput(); err != nil {
		return fmt.Errorf("make pam_palisade.so: %v\n%s", err, out)
	}

	// Random per run: a local user who knows the bench's source does not know it.
	pw, err := openssh.RandomPassword()
	if err != nil {
		return err
	}
	var stacks []*pamStack
	add := func(s *pamStack) { stacks = append(stacks, s) }
	p.note("SSH: temporary users for pam_unix")
	for _, h := range hashes {
		u, remove, uerr := openssh.TempUser(ctx, tempUserPrefix, pw, h.method)
		if uerr != nil {
			r.OpenSSHNotMeasured = append(r.OpenSSHNotMeasured, fmt.Sprintf("pam_unix with %s: not measured: %v", h.label, uerr))
			continue
		}
		defer func() { err = errors.Join(err, remove()) }()
		add(&pamStack{sshResult: sshResult{Mode: "pam_unix, " + h.label, Stack: stackUnix, Hash: u.Hash},
			auth: "auth required " + pamLib + "pam_unix.so nodelay", user: u.Name})
	}
	// pam_permit and pam_palisade log in as the first temporary user, pam_palisade with the
	// password enrolled for that name. Without one they are not measured: logging in as root
	// instead would open a root login to every local user while the bench runs (pam_permit
	// admits any password).
	if len(stacks) == 0 {
		r.OpenSSHNotMeasured = append(r.OpenSSHNotMeasured,
			"pam_permit and pam_palisade: not measured: no temporary user could be created to log in as (the bench never logs in as root)")
		return nil
	}
	user := stacks[0].user
	add(&pamStack{sshResult: sshResult{Mode: "pam_permit (no check)", Stack: stackPermit},
		auth: "auth required " + pamLib + "pam_permit.so", user: user})
	c, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, engine := range []string{"wasm", "kvm"} {
		if !d.HasEngine(engine) {
			why := "palisaded does not offer it"
			if _, err := os.Stat("/dev/kvm"); engine == "kvm" && err != nil {
				why = "no /dev/kvm"
			}
			r.OpenSSHNotMeasured = append(r.OpenSSHNotMeasured, fmt.Sprintf("pam_palisade (%s PAL): not measured: %s", engine, why))
			continue
		}
		st := pam.State{Dir: filepath.Join(dir, "state-"+engine)}
		k, err := st.Ensure(ctx, c, nil, engine)
		if err != nil {
			return fmt.Errorf("checking PAL on %s: %w", engine, err)
		}
		db, err := k.Enrol(ctx, nil, user, []byte(pw), dp, 0)
		if err != nil {
			return err
		}
		if err := st.Write("passwd.db", db); err != nil {
			return err
		}
		// nodelay, as for pam_unix: the failure delay is not what is measured.
		add(&pamStack{sshResult: sshResult{Mode: fmt.Sprintf("pam_palisade (%s PAL)", engine), Stack: stackPalisade, Engine: engine},
			auth: fmt.Sprintf("auth required %s socket=%s dir=%s daemon_uid=%d nodelay", filepath.Join(dir, "pam_palisade.so"),
				filepath.Join(d.Dir, "run", "lean.sock"), st.Dir, os.Getuid()), user: user})
	}

	p.note("SSH: starting sshd")
	hostKey := filepath.Join(dir, "host_key")
	hostPub, err := openssh.HostKey(ctx, hostKey)
	if err != nil {
		return err
	}
	var known strings.Builder
	rest := "account required " + pamLib + "pam_permit.so\nsession required " + pamLib + "pam_permit.so\n"
	for i, s := range stacks {
		s.svcDir = filepath.Join(dir, fmt.Sprintf("pam.d-%d", i))
		if err := os.MkdirAll(s.svcDir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.svcDir, "sshd"), []byte(s.auth+"\n"+rest), 0o644); err != nil {
			return err
		}
		s.sshd, err = openssh.StartSSHD(ctx, dir, openssh.PAMWrapperEnv(s.svcDir), benchSSHDConfig(hostKey, s.user))
		if err != nil {
			return fmt.Errorf("sshd for %s: %w", s.Mode, err)
		}
		defer s.sshd.Stop()
		known.WriteString(openssh.KnownHostsLine(s.sshd.Port, hostPub))
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(known.String()), 0o600); err != nil {
		return err
	}
	// A wrong password must be refused by every checking stack, or the measurement measures
	// nothing. (pam_palisade counts the failure; the next right password resets the count.)
	for _, s := range stacks {
		if s.Stack == stackPermit {
			continue
		}
		if out, err := openssh.PasswordLogin(ctx, s.sshd.Port, knownHosts, s.user, "not "+pw, loginCommand); err == nil {
			return fmt.Errorf("%s accepted a wrong password: %s", s.Mode, out)
		}
	}

	_, pamtesterErr := exec.LookPath("pamtester")
	if pamtesterErr != nil {
		r.OpenSSHNotMeasured = append(r.OpenSSHNotMeasured, "pamtester (pam_authenticate alone): not measured: pamtester is not installed (scripts/setup.sh)")
	}
	// Every round holds one of each measurement: an ssh login per stack, a pamtester run per
	// stack, and a native Argon2id, so that the figures the formula combines all see the same
	// load (this machine's load changes by the minute). Each round starts at the next stack, so
	// no stack always follows the same one.
	p.note("SSH: OpenSSH logins and pamtester")
	warm := max(cfg.OpenSSHLogins/10, 1)
	var native []float64
	for i := 0; i < cfg.OpenSSHLogins+warm; i++ {
		for j := range stacks {
			s := stacks[(i+j)%len(stacks)]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t0 := time.Now()
			if out, err := openssh.PasswordLogin(ctx, s.sshd.Port, knownHosts, s.user, pw, loginCommand); err != nil {
				return fmt.Errorf("%s login: %v\n%s\nsshd:\n%s", s.Mode, err, out, s.sshd.Log.String())
			}
			if i >= warm {
				s.ssh = append(s.ssh, ms(time.Since(t0)))
			}
		}
		for j := range stacks {
			if pamtesterErr != nil {
				break
			}
			s := stacks[(i+j)%len(stacks)]
			cmd := exec.CommandContext(ctx, "pamtester", "sshd", s.user, "authenticate")
			cmd.Env = append(os.Environ(), openssh.PAMWrapperEnv(s.svcDir)...)
			cmd.Stdin = strings.NewReader(pw + "\n")
			t0 := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("pamtester %s: %v\n%s", s.Mode, err, out)
			}
			if i >= warm {
				s.pamt = append(s.pamt, ms(time.Since(t0)))
			}
		}
		t0 := time.Now()
		argon2.IDKey([]byte(pw), []byte("0123456789abcdef"), dp.Time, dp.Memory, uint8(dp.Threads), 32)
		if i >= warm {
			native = append(native, ms(time.Since(t0)))
		}
	}
	r.OpenSSHNativeArgon2Ms = median(native)
	for _, s := range stacks {
		row := s.sshResult
		row.Logins, row.MedianMs, row.P90Ms = len(s.ssh), median(s.ssh), quantile(s.ssh, 0.9)
		r.OpenSSH = append(r.OpenSSH, row)
		if len(s.pamt) > 0 {
			row.Logins, row.MedianMs, row.P90Ms = len(s.pamt), median(s.pamt), quantile(s.pamt, 0.9)
			r.OpenSSHPamtester = append(r.OpenSSHPamtester, row)
		}
	}
	r.OpenSSHIsolation = append(isolationCosts("ssh login", r.OpenSSH, r.OpenSSHNativeArgon2Ms),
		isolationCosts("pamtester", r.OpenSSHPamtester, r.OpenSSHNativeArgon2Ms)...)
	return nil
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// isolationCosts applies the formula, pam_palisade − pam_unix − native Argon2id (all
// medians), to every (pam_unix hash, pam_palisade engine) pair of rows, and gives beside it
// pam_palisade − pam_permit − native Argon2id, which does not assume pam_unix's check is free.
func isolationCosts(measure string, rows []sshResult, nativeMs float64) []isolationCost {
	permit := 0.0
	for _, r := range rows {
		if r.Stack == stackPermit {
			permit = r.MedianMs
		}
	}
	var out []isolationCost
	for _, u := range rows {
		if u.Stack != stackUnix {
			continue
		}
		for _, pal := range rows {
			if pal.Stack != stackPalisade {
				continue
			}
			c := isolationCost{Measure: measure, UnixMode: u.Mode, UnixHash: u.Hash, Engine: pal.Engine,
				PalisadeMs: pal.MedianMs, UnixMs: u.MedianMs, NativeMs: nativeMs,
				CostMs: pal.MedianMs - u.MedianMs - nativeMs, GoalMs: isolationGoalMs}
			c.Met = c.CostMs <= c.GoalMs
			if permit > 0 {
				c.PermitMs = permit
				c.VsPermitMs = pal.MedianMs - permit - nativeMs
			}
			out = append(out, c)
		}
	}
	return out
}

// openSSHMissing names what the OpenSSH measurement lacks on this machine, or returns "".
func openSSHMissing() string {
	if os.Geteuid() != 0 {
		return "not root (sshd and the temporary pam_unix users need root; run `palisade bench` as root)"
	}
	for _, tool := range []string{openssh.SSHDPath, "ssh", "sshpass", "ssh-keygen", "make", "cc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (scripts/setup.sh)"
		}
	}
	for _, f := range []string{openssh.PAMWrapper, "/usr/include/security/pam_modules.h", pamLib + "pam_unix.so", pamLib + "pam_permit.so"} {
		if _, err := os.Stat(f); err != nil {
			return f + " is missing (scripts/setup.sh: libpam-wrapper, libpam0g-dev)"
		}
	}
	return ""
}
