package sshagent_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/integrations/internal/ossh"
	"github.com/palisade-project/palisade/integrations/sshagent"
)

// dialDaemon returns a client of e's palisaded, closed at the test's end.
func dialDaemon(t *testing.T, e *ossh.Env) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), e.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// byComment returns the listed keys by comment.
func byComment(t *testing.T, ks []*agent.Key) map[string]ssh.PublicKey {
	t.Helper()
	out := map[string]ssh.PublicKey{}
	for _, k := range ks {
		p, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			t.Fatal(err)
		}
		out[k.Comment] = p
	}
	return out
}

// TestNamedKeyDeletedWhileServing: an agent serving --keys a,b goes on serving a when b is
// deleted while it runs (b goes from the listing and its signatures fail as an unknown key's);
// CheckKeys, which the command runs at start, still names a key that does not exist. A name
// given twice is listed once (ssh would spend an authentication attempt on each copy).
func TestNamedKeyDeletedWhileServing(t *testing.T) {
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "a", "--alg", "ed25519")
	e.Palisade("key", "create", "b", "--alg", "ed25519")
	a, err := sshagent.New(sshagent.Options{Client: dialDaemon(t, e), Keys: []string{"a", "b", "a"}})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := a.List()
	if err != nil || len(ks) != 2 {
		t.Fatalf("List: %v %v", ks, err)
	}
	pubs := byComment(t, ks)
	if err := a.CheckKeys(); err != nil {
		t.Fatalf("CheckKeys with both keys: %v", err)
	}

	e.Palisade("key", "delete", "b")
	ks, err = a.List()
	if err != nil || len(ks) != 1 || ks[0].Comment != "palisade:a" {
		t.Fatalf("List after deleting b: %v %v, want a alone", ks, err)
	}
	data := []byte("session")
	sig, err := a.Sign(pubs["palisade:a"], data)
	if err != nil {
		t.Fatalf("signing with a after b was deleted: %v", err)
	}
	if err := pubs["palisade:a"].Verify(data, sig); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sign(pubs["palisade:b"], data); !errors.Is(err, sshagent.ErrUnknownKey) {
		t.Errorf("signing with the deleted b: %v, want ErrUnknownKey", err)
	}
	if err := a.CheckKeys(); err == nil || !errors.Is(err, client.ErrNotFound) {
		t.Errorf("CheckKeys with b deleted: %v, want b's not-found error", err)
	}
}

// TestDestinationConstraint: a key added with `ssh-add -h DEST` through `palisade ssh-agent
// --forward` (it is stored in OpenSSH's ssh-agent, with its constraint) logs in to DEST, and
// the constraint holds: through `ssh -A` to DEST, the hop onward from DEST is refused. OpenSSH's
// agent judges both by the session-bind@openssh.com messages ssh sends on the connection that
// then asks for the signature, so the forwarding agent must pass them on that connection.
func TestDestinationConstraint(t *testing.T) {
	ossh.NeedTools(t, "ssh", "ssh-add", "ssh-agent", "ssh-keygen", "/usr/sbin/sshd")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "pal", "--alg", "ed25519")
	hostKey := filepath.Join(e.Dir, "host_ed25519")
	userKey := filepath.Join(e.Dir, "user_ed25519")
	for _, k := range []string{hostKey, userKey} {
		if out, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", filepath.Base(k), "-f", k); code != 0 {
			t.Fatalf("ssh-keygen: %d %s%s", code, out, errs)
		}
	}
	userPub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authKeys := filepath.Join(e.Dir, "authorized_keys")
	if err := os.WriteFile(authKeys, userPub, 0o600); err != nil {
		t.Fatal(err)
	}
	port := e.SSHD(fmt.Sprintf(`HostKey %s
AuthorizedKeysFile %s
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowAgentForwarding yes
`, hostKey, authKeys))
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	// "dest" is the name ssh-add -h looks the host key up under; ssh finds it as [127.0.0.1]:port.
	knownHosts := filepath.Join(e.Dir, "known_hosts")
	kh := fmt.Sprintf("dest,[127.0.0.1]:%d %s\n", port, strings.Join(strings.Fields(string(hostPub))[:2], " "))
	if err := os.WriteFile(knownHosts, []byte(kh), 0o600); err != nil {
		t.Fatal(err)
	}

	osshSock := filepath.Join(e.Dir, "openssh-agent.sock")
	ossh.Start(t, "ssh-agent", exec.Command("ssh-agent", "-D", "-a", osshSock))
	waitSocket(t, osshSock)
	fwdSock, _ := e.Agent("fwd", "--forward", osshSock)
	env := []string{"SSH_AUTH_SOCK=" + fwdSock}
	if _, errs, code := e.Run(env, "", "ssh-add", "-q", "-H", knownHosts, "-h", "dest", userKey); code != 0 {
		t.Fatalf("ssh-add -h dest: %d %s", code, errs)
	}
	opts := []string{"-o", "IdentitiesOnly=yes", "-o", "IdentityFile=" + userKey + ".pub"}
	if out, errs, code := e.SSH(port, knownHosts, env, opts, "echo at-dest"); code != 0 || out != "at-dest\n" {
		t.Fatalf("ssh to the key's destination through the forwarding agent: exit %d %q %s", code, out, errs)
	}
	onward := strings.Join(ossh.SSHArgs(port, knownHosts, append(append([]string{"-o", "BatchMode=yes"}, opts...), "echo onward")...), " ")
	out, errs, code := e.SSH(port, knownHosts, env, append([]string{"-A"}, opts...), "ssh "+onward+"; echo onward-exit=$?")
	if code != 0 || !strings.Contains(out, "onward-exit=255") || strings.Contains(out, "onward\n") {
		t.Errorf("the hop onward from dest with a key restricted to dest: exit %d %q %s", code, out, errs)
	}
}

