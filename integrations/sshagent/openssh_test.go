package sshagent_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/palisade-project/palisade/integrations/internal/ossh"
)

func TestMain(m *testing.M) { ossh.Main(m) }

// TestOpenSSH drives `palisade ssh-agent` with the real OpenSSH: ssh-add lists the keys made by
// `palisade key create --ssh` (-L, -l), locks and unlocks the agent (-x, -X); ssh logs in to a
// real sshd with each key algorithm through the agent; the sshd's host key is a Palisade key
// served by a second agent through HostKeyAgent, and ssh checks it against a known_hosts file
// holding that key only.
func TestOpenSSH(t *testing.T) {
	ossh.NeedTools(t, "ssh", "ssh-add", "/usr/sbin/sshd")
	e := ossh.NewEnv(t)

	// The user's keys, one per algorithm, and the host key.
	algs := []string{"ed25519", "ecdsa-p256", "rsa-2048"}
	lines := map[string]string{} // alg -> authorized_keys line
	var authorized strings.Builder
	for _, alg := range algs {
		line := strings.TrimSpace(e.Palisade("key", "create", "user-"+alg, "--alg", alg, "--ssh"))
		if !strings.HasSuffix(line, " palisade:user-"+alg) {
			t.Fatalf("key create --ssh printed %q", line)
		}
		lines[alg] = line
		authorized.WriteString(line + "\n")
		// The public key file ssh's IdentityFile names to pick the agent's key.
		if err := os.WriteFile(filepath.Join(e.Dir, alg+".pub"), []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.Palisade("key", "public", "user-ed25519", "--ssh"); strings.TrimSpace(got) != lines["ed25519"] {
		t.Fatalf("key public --ssh: %q, want %q", got, lines["ed25519"])
	}
	if _, errs, code := e.Run(nil, "", e.CLI, "key", "create", "x", "--alg", "bogus", "--ssh"); code != 2 || !strings.Contains(errs, "SSH keys are") {
		t.Errorf("key create --ssh --alg bogus: exit %d, %s", code, errs)
	}
	hostLine := strings.TrimSpace(e.Palisade("key", "create", "host", "--alg", "ed25519", "--ssh"))
	hostPub := filepath.Join(e.Dir, "host.pub")
	authKeys := filepath.Join(e.Dir, "authorized_keys")
	knownHosts := filepath.Join(e.Dir, "known_hosts")
	for _, f := range []struct{ path, data string }{
		{hostPub, hostLine + "\n"}, {authKeys, authorized.String()},
	} {
		if err := os.WriteFile(f.path, []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	userSock, _ := e.Agent("user", "--keys", "user-ed25519,user-ecdsa-p256,user-rsa-2048")
	hostSock, _ := e.Agent("host", "--keys", "host")
	agentEnv := []string{"SSH_AUTH_SOCK=" + userSock}

	// ssh-add -L lists exactly the keys, as `key create --ssh` printed them.
	out, errs, code := e.Run(agentEnv, "", "ssh-add", "-L")
	if code != 0 {
		t.Fatalf("ssh-add -L: %d %s", code, errs)
	}
	want := lines["ecdsa-p256"] + "\n" + lines["ed25519"] + "\n" + lines["rsa-2048"] + "\n"
	if out != want {
		t.Fatalf("ssh-add -L:\n%s\nwant:\n%s", out, want)
	}
	out, _, code = e.Run(agentEnv, "", "ssh-add", "-l")
	for _, w := range []string{"palisade:user-ed25519 (ED25519)", "palisade:user-ecdsa-p256 (ECDSA)", "2048 SHA256:", "palisade:user-rsa-2048 (RSA)"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("ssh-add -l: exit %d, no %q in\n%s", code, w, out)
		}
	}

	port := e.SSHD(fmt.Sprintf(`HostKey %s
HostKeyAgent %s
AuthorizedKeysFile %s
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
`, hostPub, hostSock, authKeys))
	// known_hosts pins the Palisade host key: ssh with StrictHostKeyChecking=yes logs in only
	// if sshd's host key signature verifies under it.
	kh := fmt.Sprintf("[127.0.0.1]:%d %s\n", port, strings.Join(strings.Fields(hostLine)[:2], " "))
	if err := os.WriteFile(knownHosts, []byte(kh), 0o600); err != nil {
		t.Fatal(err)
	}

	login := func(alg string) (string, string, int) {
		return e.SSH(port, knownHosts, agentEnv, []string{
			"-o", "IdentitiesOnly=yes", "-o", "IdentityFile=" + filepath.Join(e.Dir, alg+".pub"),
			"-o", "PasswordAuthentication=no",
		}, "echo logged-in-with-"+alg)
	}
	for _, alg := range algs {
		out, errs, code := login(alg)
		if code != 0 || out != "logged-in-with-"+alg+"\n" {
			t.Errorf("ssh with %s: exit %d, %q %s", alg, code, out, errs)
		}
	}

	// A known_hosts with another key for the host: ssh refuses (the host key is checked).
	other := filepath.Join(e.Dir, "known_hosts.other")
	if err := os.WriteFile(other, []byte(fmt.Sprintf("[127.0.0.1]:%d %s\n", port, strings.Join(strings.Fields(lines["ed25519"])[:2], " "))), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := e.SSH(port, other, agentEnv, nil, "true"); code != 255 || !strings.Contains(errs, "HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("ssh with a wrong known_hosts: exit %d %s", code, errs)
	}

	// Lock and unlock with ssh-add -x / -X; the passphrase comes from an askpass program.
	askpass := func(pass string) []string {
		p := filepath.Join(e.Dir, "askpass-"+pass)
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+pass+"'\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return append(agentEnv, "SSH_ASKPASS="+p, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	}
	if _, errs, code := e.Run(askpass("secret"), "", "ssh-add", "-x"); code != 0 {
		t.Fatalf("ssh-add -x: %d %s", code, errs)
	}
	if out, _, code := e.Run(agentEnv, "", "ssh-add", "-L"); code != 1 || strings.Contains(out, "ssh-") {
		t.Errorf("ssh-add -L on a locked agent: exit %d\n%s", code, out)
	}
	if _, _, code := login("ed25519"); code != 255 {
		t.Errorf("ssh through a locked agent: exit %d, want 255", code)
	}
	if _, _, code := e.Run(askpass("wrong"), "", "ssh-add", "-X"); code == 0 {
		t.Error("ssh-add -X with a wrong passphrase unlocked the agent")
	}
	if _, errs, code := e.Run(askpass("secret"), "", "ssh-add", "-X"); code != 0 {
		t.Fatalf("ssh-add -X: %d %s", code, errs)
	}
	if out, errs, code := login("ed25519"); code != 0 || out != "logged-in-with-ed25519\n" {
		t.Errorf("ssh after unlock: exit %d %q %s", code, out, errs)
	}

	// Without --forward the agent takes no private key: ssh-add of a key file fails.
	fileKey := filepath.Join(e.Dir, "file_ed25519")
	if out, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "file-key", "-f", fileKey); code != 0 {
		t.Fatalf("ssh-keygen: %d %s%s", code, out, errs)
	}
	if _, _, code := e.Run(agentEnv, "", "ssh-add", fileKey); code == 0 {
		t.Error("ssh-add of a private key into an agent without --forward succeeded")
	}

	// With --forward, requests for keys it does not hold go to OpenSSH's ssh-agent: ssh-add
	// through it stores the key there, ssh-add -L lists both, and ssh logs in with either.
	osshSock := filepath.Join(e.Dir, "openssh-agent.sock")
	ossh.Start(t, "ssh-agent", exec.Command("ssh-agent", "-D", "-a", osshSock))
	waitSocket(t, osshSock)
	fwdSock, _ := e.Agent("fwd", "--keys", "user-ed25519", "--forward", osshSock)
	fwdEnv := []string{"SSH_AUTH_SOCK=" + fwdSock}
	if _, errs, code := e.Run(fwdEnv, "", "ssh-add", "-q", fileKey); code != 0 {
		t.Fatalf("ssh-add through the forwarding agent: %d %s", code, errs)
	}
	if out, _, _ := e.Run([]string{"SSH_AUTH_SOCK=" + osshSock}, "", "ssh-add", "-l"); !strings.Contains(out, "file-key") {
		t.Errorf("the key did not reach OpenSSH's agent: %s", out)
	}
	filePub, err := os.ReadFile(fileKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	out, _, _ = e.Run(fwdEnv, "", "ssh-add", "-L")
	if want := lines["ed25519"] + "\n" + string(filePub); out != want {
		t.Errorf("ssh-add -L through the forwarding agent:\n%s\nwant:\n%s", out, want)
	}
	f, err := os.OpenFile(authKeys, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(filePub)
	f.Close()
	for _, id := range []string{fileKey + ".pub", filepath.Join(e.Dir, "ed25519.pub")} {
		out, errs, code := e.SSH(port, knownHosts, fwdEnv, []string{"-o", "IdentitiesOnly=yes", "-o", "IdentityFile=" + id}, "echo forwarded")
		if code != 0 || out != "forwarded\n" {
			t.Errorf("ssh with %s through the forwarding agent: exit %d %q %s", filepath.Base(id), code, out, errs)
		}
	}
}

// waitSocket waits until something listens on the Unix socket path.
func waitSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentHoldsNoPrivateKey imports a key whose private bytes the test knows into palisaded,
// has the agent serve it and sign with it, then reads the agent process's whole memory: the
// Ed25519 seed and the PKCS#8 encoding are nowhere in it, while the public key (which the agent
// does hold) is found, so the scan is shown able to find what is there.
func TestAgentHoldsNoPrivateKey(t *testing.T) {
	ossh.NeedTools(t, "ssh-add")
	if os.Geteuid() != 0 {
		t.Skip("reading another process's memory needs root (or ptrace rights)")
	}
	e := ossh.NewEnv(t)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(e.Dir, "imported.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Palisade("key", "import", "imported", keyFile)
	sock, p := e.Agent("imp", "--keys", "imported")

	// Sign through the agent, as ssh would, and check the signature.
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ag := agent.NewClient(conn)
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("session data to sign")
	sig, err := ag.Sign(sshPub, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := sshPub.Verify(data, sig); err != nil {
		t.Fatalf("agent signature: %v", err)
	}

	mem := processMemory(t, p.Cmd.Process.Pid)
	for _, c := range []struct {
		what   string
		secret []byte
	}{{"Ed25519 seed", priv.Seed()}, {"PKCS#8 key", der}} {
		if bytes.Contains(mem, c.secret) {
			t.Errorf("the agent's memory holds the %s", c.what)
		}
	}
	if !bytes.Contains(mem, pub) {
		t.Error("the public key is not found in the agent's memory either: the scan does not work")
	}
	t.Logf("scanned %d MiB of the agent's memory", len(mem)>>20)
}

// processMemory reads every readable mapping of process pid.
func processMemory(t *testing.T, pid int) []byte {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []byte
	for _, line := range strings.Split(strings.TrimSpace(string(maps)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[1][0] != 'r' {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(fields[0], "%x-%x", &lo, &hi); err != nil {
			t.Fatalf("maps line %q: %v", line, err)
		}
		if hi-lo > 1<<30 {
			continue // reservations of the Go heap arena, not backed
		}
		buf := make([]byte, hi-lo)
		n, _ := f.ReadAt(buf, int64(lo)) // [vvar] and the like may not read
		out = append(out, buf[:n]...)
	}
	return out
}

// TestAgentSignSpeed (PALISADE_BENCH_AGENT=N) times N signatures of 32 bytes (an SSH session
// hash) through the agent protocol on a Unix socket, alternating: `palisade ssh-agent` with a
// Palisade Ed25519 key (the signature made in the signing PAL) and OpenSSH's ssh-agent holding
// an Ed25519 key file. It logs the medians.
func TestAgentSignSpeed(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PALISADE_BENCH_AGENT"))
	if n <= 0 {
		t.Skip("set PALISADE_BENCH_AGENT=N to time N signatures per agent")
	}
	ossh.NeedTools(t, "ssh-agent", "ssh-add", "ssh-keygen")
	e := ossh.NewEnv(t)
	e.Palisade("key", "create", "bench", "--alg", "ed25519")
	palSock, _ := e.Agent("bench", "--keys", "bench")
	osshSock := filepath.Join(e.Dir, "openssh-agent.sock")
	ossh.Start(t, "ssh-agent", exec.Command("ssh-agent", "-D", "-a", osshSock))
	waitSocket(t, osshSock)
	keyFile := filepath.Join(e.Dir, "id_ed25519")
	if _, errs, code := e.Run(nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keyFile); code != 0 {
		t.Fatal(errs)
	}
	if _, errs, code := e.Run([]string{"SSH_AUTH_SOCK=" + osshSock}, "", "ssh-add", "-q", keyFile); code != 0 {
		t.Fatal(errs)
	}
	type target struct {
		name  string
		ag    agent.ExtendedAgent
		key   ssh.PublicKey
		times []float64
	}
	var targets []*target
	for _, tc := range []struct{ name, sock string }{{"palisade ssh-agent (PAL)", palSock}, {"OpenSSH ssh-agent (key file)", osshSock}} {
		conn, err := net.Dial("unix", tc.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ag := agent.NewClient(conn)
		keys, err := ag.List()
		if err != nil || len(keys) != 1 {
			t.Fatalf("%s: %v %v", tc.name, keys, err)
		}
		targets = append(targets, &target{name: tc.name, ag: ag, key: keys[0]})
	}
	data := make([]byte, 32)
	for i := 0; i < n+10; i++ {
		for _, tg := range targets {
			start := time.Now()
			if _, err := tg.ag.Sign(tg.key, data); err != nil {
				t.Fatalf("%s: %v", tg.name, err)
			}
			if i >= 10 {
				tg.times = append(tg.times, float64(time.Since(start).Microseconds())/1000)
			}
		}
	}
	for _, tg := range targets {
		sort.Float64s(tg.times)
		t.Logf("%s: median %.3f ms, p90 %.3f ms over %d signatures", tg.name, tg.times[len(tg.times)/2], tg.times[len(tg.times)*9/10], n)
	}
}
