package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/palisade-project/palisade/examples/sshpass"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// benchSSH times password logins against the example server, with the check in the server's
// memory (plain) and in the checking PAL, alternating logins so both see the same load.
func benchSSH(ctx context.Context, d *apps.Daemon, imgs palImages, cfg Config, p *progress, r *benchReport) error {
	const user, pw = "bench", "correct horse battery staple"
	c, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	palCheck, err := sshpass.NewPAL(ctx, c, imgs.checker, "wasm")
	if err != nil {
		return err
	}
	defer palCheck.Close(context.Background())
	if err := palCheck.Enrol(ctx, user, []byte(pw)); err != nil {
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
	targets := []*target{{name: "plain", check: &plain}, {name: "PAL (wasm)", check: palCheck}}
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
				t.login = append(t.login, float64(el.Microseconds())/1e3)
				t.checks = append(t.checks, float64(ch.Microseconds())/1e3)
			}
		}
	}
	for _, t := range targets {
		r.SSH = append(r.SSH, sshResult{Mode: t.name, Logins: len(t.login), MedianMs: median(t.login), P90Ms: quantile(t.login, 0.9), CheckMedianMs: median(t.checks)})
		p.step("SSH: " + t.name)
	}
	r.Notes = append(r.Notes, "SSH: a login is a new TCP connection, key exchange (curve25519), ed25519 host key, password auth, one exec channel and its output, then close; the Go SSH client, so the timing excludes process start-up of ssh(1). The password check is Argon2id t=1, m=2 MiB, p=1 in both cases.")
	if err := benchOpenSSH(ctx, d, cfg, p, r); err != nil {
		return err
	}
	return benchAgent(ctx, cfg, p, r)
}