// TestForwardedKeysWithoutDaemon: while palisaded is down, the forwarded agent's keys are still
// listed and still sign, without waiting for the daemon (only the Palisade keys are missing),
// and the Palisade keys are back when the daemon is.
func TestForwardedKeysWithoutDaemon(t *testing.T) {
	ossh.NeedTools(t, "ssh-agent")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "pal", "--alg", "ed25519")
	osshSock := filepath.Join(e.Dir, "openssh-agent.sock")
	ossh.Start(t, "ssh-agent", exec.Command("ssh-agent", "-D", "-a", osshSock))
	waitSocket(t, osshSock)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	fileSigner, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	// The forwarded agent's key, added through the Palisade agent as ssh-add would.
	a, err := sshagent.New(sshagent.Options{Client: dialDaemon(t, e), Forward: sshagent.DialForward(osshSock),
		SignTimeout: 2 * time.Second}) // how long a request waits for the stopped daemon
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Add(agent.AddedKey{PrivateKey: priv, Comment: "file-key"}); err != nil {
		t.Fatal(err)
	}
	comments := func(ks []*agent.Key) (out []string) {
		for _, k := range ks {
			out = append(out, k.Comment)
		}
		return out
	}
	if ks, err := a.List(); err != nil || len(ks) != 2 {
		t.Fatalf("List with the daemon up: %v %v", comments(ks), err)
	}

	e.StopDaemon()
	if err := a.CheckKeys(); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("CheckKeys with palisaded down: %v, want ErrUnavailable (the command's check at start)", err)
	}
	ks, err := a.List()
	if err != nil || len(ks) != 1 || ks[0].Comment != "file-key" {
		t.Fatalf("List with palisaded down: %v %v, want the forwarded agent's key", comments(ks), err)
	}
	data := []byte("session")
	start := time.Now()
	sig, err := a.Sign(fileSigner.PublicKey(), data)
	if err != nil {
		t.Fatalf("signing with the forwarded agent's key while palisaded is down: %v", err)
	}
	// A key the daemon did not list is the forwarded agent's to sign: no wait for the daemon.
	if took := time.Since(start); took > time.Second {
		t.Errorf("signing with the forwarded agent's key took %v: it waited for the daemon", took)
	}
	if err := fileSigner.PublicKey().Verify(data, sig); err != nil {
		t.Fatal(err)
	}

	e.StartDaemon()
	if ks, err := a.List(); err != nil || len(ks) != 2 {
		t.Errorf("List with the daemon back: %v %v", comments(ks), err)
	}
}

