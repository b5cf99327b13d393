package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/palisade-project/palisade/internal/p11web"
)

// agentResult is one agent's signature time: an SSH_AGENTC_SIGN_REQUEST and its answer over the
// agent's socket, as ssh(1) makes one per public-key login.
type agentResult struct {
	Agent    string
	Alg      string
	Signs    int
	MedianUs float64
	P90Us    float64
}

// benchAgent times ssh-agent signatures (issue #14): `palisade ssh-agent` serving an Ed25519
// key held by a real palisaded, against OpenSSH's ssh-agent holding an Ed25519 key file added
// with ssh-add, alternating one signature each.
func benchAgent(ctx context.Context, cfg Config, p *progress, r *benchReport) error {
	if cfg.AgentSigns == 0 {
		r.Notes = append(r.Notes, "SSH agents: skipped (--quick: the comparison builds palisaded and runs it as a process)")
		return nil
	}
	for _, prog := range []string{"ssh-agent", "ssh-add", "make", "cc"} {
		if _, err := exec.LookPath(prog); err != nil {
			r.Notes = append(r.Notes, "SSH agents: skipped, "+prog+" is not installed (scripts/setup.sh installs it)")
			return nil
		}
	}
	p.note("SSH agents: building palisaded")
	dir, err := os.MkdirTemp("", "palisade-bench-agent-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e, err := p11web.Start(ctx, dir)
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.CLI(ctx, "key", "create", "ssh-bench", "--alg", "ed25519"); err != nil {
		return err
	}
	start := func(sock string, args ...string) (func(), error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = e.Environ()
		log, err := os.Create(sock + ".log")
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			log.Close()
			return nil, err
		}
		stop := func() { cmd.Process.Kill(); cmd.Wait(); log.Close() }
		for i := 0; i < 200; i++ {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				return stop, nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		stop()
		b, _ := os.ReadFile(sock + ".log")
		return nil, fmt.Errorf("%s does not listen on %s\n%s", args[0], sock, b)
	}
	palSock, sshSock := filepath.Join(dir, "palisade-agent.sock"), filepath.Join(dir, "openssh-agent.sock")
	stop, err := start(palSock, filepath.Join(e.Bin, "palisade"), "ssh-agent", "-a", palSock, "--socket", e.Socket, "--keys", "ssh-bench", "--log-level", "warn")
	if err != nil {
		return err
	}
	defer stop()
	if stop, err = start(sshSock, "ssh-agent", "-D", "-a", sshSock); err != nil {
		return err
	}
	defer stop()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	if _, err := e.Run(ctx, []string{"SSH_AUTH_SOCK=" + sshSock}, "ssh-add", keyFile); err != nil {
		return err
	}
	type target struct {
		name  string
		ag    agent.ExtendedAgent
		key   *agent.Key
		times []float64
	}
	var targets []*target
	for _, t := range []struct{ name, sock string }{{"palisade ssh-agent (key in a PAL)", palSock}, {"OpenSSH ssh-agent (key file)", sshSock}} {
		conn, err := net.Dial("unix", t.sock)
		if err != nil {
			return err
		}
		defer conn.Close()
		ag := agent.NewClient(conn)
		keys, err := ag.List()
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if len(keys) != 1 || keys[0].Type() != ssh.KeyAlgoED25519 {
			return fmt.Errorf("%s: lists %v, want one Ed25519 key", t.name, keys)
		}
		targets = append(targets, &target{name: t.name, ag: ag, key: keys[0]})
	}
	p.note("SSH agents: signatures")
	data := make([]byte, 128) // about the size of the session data a login signs
	warm := max(cfg.AgentSigns/10, 1)
	for i := 0; i < cfg.AgentSigns+warm; i++ {
		for _, t := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rand.Read(data)
			t0 := time.Now()
			sig, err := t.ag.Sign(t.key, data)
			el := time.Since(t0)
			if err != nil {
				return fmt.Errorf("%s: sign: %w", t.name, err)
			}
			if err := t.key.Verify(data, sig); err != nil {
				return fmt.Errorf("%s: bad signature: %w", t.name, err)
			}
			if i >= warm {
				t.times = append(t.times, us(el))
			}
		}
	}
	for _, t := range targets {
		r.Agents = append(r.Agents, agentResult{Agent: t.name, Alg: "ed25519", Signs: len(t.times), MedianUs: median(t.times), P90Us: quantile(t.times, 0.9)})
	}
	p.step("SSH agents")
	r.Notes = append(r.Notes, "SSH agents: one SSH_AGENTC_SIGN_REQUEST of 128 random bytes and its answer over the agent's Unix socket (golang.org/x/crypto/ssh/agent client, one connection each), Ed25519 both; palisade ssh-agent is a process talking to a palisaded process, the signature made in the key's PAL; OpenSSH's ssh-agent holds the key file added with ssh-add; alternating, after a tenth as many warm-up signatures; every signature verified.")
	return nil
}

// agentMarkdown writes the agents' table.
func (r *benchReport) agentMarkdown(w func(string, ...any)) {
	if len(r.Agents) == 0 {
		return
	}
	w("## SSH agents: one signature through the agent's socket, µs\n\n| agent | key | signatures | median | p90 |\n|---|---|---:|---:|---:|\n")
	for _, a := range r.Agents {
		w("| %s | %s | %d | %.0f | %.0f |\n", a.Agent, a.Alg, a.Signs, a.MedianUs, a.P90Us)
	}
	if len(r.Agents) == 2 && r.Agents[1].MedianUs > 0 {
		w("\nPalisade ÷ key file: %.1f× (medians).\n", r.Agents[0].MedianUs/r.Agents[1].MedianUs)
	}
	w("\n")
}
