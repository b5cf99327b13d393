package sshagent_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/palisade-project/palisade/integrations/internal/ossh"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

// TestCertificate serves an OpenSSH user certificate of a Palisade key (made by ssh-keygen -s
// with a CA key file) beside the key: ssh-add -L lists both, and ssh logs in to a real sshd
// that trusts only the CA (TrustedUserCAKeys, no authorized_keys) with the certificate. A
// renewed certificate is served without restarting the agent, and a file that certifies no
// served key stops the agent at start.
func TestCertificate(t *testing.T) {
	ossh.NeedTools(t, "ssh", "ssh-add", "ssh-keygen", "/usr/sbin/sshd")
	e := ossh.NewEnv(t)
	line := strings.TrimSpace(e.Palisade("key", "create", "cert-user", "--alg", "ecdsa-p256", "--ssh"))
	pub := filepath.Join(e.Dir, "cert-user.pub")
	if err := os.WriteFile(pub, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(e.Dir, "user_ca")
	if _, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test CA", "-f", ca); code != 0 {
		t.Fatal(errs)
	}
	sign := func(id string) {
		t.Helper()
		if _, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-s", ca, "-I", id, "-n", "root", "-V", "-5m:+1h", pub); code != 0 {
			t.Fatalf("ssh-keygen -s: %s", errs)
		}
	}
	sign("first")
	certFile := filepath.Join(e.Dir, "cert-user-cert.pub")

	// A certificate of a key the agent does not serve: refused at start, naming the file.
	e.Palisade("key", "create", "other", "--alg", "ed25519")
	cmd := exec.Command(e.CLI, "ssh-agent", "-a", filepath.Join(e.Dir, "bad.sock"), "--socket", e.Socket, "--keys", "other", "--cert", certFile)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "certifies none of the keys") {
		t.Errorf("agent with a certificate of another key: %v\n%s", err, out)
	}

	// The certificate given twice, and in a copy, is listed once (ssh would offer each).
	certCopy := filepath.Join(e.Dir, "copy-cert.pub")
	if b, err := os.ReadFile(certFile); err != nil || os.WriteFile(certCopy, b, 0o600) != nil {
		t.Fatal(err)
	}
	sock, _ := e.Agent("cert", "--keys", "cert-user", "--cert", certFile+","+certFile+","+certCopy)
	env := []string{"SSH_AUTH_SOCK=" + sock}
	out, errs, code := e.Run(env, "", "ssh-add", "-L")
	certLine, _ := os.ReadFile(certFile)
	certFields := strings.Fields(string(certLine))
	if code != 0 || !strings.Contains(out, line) || strings.Count(out, certFields[0]+" "+certFields[1]) != 1 || strings.Count(out, "\n") != 2 {
		t.Fatalf("ssh-add -L: exit %d %s\n%s\nwant the key and one %s", code, errs, out, certFields[0])
	}
	// The copy goes (a missing file is skipped), so that the renewal below changes every file.
	if err := os.Remove(certCopy); err != nil {
		t.Fatal(err)
	}

	hostKey := filepath.Join(e.Dir, "host_ed25519")
	if _, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey); code != 0 {
		t.Fatal(errs)
	}
	port := e.SSHD(fmt.Sprintf(`HostKey %s
TrustedUserCAKeys %s.pub
AuthorizedKeysFile none
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
`, hostKey, ca))
	hostPub, _ := os.ReadFile(hostKey + ".pub")
	knownHosts := filepath.Join(e.Dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	login := func(opts ...string) (string, string, int) {
		return e.SSH(port, knownHosts, env, append([]string{"-o", "PasswordAuthentication=no"}, opts...), "echo with-cert")
	}
	// The plain key alone is not enough here: the server trusts the CA only.
	if _, _, code := login("-o", "IdentitiesOnly=yes", "-o", "IdentityFile="+pub, "-o", "CertificateFile=/dev/null"); code != 255 {
		t.Errorf("ssh with the plain key: exit %d, want 255", code)
	}
	if out, errs, code := login("-o", "IdentitiesOnly=yes", "-o", "IdentityFile="+pub, "-o", "CertificateFile="+certFile); code != 0 || out != "with-cert\n" {
		t.Errorf("ssh with the certificate: exit %d %q %s", code, out, errs)
	}

	// Renewal: a new certificate in the same file is listed at the next request.
	sign("renewed")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	keys, err := agent.NewClient(conn).List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		if p, err := ssh.ParsePublicKey(k.Blob); err == nil {
			if c, ok := p.(*ssh.Certificate); ok {
				ids = append(ids, c.KeyId)
			}
		}
	}
	if len(ids) != 1 || ids[0] != "renewed" {
		t.Errorf("certificates listed after renewal: %q, want [renewed]", ids)
	}
}

