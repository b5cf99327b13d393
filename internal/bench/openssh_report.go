package bench

import "fmt"

// openSSHMarkdown renders the OpenSSH part of the SSH section: the logins per PAM stack, the
// issue's isolation cost with its goal verdict, and what was not measured and why.
func (r *benchReport) openSSHMarkdown(w func(format string, a ...any)) {
	w("## OpenSSH password login: the real sshd (UsePAM yes) and ssh via sshpass (docs/ssh.md)\n\n")
	if len(r.OpenSSH) > 0 {
		w("A new connection per login (`sshpass -e ssh`, the password in the environment), `"+loginCommand+"` as the command (sshd forces it: ForceCommand), one sshd per PAM stack on a loopback port, the stacks differing only in the auth line and alternating. Every login is a temporary user's (created for the run with a random password, removed at its end; each sshd allows that user alone, never root). pam_permit checks nothing; pam_unix checks /etc/shadow for a temporary user whose password is hashed with the method shown; pam_permit and pam_palisade log in as the first of them; pam_palisade checks Argon2id (%s) in pam_palisade's checking PAL. pamtester: pam_authenticate alone on the same stacks, a new process each, without ssh's and sshd's work. Every round holds one ssh login and one pamtester run per stack (starting at the next stack each round) and one native Argon2id, so all figures see the same load. Medians, ms.\n\n", r.OpenSSHArgon2)
		pamt := map[string]sshResult{}
		for _, s := range r.OpenSSHPamtester {
			pamt[s.Mode] = s
		}
		w("| PAM stack | pam_unix's hash | ssh logins | median login | p90 | pamtester runs | median pam_authenticate | p90 |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range r.OpenSSH {
			hash := "–"
			if s.Hash != "" {
				hash = "`" + s.Hash + "`"
			}
			w("| %s | %s | %d | %.1f | %.1f |", s.Mode, hash, s.Logins, s.MedianMs, s.P90Ms)
			if t, ok := pamt[s.Mode]; ok {
				w(" %d | %.1f | %.1f |\n", t.Logins, t.MedianMs, t.P90Ms)
			} else {
				w(" – | – | – |\n")
			}
		}
		w("\nNative Argon2id (golang.org/x/crypto/argon2, %s, one per round): %.1f ms (median).\n\n", r.OpenSSHArgon2, r.OpenSSHNativeArgon2Ms)
		w("At the ssh level sshd itself pads every password attempt, accepted ones included, to a per-user minimum of a few ms doubled until it exceeds the attempt's own time (auth2.c, ensure_minimum_time_since; seen with LogLevel DEBUG3 in OpenSSH 9.2p1): a check of t ms costs between t and 2t there, so the ssh-level rows amplify slow checks (pam_palisade, yescrypt). sshd does not pad pamtester's runs, which are the closer measure of the check.\n\n")
	}
	if len(r.OpenSSHIsolation) > 0 {
		w("**Isolation cost** (the issue's formula) = pam_palisade login − pam_unix login − native Argon2id, medians; goal ≤ %.0f ms. The last column uses pam_permit (no check) as the baseline instead of pam_unix, which does not assume pam_unix's own hash costs nothing.\n\n", isolationGoalMs)
		w("| measured by | pam_unix's hash | pam_palisade engine | pam_palisade | pam_unix | native Argon2id | isolation cost | goal ≤ %.0f ms | pam_palisade − pam_permit − native |\n|---|---|---|---:|---:|---:|---:|---|---:|\n", isolationGoalMs)
		for _, c := range r.OpenSSHIsolation {
			verdict := "**not met**"
			if c.Met {
				verdict = "**met**"
			}
			if c.CostMs < 0 {
				verdict += " (negative: pam_unix's hash costs more than the PAL's Argon2id, so the formula hides the isolation cost)"
			}
			vsPermit := "–"
			if c.PermitMs > 0 {
				vsPermit = fmt.Sprintf("%.1f", c.VsPermitMs)
			}
			w("| %s | %s (`%s`) | %s | %.1f | %.1f | %.1f | %.1f | %s | %s |\n", c.Measure, c.UnixMode, c.UnixHash, c.Engine,
				c.PalisadeMs, c.UnixMs, c.NativeMs, c.CostMs, verdict, vsPermit)
		}
		w("\n")
	} else if len(r.OpenSSH) > 0 {
		w("- Isolation cost (pam_palisade − pam_unix − native Argon2id): not computed, it needs a pam_unix and a pam_palisade row.\n")
	}
	for _, n := range r.OpenSSHNotMeasured {
		w("- %s\n", n)
	}
	w("\n")
}