// TestHostileClients: on a served socket, a request announcing more than MaxRequest bytes
// ends its connection at once (the agent does not wait for, nor allocate, the body), one of
// MaxRequest bytes is read and answered, garbage and a client leaving mid-request end only
// their own connection, and the agent goes on serving every other client.
func TestHostileClients(t *testing.T) {
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "k", "--alg", "ed25519")
	a, err := sshagent.New(sshagent.Options{Client: dialDaemon(t, e)})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(e.Dir, "agent.sock")
	l, err := sshagent.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &sshagent.Server{Agent: a}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	dial := func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	prefix := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	listed := func() {
		t.Helper()
		ks, err := agent.NewClient(dial()).List()
		if err != nil || len(ks) != 1 {
			t.Fatalf("a well-behaved client: %v %v", ks, err)
		}
	}

	for _, tc := range []struct {
		name string
		send []byte
		// reply: the answer expected before the connection ends (nil: it ends unanswered).
		reply []byte
	}{
		{"length over MaxRequest", append(prefix(sshagent.MaxRequest+1), 11), nil},
		{"length 4 GiB", prefix(0xffffffff), nil},
		{"MaxRequest bytes of an unknown request", append(prefix(sshagent.MaxRequest), make([]byte, sshagent.MaxRequest)...), []byte{0, 0, 0, 1, 5}},
		{"garbage", []byte("hello, agent\r\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(tc.reply))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, tc.reply) {
				t.Fatalf("reply %x %v, want %x", got, err, tc.reply)
			}
			if tc.reply != nil {
				return
			}
			// Unanswered: the agent closes the connection rather than wait for more (EOF, or
			// a reset when it closed with bytes of ours unread), before the 5 s deadline.
			var ne net.Error
			if n, err := c.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("after %q: read %d %v, want the connection closed", tc.name, n, err)
			}
		})
	}
	// A client that leaves in the middle of a request.
	c := dial()
	c.Write(append(prefix(100), 11))
	c.Close()
	listed()
}

// TestUnlockGuessesOneAtATime: wrong unlock passphrases sent at once on several connections
// cost the delay each, one after the other, as in OpenSSH's single-threaded agent; otherwise
// a client guessing on N connections would guess N times as fast.
func TestUnlockGuessesOneAtATime(t *testing.T) {
	e := ossh.NewEnv(t)
	const delay = 300 * time.Millisecond
	a, err := sshagent.New(sshagent.Options{Client: dialDaemon(t, e), UnlockDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Lock([]byte("right")); err != nil {
		t.Fatal(err)
	}
	const guesses = 4
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < guesses; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Session().Unlock([]byte("wrong")); !errors.Is(err, sshagent.ErrBadUnlock) {
				t.Errorf("wrong passphrase: %v", err)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took < guesses*delay {
		t.Errorf("%d concurrent wrong guesses took %v, want at least %v (one delay each, in turn)", guesses, took, guesses*delay)
	}
	if err := a.Unlock([]byte("right")); err != nil {
		t.Fatal(err)
	}
}

// TestListenLeftSocket: Listen takes over a socket nobody listens on (left by an agent killed
// with SIGKILL or SIGHUP), and refuses, untouched, a socket an agent serves and a path that is
// not a socket.
func TestListenLeftSocket(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, "left.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: left, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false) // as a killed process leaves it
	l.Close()
	live := filepath.Join(dir, "live.sock")
	ll, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, path, err string // err: "" = Listen succeeds
	}{
		{"socket left behind", left, ""},
		{"socket in use", live, "another agent"},
		{"not a socket", file, "not a socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := sshagent.Listen(tc.path)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatalf("Listen succeeded, want an error saying %q", tc.err)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Listen: %v, want it to say %q", err, tc.err)
			}
		})
	}
	if c, err := net.Dial("unix", live); err != nil {
		t.Errorf("the live socket after Listen refused it: %v", err)
	} else {
		c.Close()
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "data" {
		t.Errorf("the file after Listen refused it: %q %v", b, err)
	}
}

