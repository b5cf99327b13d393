package sshagent_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/palisade-project/palisade/integrations/internal/ossh"
	"github.com/palisade-project/palisade/integrations/sshagent"
)

// leaveSocket leaves a socket nobody listens on at path, as an agent killed by SIGKILL does.
func leaveSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

// gone fails the test unless the agent's socket and its lock file are both gone.
func gone(t *testing.T, sock string) {
	t.Helper()
	for _, p := range []string{sock, sock + ".lock"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left behind (%v)", filepath.Base(p), err)
		}
	}
}

// TestListenRace: two Listens at the same moment on the same left-behind socket: exactly one
// gets the socket, the other is refused with an error saying another agent has it, and the
// socket at the path is the winner's. Without the lock both could find the socket unserved,
// and one remove the socket the other had just made (both then "serving", one unreachable), or
// the loser failed with bind's bare "address already in use".
func TestListenRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	for round := 0; round < 300; round++ {
		leaveSocket(t, path)
		var (
			wg    sync.WaitGroup
			ls    [2]net.Listener
			errs  [2]error
			start = make(chan struct{})
		)
		for i := range ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				l, err := sshagent.Listen(path)
				if err == nil {
					ls[i] = l
				}
				errs[i] = err
			}()
		}
		close(start)
		wg.Wait()
		var won []net.Listener
		for i, l := range ls {
			if l != nil {
				won = append(won, l)
			} else if !strings.Contains(errs[i].Error(), "another agent") {
				t.Errorf("round %d: the refused Listen: %v, want an error saying another agent has the socket", round, errs[i])
			}
		}
		if len(won) != 1 {
			for _, l := range won {
				l.Close()
			}
			t.Fatalf("round %d: %d Listens succeeded on one path, want 1 (%v)", round, len(won), errs)
		}
		// The socket at the path is the winner's: a client reaches it.
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("round %d: the winner's socket: %v", round, err)
		}
		won[0].(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(5 * time.Second))
		if sc, err := won[0].Accept(); err != nil {
			t.Fatalf("round %d: a client of the path did not reach the winner: %v", round, err)
		} else {
			sc.Close()
		}
		c.Close()
		won[0].Close()
		gone(t, path)
		if t.Failed() {
			return
		}
	}
}

// TestTwoAgentsOneSocket: two `palisade ssh-agent` processes started at the same moment on the
// same left-behind socket: one exits with an error saying another agent has the socket, the
// other serves it (ssh-add -l), and removes the socket and its lock when it stops.
func TestTwoAgentsOneSocket(t *testing.T) {
	ossh.NeedTools(t, "ssh-add")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "k", "--alg", "ed25519")
	sock := filepath.Join(e.Dir, "agent.sock")
	for round := 0; round < 5; round++ {
		leaveSocket(t, sock)
		var ps [2]*ossh.Proc
		for i := range ps {
			ps[i] = ossh.Start(t, "palisade ssh-agent", exec.Command(e.CLI, "ssh-agent", "-a", sock, "--socket", e.Socket))
		}
		var loser, winner *ossh.Proc
		select {
		case <-ps[0].Exited:
			loser, winner = ps[0], ps[1]
		case <-ps[1].Exited:
			loser, winner = ps[1], ps[0]
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: both agents run on one socket", round)
		}
		if code := exitCode(loser.Err); code != 1 || !strings.Contains(loser.Stderr.String(), "another agent") {
			t.Errorf("round %d: the second agent exited %d, want 1 with an error saying another agent has the socket:\n%s", round, code, loser.Stderr.String())
		}
		waitSocket(t, sock)
		if out, errs, code := e.Run([]string{"SSH_AUTH_SOCK=" + sock}, "", "ssh-add", "-l"); code != 0 || !strings.Contains(out, "palisade:k") {
			t.Errorf("round %d: ssh-add -l through the remaining agent: exit %d %s%s", round, code, out, errs)
		}
		select {
		case <-winner.Exited:
			t.Fatalf("round %d: the serving agent exited: %v\n%s", round, winner.Err, winner.Stderr.String())
		default:
		}
		winner.Stop()
		if winner.Err != nil {
			t.Errorf("round %d: the agent stopped by SIGTERM: %v", round, winner.Err)
		}
		gone(t, sock)
		if t.Failed() {
			return
		}
	}
}

// TestAgentSIGHUP: SIGHUP stops the agent as SIGTERM does, with status 0, its socket and lock
// removed (it killed the agent and left the socket); an agent started with SIGHUP ignored
// (nohup) keeps serving.
func TestAgentSIGHUP(t *testing.T) {
	ossh.NeedTools(t, "ssh-add", "sh")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "k", "--alg", "ed25519")
	sock, p := e.Agent("hup")
	p.Cmd.Process.Signal(syscall.SIGHUP)
	select {
	case <-p.Exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop at SIGHUP")
	}
	if p.Err != nil {
		t.Errorf("the agent stopped by SIGHUP: %v, want exit status 0", p.Err)
	}
	gone(t, sock)

	sock = filepath.Join(e.Dir, "nohup.sock")
	p = ossh.Start(t, "palisade ssh-agent (SIGHUP ignored)", exec.Command("sh", "-c",
		`trap "" HUP; exec "$0" ssh-agent -a "$1" --socket "$2"`, e.CLI, sock, e.Socket))
	waitSocket(t, sock)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	select {
	case <-p.Exited:
		t.Fatalf("the agent started with SIGHUP ignored stopped at SIGHUP: %v\n%s", p.Err, p.Stderr.String())
	case <-time.After(300 * time.Millisecond):
	}
	if out, errs, code := e.Run([]string{"SSH_AUTH_SOCK=" + sock}, "", "ssh-add", "-l"); code != 0 || !strings.Contains(out, "palisade:k") {
		t.Errorf("ssh-add -l after SIGHUP to the nohup agent: exit %d %s%s", code, out, errs)
	}
	p.Stop()
	gone(t, sock)
}

