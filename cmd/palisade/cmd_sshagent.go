package main

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/integrations/sshagent"
	"github.com/palisade-project/palisade/internal/keys"
)

func init() {
	register(&command{
		name:    "ssh-agent",
		summary: "an SSH agent serving palisaded's keys, signing in their PALs (docs/ssh.md)",
		usage:   "[-a SOCKET] [--keys NAME,..] [--cert FILE,..] [--confirm] [--pin-cache DURATION] [--forward AGENT_SOCKET] [--askpass PROGRAM] [--allow-uid UID,..] [--daemon-wait DURATION] [--socket PATH] [--log-level L]",
		run:     runSSHAgent,
	})
}

// defaultAgentSocket is where the agent listens without -a: the user's runtime directory, as
// ssh-tpm-agent and gpg-agent do, else a private directory under the temporary one.
func defaultAgentSocket() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "palisade", "ssh-agent.sock")
	}
	return filepath.Join(os.TempDir(), "palisade-ssh-"+strconv.Itoa(os.Getuid()), "agent.sock")
}

func runSSHAgent(ctx context.Context, args []string) error {
	fs := newFlags(commands["ssh-agent"])
	listen := fs.String("a", defaultAgentSocket(), "the agent's socket (give it to ssh as $SSH_AUTH_SOCK or IdentityAgent, to sshd as HostKeyAgent)")
	socket := fs.String("socket", client.SocketPath(), "palisaded socket")
	keyNames := fs.String("keys", "", "serve only these keys (comma-separated names); default: every SSH-capable key you may use")
	forward := fs.String("forward", "", "another agent's socket: gets requests for keys this agent does not hold, and ssh-add of private keys")
	askpass := fs.String("askpass", os.Getenv("SSH_ASKPASS"), "askpass program (an executable file) run for the PIN of a key that has one: the prompt is its argument, it prints the PIN")
	allowUIDs := fs.String("allow-uid", "", "users besides yourself and root that may use the agent (names or uids)")
	certs := fs.String("cert", "", "OpenSSH certificates of served keys (key-cert.pub files, comma-separated): listed after their key, re-read at each listing")
	pinCache := fs.Duration("pin-cache", 0, "keep a key's PIN this long after askpass gave it (e.g. 5m); 0: ask at every signature")
	confirm := fs.Bool("confirm", false, "ask for confirmation before every signature, through the askpass program (as ssh-add -c does)")
	daemonWait := fs.Duration("daemon-wait", sshagent.DefaultDaemonWait, "how long requests wait for palisaded when it does not answer (a restart); once it has not answered for this long, they fail at once until it is back")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (to stderr)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("unexpected arguments %q", pos)
	}
	// Every flag value is checked before the daemon is dialled: a bad one is bad usage
	// (status 2) whether or not palisaded is up.
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageErrorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if *pinCache < 0 {
		return usageErrorf("--pin-cache %v: want a duration ≥ 0", *pinCache)
	}
	if *daemonWait < 0 {
		return usageErrorf("--daemon-wait %v: want a duration ≥ 0", *daemonWait)
	}
	if *confirm && *askpass == "" {
		return usageErrorf("--confirm needs an askpass program (--askpass or $SSH_ASKPASS) to ask with")
	}
	uids, err := ids("allow-uid", *allowUIDs, false)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	// agent.ServeAgent reports every refused request through the standard logger, in a
	// format of its own ("2026/12/01 17:35:50 agent 17: …", 17 being the request's type);
	// the agent logs refusals itself (Session), so those lines go to its log at debug level.
	stdlog.SetFlags(0)
	stdlog.SetOutput(slog.NewLogLogger(log.Handler(), slog.LevelDebug).Writer())
	// Started by systemd through a socket unit (dist/): serve the socket it passes. Taken
	// first, so that the checks below know its path and a daemon that is not up yet does not
	// make the agent exit (systemd would start it again at each connection).
	activated, err := sshagent.ActivationListener()
	if err != nil {
		return err
	}
	if activated != nil {
		*listen = activated.Addr().String()
	}
	if *forward != "" {
		if abs, err := filepath.Abs(*forward); err == nil && abs == mustAbs(*listen) {
			return usageErrorf("--forward %s is the agent's own socket", *forward)
		}
	}
	// SIGHUP (the terminal the agent was started from went away) stops the agent as SIGTERM
	// and SIGINT do (main), removing its socket, as OpenSSH's ssh-agent does; it killed the
	// agent, leaving the socket behind. An agent started with SIGHUP ignored (nohup) keeps
	// it ignored: signal.Notify would otherwise make SIGHUP stop it.
	if !signal.Ignored(syscall.SIGHUP) {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGHUP)
		defer stop()
	}
	c, err := dial(ctx, *socket)
	// Socket-activated while palisaded is starting (a boot, a restart): connections wait in
	// the socket's queue, so wait a while for the daemon rather than fail the unit at once.
	for deadline := time.Now().Add(activationWait); err != nil && activated != nil && time.Now().Before(deadline); {
		log.Warn("ssh-agent: waiting for palisaded", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		c, err = dial(ctx, *socket)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	o := sshagent.Options{Client: c, Logger: log, PINCache: *pinCache, DaemonWait: *daemonWait}
	if *daemonWait == 0 {
		o.DaemonWait = -1 // Options' zero is the default
	}
	if *keyNames != "" {
		for _, n := range strings.Split(*keyNames, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.Keys = append(o.Keys, n)
			}
		}
	}
	if *forward != "" {
		o.Forward = sshagent.DialForward(*forward)
	}
	for _, f := range strings.Split(*certs, ",") {
		if f = strings.TrimSpace(f); f != "" {
			o.Certs = append(o.Certs, f)
		}
	}
	if *askpass != "" {
		prog := *askpass
		o.PIN = func(k client.KeyInfo) ([]byte, error) { return askPIN(prog, k.Name) }
	}
	if *confirm {
		prog := *askpass
		o.Confirm = func(k client.KeyInfo) error { return askConfirm(prog, k.Name) }
	}
	a, err := sshagent.New(o)
	if err != nil {
		return err
	}
	// A first listing checks that the daemon answers and the named keys exist, so a mistake
	// shows at start, not at the first ssh.
	ks, err := a.List()
	if err == nil {
		err = a.CheckKeys()
	}
	if err == nil {
		err = a.CheckCerts()
	}
	if err != nil && activated == nil {
		return err
	}
	if err != nil {
		// Each request asks the daemon again: report, and serve.
		log.Warn("ssh-agent: palisaded not usable yet; serving anyway", "err", err)
	}
	var l net.Listener = activated
	if activated == nil {
		sl, err := sshagent.Listen(*listen)
		if err != nil {
			return err
		}
		// Closed by srv.Close below, or here if the agent stops before serving: the socket
		// and its lock are removed either way.
		defer sl.Close()
		l = sl
	}
	if *forward != "" {
		// The same socket by another name (a symlink, a bind mount): every request would
		// forward to the agent itself, each forwarded one again, thousands of connections deep.
		fi, ferr := os.Stat(*forward)
		li, lerr := os.Stat(*listen)
		if ferr == nil && lerr == nil && os.SameFile(fi, li) {
			l.Close()
			return usageErrorf("--forward %s is the agent's own socket %s", *forward, *listen)
		}
	}
	srv := &sshagent.Server{Agent: a, AllowUIDs: uids}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	fmt.Printf("SSH_AUTH_SOCK=%s; export SSH_AUTH_SOCK;\n", *listen)
	log.Info("ssh-agent serving", "socket", *listen, "keys", len(ks), "forward", *forward, "certs", len(o.Certs))
	select {
	case <-ctx.Done():
		srv.Close()
		<-served
		return nil
	case err := <-served:
		srv.Close()
		return err
	}
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// activationWait is how long a socket-activated agent waits for palisaded to come up.
const activationWait = 15 * time.Second

// askConfirm runs the askpass program as OpenSSH's ssh-agent does for a key added with
// `ssh-add -c`: SSH_ASKPASS_PROMPT=confirm, the question as argument, exit status 0 allows.
func askConfirm(prog, key string) error {
	cmd := exec.Command(prog, fmt.Sprintf("Allow use of Palisade key %s?", key))
	cmd.Env = append(os.Environ(), "SSH_ASKPASS_PROMPT=confirm")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("askpass %s: %w", prog, err)
	}
	return nil
}

// askPIN runs the askpass program as ssh-add runs $SSH_ASKPASS: the prompt as its argument, the
// answer on its standard output.
func askPIN(prog, key string) ([]byte, error) {
	cmd := exec.Command(prog, fmt.Sprintf("PIN for Palisade key %s: ", key))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("askpass %s: %w", prog, err)
	}
	pin := []byte(strings.TrimRight(string(out), "\r\n"))
	if len(pin) == 0 {
		return nil, errors.New("askpass gave an empty PIN")
	}
	if len(pin) > keys.MaxPIN {
		return nil, fmt.Errorf("askpass gave a PIN of %d bytes (at most %d)", len(pin), keys.MaxPIN)
	}
	return pin, nil
}
