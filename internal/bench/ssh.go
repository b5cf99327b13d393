package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/palisade-project/palisade/examples/sshpass"
	"github.com/palisade-project/palisade/integrations/pam"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// benchSSH times password logins against the example server (examples/sshpass), with the
// check in the server's memory (plain, native Argon2id) and in pam_palisade's checking PAL
// through sshpass.PassDB (the wasm build, the C PAL pam_palisade.so uses), both with
// pam.DefaultParams, alternating logins so both see the same load; then the real OpenSSH
// (benchOpenSSH) and the SSH agents (benchAgent).
func benchSSH(ctx context.Context, d *apps.Daemon, cfg Config, p *progress, r *benchReport) error {
	const user, pw = "bench", "correct horse battery staple"
	c, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	dir, err := os.MkdirTemp("", "palisade-bench-passdb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	palCheck, err := sshpass.OpenPassDB(ctx, c, dir, nil, "wasm")
	if err != nil {
		return err
	}
	defer palCheck.Close(context.Background())
	if err := palCheck.Enrol(ctx, user, []byte(pw), pam.DefaultParams, 0); err != nil {
		return err
	}
	var plain sshpass.Plain
	plain.Enrol(user, []byte(pw))

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, _ := ssh.NewSignerFromSigner(priv)
	type target struct {
		name   string
		check  sshpass.Checker
		addr   string
		login  []float64
		checks []float64
	}
	targets := []*target{{name: "plain", check: &plain}, {name: "PAL (wasm, C checking PAL)", check: palCheck}}
	for _, t := range targets {
		srv := sshpass.NewServer(hk, t.check)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go srv.Serve(l)
		defer srv.Close()
		t.addr = l.Addr().String()
	}
	p.note("SSH: logins")
	warm := max(cfg.SSHLogins/10, 1)
	for i := 0; i < cfg.SSHLogins+warm; i++ {
		for _, t := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t0 := time.Now()
			out, err := sshpass.Login(t.addr, user, pw, "whoami")
			el := time.Since(t0)
			if err != nil || out != user+"\n" {
				return fmt.Errorf("%s login: %v %q", t.name, err, out)
			}
			t1 := time.Now()
			if err := t.check.Check(ctx, user, []byte(pw)); err != nil {
				return fmt.Errorf("%s check: %v", t.name, err)
			}
			ch := time.Since(t1)
			if i >= warm {
				t.login = append(t.login, ms(el))
				t.checks = append(t.checks, ms(ch))
			}
		}
	}
	for _, t := range targets {
		r.SSH = append(r.SSH, sshResult{Mode: t.name, Logins: len(t.login), MedianMs: median(t.login), P90Ms: quantile(t.login, 0.9), CheckMedianMs: median(t.checks)})
		p.step("SSH: " + t.name)
	}
	dp := pam.DefaultParams
	r.Notes = append(r.Notes, fmt.Sprintf("SSH (example server): a login is a new TCP connection, key exchange (curve25519), ed25519 host key, password auth, one exec channel and its output, then close; the Go SSH client, so the timing excludes process start-up of ssh(1). The password check is Argon2id m=%d KiB, t=%d, p=%d in both cases: natively (x/crypto) in plain, in pam_palisade's C checking PAL (wasm) through sshpass.PassDB in PAL.", dp.Memory, dp.Time, dp.Threads))
	if err := benchOpenSSH(ctx, d, cfg, p, r); err != nil {
		return err
	}
	return benchAgent(ctx, cfg, p, r)
}