// TestAgentDaemonDown drives the agent (no --forward) with OpenSSH's ssh-add while palisaded is
// stopped, back, and restarting. Stopped: the first request waits for it up to
// sshagent.DefaultDaemonWait and fails; every later one (list, signature, -d, -D) fails at
// once; each waited client.ReconnectWait (10 s). Back: the next request is served. Restarting:
// requests made while the daemon is down are served once it is up again (a restart is ridden
// through), not failed.
func TestAgentDaemonDown(t *testing.T) {
	ossh.NeedTools(t, "ssh-add")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "k", "--alg", "ed25519")
	pub := filepath.Join(e.Dir, "k.pub")
	if err := os.WriteFile(pub, []byte(e.Palisade("key", "public", "k", "--ssh")), 0o600); err != nil {
		t.Fatal(err)
	}
	sock, _ := e.Agent("down")
	type result struct {
		out  string
		code int
		took time.Duration
	}
	sshAdd := func(args ...string) result {
		start := time.Now()
		out, errs, code := e.Run([]string{"SSH_AUTH_SOCK=" + sock}, "", "ssh-add", args...)
		return result{out + errs, code, time.Since(start)}
	}
	listOK := func(r result) bool { return r.code == 0 && strings.Contains(r.out, "palisade:k") }
	requests := []struct {
		name string
		args []string
		ok   func(result) bool // the answer with the daemon up
	}{
		{"list", []string{"-l"}, listOK},
		{"signature", []string{"-T", pub}, func(r result) bool { return r.code == 0 }},
		{"remove", []string{"-d", pub}, func(r result) bool { return r.code != 0 }}, // refused: a Palisade key stays
		{"remove all", []string{"-D"}, func(r result) bool { return r.code != 0 }},  // likewise
	}
	for _, rq := range requests {
		if r := sshAdd(rq.args...); !rq.ok(r) {
			t.Fatalf("ssh-add %s with the daemon up: exit %d %s", strings.Join(rq.args, " "), r.code, r.out)
		}
	}

	e.StopDaemon()
	r := sshAdd("-l")
	t.Logf("first ssh-add -l with palisaded stopped: exit %d in %v", r.code, r.took)
	if r.code == 0 || !strings.Contains(r.out, "error fetching identities") || r.took > sshagent.DefaultDaemonWait+2*time.Second {
		t.Errorf("first ssh-add -l with palisaded stopped: exit %d in %v, want a failure within %v: %s", r.code, r.took, sshagent.DefaultDaemonWait, r.out)
	}
	for _, rq := range requests {
		r := sshAdd(rq.args...)
		t.Logf("ssh-add %s with palisaded stopped: exit %d in %v", strings.Join(rq.args, " "), r.code, r.took)
		if r.code == 0 || r.took > time.Second {
			t.Errorf("ssh-add %s with palisaded stopped: exit %d in %v, want a failure at once: %s", strings.Join(rq.args, " "), r.code, r.took, r.out)
		}
	}

	e.StartDaemon()
	r = sshAdd("-l")
	t.Logf("ssh-add -l with palisaded back: exit %d in %v", r.code, r.took)
	if !listOK(r) || r.took > 2*time.Second {
		t.Errorf("ssh-add -l with palisaded back: exit %d in %v: %s", r.code, r.took, r.out)
	}

	// A restart: requests made while the daemon is down are answered once it is back.
	for round := 0; round < 2; round++ {
		e.StopDaemon()
		stopped := time.Now()
		results := make([]result, 2)
		var wg sync.WaitGroup
		for i, args := range [][]string{{"-l"}, {"-T", pub}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = sshAdd(args...)
			}()
		}
		time.Sleep(100 * time.Millisecond) // the requests reach the agent while the daemon is down
		e.StartDaemon()
		gap := time.Since(stopped)
		wg.Wait()
		t.Logf("restart %d: palisaded down for %v; ssh-add -l took %v, ssh-add -T %v", round, gap, results[0].took, results[1].took)
		if !listOK(results[0]) {
			t.Errorf("restart %d (down %v): ssh-add -l: exit %d in %v: %s", round, gap, results[0].code, results[0].took, results[0].out)
		}
		if results[1].code != 0 {
			t.Errorf("restart %d (down %v): ssh-add -T: exit %d in %v: %s", round, gap, results[1].code, results[1].took, results[1].out)
		}
	}
}