// TestRemovePalisadeKeys: ssh-add -d of a Palisade key and ssh-add -D fail, saying so, since
// Palisade keys stay listed and usable (ssh-add printed "All identities removed." with every
// Palisade key still served); -D still empties the forwarded agent, and both forget cached
// PINs, so the next signature asks again.
func TestRemovePalisadeKeys(t *testing.T) {
	ossh.NeedTools(t, "ssh-add", "ssh-agent", "ssh-keygen")
	e := ossh.NewEnv(t)
	pinFile := filepath.Join(e.Dir, "pin")
	if err := os.WriteFile(pinFile, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Palisade("key", "create", "pinned", "--alg", "ed25519", "--pin-file", pinFile)
	palPub := filepath.Join(e.Dir, "pinned.pub")
	if err := os.WriteFile(palPub, []byte(e.Palisade("key", "public", "pinned", "--ssh")), 0o600); err != nil {
		t.Fatal(err)
	}
	fileKey := filepath.Join(e.Dir, "file_ed25519")
	if out, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "file-key", "-f", fileKey); code != 0 {
		t.Fatalf("ssh-keygen: %d %s%s", code, out, errs)
	}
	osshSock := filepath.Join(e.Dir, "openssh-agent.sock")
	ossh.Start(t, "ssh-agent", exec.Command("ssh-agent", "-D", "-a", osshSock))
	waitSocket(t, osshSock)

	// With ssh-add, through `palisade ssh-agent --forward`.
	sock, _ := e.Agent("agent", "--forward", osshSock)
	env := []string{"SSH_AUTH_SOCK=" + sock}
	if _, errs, code := e.Run(env, "", "ssh-add", "-q", fileKey); code != 0 {
		t.Fatalf("ssh-add: %d %s", code, errs)
	}
	if _, errs, code := e.Run(env, "", "ssh-add", "-d", palPub); code != 1 || !strings.Contains(errs, "Could not remove identity") {
		t.Errorf("ssh-add -d of a Palisade key: exit %d %s, want a refusal", code, errs)
	}
	if _, errs, code := e.Run(env, "", "ssh-add", "-D"); code != 1 || !strings.Contains(errs, "Failed to remove all identities") {
		t.Errorf("ssh-add -D: exit %d %s, want a failure (the Palisade key stays)", code, errs)
	}
	out, _, _ := e.Run(env, "", "ssh-add", "-l")
	if !strings.Contains(out, "palisade:pinned") || strings.Contains(out, "file-key") {
		t.Errorf("after ssh-add -D: %s, want the Palisade key alone", out)
	}

	// The cached PIN is forgotten by both.
	asks := 0
	a, err := sshagent.New(sshagent.Options{Client: dialDaemon(t, e), PINCache: time.Hour,
		PIN: func(client.KeyInfo) ([]byte, error) { asks++; return []byte("1234"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := a.List()
	if err != nil || len(ks) != 1 {
		t.Fatalf("List: %v %v", ks, err)
	}
	pub, err := ssh.ParsePublicKey(ks[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		remove func() error
	}{
		{"Remove", func() error { return a.Remove(pub) }},
		{"RemoveAll", a.RemoveAll},
	} {
		if _, err := a.Sign(pub, []byte("data")); err != nil {
			t.Fatal(err)
		}
		before := asks
		if _, err := a.Sign(pub, []byte("data")); err != nil || asks != before {
			t.Fatalf("%s: the cached PIN was asked again before the removal (err %v)", tc.name, err)
		}
		if err := tc.remove(); !errors.Is(err, sshagent.ErrKeysStay) {
			t.Errorf("%s: %v, want ErrKeysStay", tc.name, err)
		}
		if _, err := a.Sign(pub, []byte("data")); err != nil || asks != before+1 {
			t.Errorf("%s: the PIN was not asked again after the removal (err %v, asks %d→%d)", tc.name, err, before, asks)
		}
	}
}

// TestRefusalsLogged: what the agent refuses, the client only sees as "agent refused
// operation"; the agent's log (stderr) says why, in its own format. The protocol library's
// unstructured lines ("2026/12/01 17:35:50 agent 17: …") appear only at debug level. Among
// the refusals: `ssh-add -T` of an RSA key, since ssh-add 9.2 asks for an ssh-rsa (SHA-1)
// signature to test it (docs/ssh.md says so); an Ed25519 key tests fine.
func TestRefusalsLogged(t *testing.T) {
	ossh.NeedTools(t, "ssh-add", "ssh-keygen")
	e := ossh.NewEnv(t)
	for _, k := range []struct{ name, alg string }{{"k", "ed25519"}, {"rsa", "rsa-2048"}} {
		line := e.Palisade("key", "create", k.name, "--alg", k.alg, "--ssh")
		if err := os.WriteFile(filepath.Join(e.Dir, k.name+".pub"), []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fileKey := filepath.Join(e.Dir, "file_ed25519")
	if out, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", fileKey); code != 0 {
		t.Fatalf("ssh-keygen: %d %s%s", code, out, errs)
	}
	sock := filepath.Join(e.Dir, "agent.sock")
	cmd := exec.Command(e.CLI, "ssh-agent", "-a", sock, "--socket", e.Socket) // --log-level info
	p := ossh.Start(t, "palisade ssh-agent", cmd)
	waitSocket(t, sock)
	env := []string{"SSH_AUTH_SOCK=" + sock}
	if _, errs, code := e.Run(env, "", "ssh-add", "-T", filepath.Join(e.Dir, "k.pub")); code != 0 {
		t.Errorf("ssh-add -T of the Ed25519 key: exit %d %s", code, errs)
	}
	for _, tc := range []struct {
		args []string
		log  string // what the agent's log must say
	}{
		{[]string{fileKey}, "holds no private keys"},
		{[]string{"-d", fileKey + ".pub"}, "no such key in this agent"},
		{[]string{"-D"}, "Palisade keys stay served"},
		{[]string{"-T", filepath.Join(e.Dir, "rsa.pub")}, "ssh-rsa (SHA-1) signatures are refused"},
	} {
		if _, _, code := e.Run(env, "", "ssh-add", tc.args...); code == 0 {
			t.Errorf("ssh-add %v succeeded", tc.args)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(p.Stderr.String(), tc.log) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	p.Stop()
	logged := p.Stderr.String()
	for _, line := range strings.Split(strings.TrimSpace(logged), "\n") {
		if !strings.HasPrefix(line, "time=") {
			t.Errorf("a log line not in the agent's format: %q", line)
		}
	}
	for _, want := range []string{"holds no private keys", "no such key in this agent", "Palisade keys stay served", "ssh-rsa (SHA-1) signatures are refused"} {
		if !strings.Contains(logged, want) {
			t.Errorf("the agent's log does not say %q:\n%s", want, logged)
		}
	}
}

// TestOutOfDescriptors: a client opening more connections than the agent has file descriptors
// (a host the agent is forwarded to can) does not stop the agent: it waits for descriptors and
// serves again once the connections are gone (accept's EMFILE made it exit).
func TestOutOfDescriptors(t *testing.T) {
	ossh.NeedTools(t, "ssh-add", "sh")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "k", "--alg", "ed25519")
	sock := filepath.Join(e.Dir, "agent.sock")
	// ulimit sets the hard limit too, so the Go runtime cannot raise it back.
	p := ossh.Start(t, "palisade ssh-agent", exec.Command("sh", "-c", `ulimit -n 64 && exec "$0" ssh-agent -a "$1" --socket "$2"`, e.CLI, sock, e.Socket))
	waitSocket(t, sock)
	var conns []net.Conn
	for i := 0; i < 100; i++ {
		c, err := net.Dial("unix", sock)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond) // for the agent to accept what it can
	for _, c := range conns {
		c.Close()
	}
	select {
	case <-p.Exited:
		t.Fatalf("the agent exited after %d connections: %v\n%s", len(conns), p.Err, p.Stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	env := []string{"SSH_AUTH_SOCK=" + sock}
	if out, errs, code := e.Run(env, "", "ssh-add", "-l"); code != 0 || !strings.Contains(out, "palisade:k") {
		t.Errorf("ssh-add -l after the flood: exit %d %s%s", code, out, errs)
	}
}

// TestForwardToItself: --forward naming the agent's own socket by another path (a symlink)
// is refused at start; it made every request forward to the agent itself, recursively (one
// ssh-add -l: 7 s and some 2000 connections).
func TestForwardToItself(t *testing.T) {
	e := ossh.NewEnv(t)
	sock := filepath.Join(e.Dir, "agent.sock")
	link := filepath.Join(e.Dir, "link.sock")
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	for _, fwd := range []string{sock, link} {
		// An agent that starts serving is killed after 10 s (it would serve until stopped).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, e.CLI, "ssh-agent", "-a", sock, "--socket", e.Socket, "--forward", fwd)
		var errs bytes.Buffer
		cmd.Stderr = &errs
		err := cmd.Run()
		cancel()
		if exitCode(err) != 2 || !strings.Contains(errs.String(), "is the agent's own socket") {
			t.Errorf("--forward %s: %v %s, want a usage error (exit 2)", filepath.Base(fwd), err, errs.String())
		}
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused agent left its socket: %v", err)
	}
}

// TestForwardedConfirmAskedOnce: a key added with `ssh-add -c` to the forwarded agent, whose
// user denies its use, is refused after one question, not two (the agent asks the forwarded
// agent once per request, whichever way it looks for the key).
func TestForwardedConfirmAskedOnce(t *testing.T) {
	ossh.NeedTools(t, "ssh-agent")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "pal", "--alg", "ed25519")
	asked := filepath.Join(e.Dir, "asked")
	askpass := filepath.Join(e.Dir, "deny")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho asked >> "+asked+"\nexit 1\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	osshSock := filepath.Join(e.Dir, "openssh-agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", osshSock)
	cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	ossh.Start(t, "ssh-agent", cmd)
	waitSocket(t, osshSock)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	fileSigner, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sshagent.New(sshagent.Options{Client: dialDaemon(t, e), Forward: sshagent.DialForward(osshSock)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Add(agent.AddedKey{PrivateKey: priv, ConfirmBeforeUse: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.List(); err != nil { // as ssh does before it signs
		t.Fatal(err)
	}
	if _, err := a.Sign(fileSigner.PublicKey(), []byte("data")); err == nil {
		t.Fatal("signed with a key whose use was denied")
	}
	b, err := os.ReadFile(asked)
	if n := strings.Count(string(b), "asked"); n != 1 {
		t.Errorf("the user was asked %d times (%v), want once", n, err)
	}
}