// TestConfirm runs the agent with --confirm: each signature first runs the askpass program
// with SSH_ASKPASS_PROMPT=confirm, as OpenSSH's agent does for `ssh-add -c` keys; exit 0
// allows, anything else refuses.
func TestConfirm(t *testing.T) {
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "confirmed", "--alg", "ed25519")
	answer := filepath.Join(e.Dir, "answer")
	asked := filepath.Join(e.Dir, "asked")
	askpass := filepath.Join(e.Dir, "askpass")
	script := fmt.Sprintf("#!/bin/sh\necho \"$SSH_ASKPASS_PROMPT $1\" >> %s\nexit $(cat %s)\n", asked, answer)
	if err := os.WriteFile(askpass, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	sock, _ := e.Agent("confirm", "--keys", "confirmed", "--confirm", "--askpass", askpass)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ag := agent.NewClient(conn)
	keys, err := ag.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("list: %v %v", keys, err)
	}
	data := []byte("session hash")
	for _, tc := range []struct {
		answer string
		ok     bool
	}{{"1", false}, {"0", true}} {
		if err := os.WriteFile(answer, []byte(tc.answer), 0o600); err != nil {
			t.Fatal(err)
		}
		sig, err := ag.Sign(keys[0], data)
		if (err == nil) != tc.ok {
			t.Errorf("askpass exit %s: sign error %v", tc.answer, err)
		}
		if err == nil {
			if err := keys[0].Verify(data, sig); err != nil {
				t.Error(err)
			}
		}
	}
	got, _ := os.ReadFile(asked)
	if want := strings.Repeat("confirm Allow use of Palisade key confirmed?\n", 2); string(got) != want {
		t.Errorf("askpass was run as:\n%s\nwant:\n%s", got, want)
	}
	// --confirm with no way to ask is a usage error.
	cmd := exec.Command(e.CLI, "ssh-agent", "--socket", e.Socket, "--confirm", "-a", filepath.Join(e.Dir, "x.sock"))
	cmd.Env = append(os.Environ(), "SSH_ASKPASS=")
	if out, err := cmd.CombinedOutput(); exitCode(err) != 2 || !strings.Contains(string(out), "--confirm needs an askpass") {
		t.Errorf("--confirm without askpass: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestSocketActivation starts the agent the way the systemd socket unit does, through
// systemd's own systemd-socket-activate (LISTEN_FDS, LISTEN_PID, the socket as descriptor 3):
// the agent comes up on the first connection and serves the passed socket.
func TestSocketActivation(t *testing.T) {
	ossh.NeedTools(t, "systemd-socket-activate", "ssh-add")
	e := ossh.NewEnv(t)
	line := strings.TrimSpace(e.Palisade("key", "create", "activated", "--alg", "ed25519", "--ssh"))
	sock := filepath.Join(e.Dir, "activated.sock")
	cmd := exec.Command("systemd-socket-activate", "-l", sock,
		e.CLI, "ssh-agent", "--socket", e.Socket, "--keys", "activated", "-a", filepath.Join(e.Dir, "ignored.sock"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := ossh.Start(t, "systemd-socket-activate", cmd)
	waitSocket(t, sock) // systemd-socket-activate listens; the agent is not running yet
	out, errs, code := e.Run([]string{"SSH_AUTH_SOCK=" + sock}, "", "ssh-add", "-L")
	if code != 0 || strings.TrimSpace(out) != line {
		t.Fatalf("ssh-add -L through the activated agent: exit %d %q %s\n%s", code, out, errs, p.Stderr.String())
	}
	printed, _ := bufio.NewReader(stdout).ReadString('\n')
	if want := "SSH_AUTH_SOCK=" + sock + "; export SSH_AUTH_SOCK;\n"; printed != want {
		t.Errorf("the activated agent printed %q, want %q", printed, want)
	}
	if _, err := os.Stat(filepath.Join(e.Dir, "ignored.sock")); !os.IsNotExist(err) {
		t.Errorf("the activated agent made its own socket too: %v", err)
	}

	// Activated while palisaded is down (a boot, a restart): the agent waits for the daemon
	// instead of exiting, and the connection that started it is served once the daemon is up.
	e.StopDaemon()
	sock2 := filepath.Join(e.Dir, "early.sock")
	ossh.Start(t, "systemd-socket-activate (early)", exec.Command("systemd-socket-activate", "-l", sock2,
		e.CLI, "ssh-agent", "--socket", e.Socket, "--keys", "activated"))
	waitSocket(t, sock2)
	type result struct {
		out, errs string
		code      int
	}
	res := make(chan result, 1)
	go func() {
		out, errs, code := e.Run([]string{"SSH_AUTH_SOCK=" + sock2}, "", "ssh-add", "-L")
		res <- result{out, errs, code}
	}()
	time.Sleep(2 * time.Second) // the agent has started and found no daemon
	e.StartDaemon()
	r := <-res
	if r.code != 0 || strings.TrimSpace(r.out) != line {
		t.Errorf("ssh-add -L through an agent activated before palisaded was up: exit %d %q %s", r.code, r.out, r.errs)
	}
}

// TestSystemdUnits checks the shipped units with systemd-analyze verify (system and user
// managers), their ExecStart pointed at the CLI under test.
func TestSystemdUnits(t *testing.T) {
	ossh.NeedTools(t, "systemd-analyze")
	root, err := apps.SourceRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, cli := ossh.Bins(t)
	for _, set := range []struct {
		user  bool
		files []string
	}{
		{false, []string{"palisade-ssh-host-agent.socket", "palisade-ssh-host-agent.service", "palisaded.service"}},
		{true, []string{"user/palisade-ssh-agent.socket", "user/palisade-ssh-agent.service"}},
	} {
		dir := t.TempDir()
		var paths []string
		for _, f := range set.files {
			raw, err := os.ReadFile(filepath.Join(root, "dist", f))
			if err != nil {
				t.Fatal(err)
			}
			raw = []byte(strings.ReplaceAll(string(raw), "/usr/local/bin/palisade ", cli+" "))
			p := filepath.Join(dir, filepath.Base(f))
			if err := os.WriteFile(p, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		args := append([]string{"verify"}, paths...)
		if set.user {
			args = append([]string{"--user"}, args...)
		}
		cmd := exec.Command("systemd-analyze", args...)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		// palisaded.service names binaries and devices of a production machine; only our
		// agent units' findings count.
		var findings []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(l, "palisade-ssh") {
				findings = append(findings, l)
			}
		}
		if err != nil && len(findings) == 0 && !strings.Contains(string(out), "palisaded") {
			findings = append(findings, err.Error()+": "+string(out))
		}
		if len(findings) > 0 {
			t.Errorf("systemd-analyze %s:\n%s", strings.Join(args, " "), strings.Join(findings, "\n"))
		}
	}
}
