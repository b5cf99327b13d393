package openssh

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHashMethod(t *testing.T) {
	for _, tt := range []struct {
		line, want, err string
	}{
		{"u:$6$salt$hash:19000:0:99999:7:::", "$6$", ""},
		{"u:$y$j9T$salt$hash:19000:0:99999:7:::", "$y$j9T$", ""},
		{"u:$5$rounds=5000$salt$hash:::::::", "$5$rounds=5000$", ""},
		{"u:!:19000::::::", "", "without a crypt(3) hash"},
		{"u:*:19000::::::", "", "without a crypt(3) hash"},
		{"u", "", "without a crypt(3) hash"},
		{"u:$6$onlysalt:::::::", "", "3 or 4"},
		{"u:$a$b$c$d$e:::::::", "", "3 or 4"},
	} {
		got, err := HashMethod(tt.line)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %q, %v; want an error with %q", tt.line, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.line, got, err, tt.want)
		}
	}
}

// FuzzHashMethod: any shadow line gives an error or a prefix of its hash field that ends in
// "$" and is shorter than the field (the salt and hash are never returned).
func FuzzHashMethod(f *testing.F) {
	f.Add("u:$6$salt$hash:19000:0:99999:7:::")
	f.Add("u:$y$j9T$salt$hash:::::::")
	f.Add("u:!:::")
	f.Fuzz(func(t *testing.T, line string) {
		got, err := HashMethod(line)
		if err != nil {
			return
		}
		field := strings.Split(line, ":")[1]
		if !strings.HasPrefix(field, got) || !strings.HasSuffix(got, "$") || len(got) >= len(field) {
			t.Fatalf("%q gave %q", line, got)
		}
	})
}

// TestTempUserAndLogin creates temporary users with both hashes, logs in as one through a
// real sshd with pam_unix (the right password in, a wrong one refused), and checks that
// removing them leaves no trace in the user database. Root only.
func TestTempUserAndLogin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating users and running sshd need root")
	}
	for _, tool := range []string{SSHDPath, "ssh", "sshpass", "ssh-keygen", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup.sh)", tool)
		}
	}
	if _, err := os.Stat(PAMWrapper); err != nil {
		t.Skip("libpam-wrapper not installed (scripts/setup.sh)")
	}
	ctx := context.Background()
	const pw = "a temporary password"
	var users []User
	for _, tt := range []struct{ method, hash string }{{"SHA512", "$6$"}, {"YESCRYPT", "$y$"}} {
		u, remove, err := TempUser(ctx, "pptest", pw, tt.method)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
		t.Cleanup(func() {
			if err := remove(); err != nil {
				t.Error(err)
			}
			if _, err := user.Lookup(u.Name); err == nil {
				t.Errorf("%s still exists", u.Name)
			}
		})
		if !strings.HasPrefix(u.Hash, tt.hash) || !strings.HasPrefix(u.Name, "pptest") {
			t.Errorf("%s: user %+v, want hash %s…", tt.method, u, tt.hash)
		}
	}
	dir := t.TempDir()
	svc := filepath.Join(dir, "pam.d")
	os.MkdirAll(svc, 0o755)
	lib := "/lib/x86_64-linux-gnu/security/"
	if err := os.WriteFile(filepath.Join(svc, "sshd"), []byte("auth required "+lib+"pam_unix.so nodelay\naccount required "+lib+"pam_permit.so\nsession required "+lib+"pam_permit.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pub, err := HostKey(ctx, filepath.Join(dir, "host_key"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartSSHD(ctx, dir, PAMWrapperEnv(svc), "HostKey "+filepath.Join(dir, "host_key")+"\nUsePAM yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(KnownHostsLine(s.Port, pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if out, err := PasswordLogin(ctx, s.Port, kh, u.Name, pw, "id -un"); err != nil || out != u.Name+"\n" {
			t.Errorf("%s (%s), right password: %v %q\n%s", u.Name, u.Hash, err, out, s.Log.String())
		}
		if out, err := PasswordLogin(ctx, s.Port, kh, u.Name, "not "+pw, "id -un"); err == nil {
			t.Errorf("%s, wrong password logged in: %q", u.Name, out)
		}
	}
}

// TestLeftovers: a user is a leftover only with the prefix AND the marker of a dead creator;
// lines that are not 7 fields are skipped.
func TestLeftovers(t *testing.T) {
	alive := func(pid int) bool { return pid == 100 }
	passwd := strings.Join([]string{
		"root:x:0:0:root:/root:/bin/bash",
		"ppbenchdead:x:990:990:" + Marker(200) + ":/nonexistent:/bin/sh",
		"ppbenchlive:x:991:991:" + Marker(100) + ":/nonexistent:/bin/sh",
		"ppbenchplain:x:992:992:some admin's user:/home/p:/bin/sh",
		"ppbenchmore:x:993:993:" + Marker(200) + " and more:/nonexistent:/bin/sh",
		"ppbenchzero:x:994:994:" + Marker(0) + ":/nonexistent:/bin/sh",
		"ppbenchshort:x:995:995:" + Marker(200),
		"otherdead:x:996:996:" + Marker(200) + ":/nonexistent:/bin/sh",
		"+ppbenchnis::::::",
		"",
	}, "\n")
	got := Leftovers(passwd, "ppbench", alive)
	if len(got) != 1 || got[0] != "ppbenchdead" {
		t.Errorf("leftovers %q, want [ppbenchdead]", got)
	}
	for _, tt := range []struct {
		gecos string
		pid   int
		ok    bool
	}{
		{Marker(1234), 1234, true},
		{Marker(1234) + "x", 0, false},
		{"x" + Marker(1234), 0, false},
		{Marker(-5), 0, false},
		{"palisade temporary user of pid 0012 (removed by its creator)", 0, false},
		{"palisade temporary user, removed by its creator", 0, false},
	} {
		if pid, ok := markerPID(tt.gecos); pid != tt.pid || ok != tt.ok {
			t.Errorf("markerPID(%q) = %d, %v; want %d, %v", tt.gecos, pid, ok, tt.pid, tt.ok)
		}
	}
}

// FuzzLeftovers: whatever /etc/passwd holds, a leftover has the prefix and, as its comment,
// exactly the marker of a process said to be dead.
func FuzzLeftovers(f *testing.F) {
	f.Add("ppbenchx:x:1:1:" + Marker(7) + ":/:/bin/sh\nroot:x:0:0:root:/root:/bin/sh\n")
	f.Add("ppbench:::::\n::::::\n")
	f.Fuzz(func(t *testing.T, passwd string) {
		alive := func(pid int) bool { return pid%2 == 0 }
		for _, name := range Leftovers(passwd, "ppbench", alive) {
			if !strings.HasPrefix(name, "ppbench") {
				t.Fatalf("leftover %q lacks the prefix", name)
			}
			found := false
			for _, e := range ParsePasswd(passwd) {
				if pid, ok := markerPID(e.Comment); e.Name == name && ok && !alive(pid) && e.Comment == Marker(pid) {
					found = true
				}
			}
			if !found {
				t.Fatalf("leftover %q has no dead creator's marker in %q", name, passwd)
			}
		}
	})
}

// addUser creates a system user with comment (useradd) and removes it at cleanup if it is
// still there.
func addUser(t *testing.T, name, comment string) {
	t.Helper()
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
		"--comment", comment, name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", "-f", name).Run() })
}

// comment is name's /etc/passwd comment, "" and false if there is no such user.
func comment(t *testing.T, name string) (string, bool) {
	t.Helper()
	e, ok, err := passwdEntry(name)
	if err != nil {
		t.Fatal(err)
	}
	return e.Comment, ok
}

// deadPID is the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

// randomName is prefix and 8 random hex digits.
func randomName(t *testing.T, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b[:])
}

// TestTempUserNeverRemovesOthers (root): a name already in use fails useradd (exit 9) and the
// existing user is left as it was; a user whose comment no longer is this process's marker is
// not removed by remove.
func TestTempUserNeverRemovesOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating users needs root")
	}
	ctx := context.Background()
	taken := randomName(t, "pptest")
	addUser(t, taken, "someone else's user")
	if _, _, err := tempUser(ctx, taken, "pw", "SHA512"); err == nil {
		t.Fatalf("tempUser %s succeeded on a taken name", taken)
	}
	if c, ok := comment(t, taken); !ok || c != "someone else's user" {
		t.Errorf("the existing user %s: comment %q, exists %v after a failed tempUser", taken, c, ok)
	}

	u, remove, err := TempUser(ctx, "pptest", "pw", "SHA512")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("userdel", "-f", u.Name).Run() })
	if c, _ := comment(t, u.Name); c != Marker(os.Getpid()) {
		t.Errorf("%s: comment %q, want %q", u.Name, c, Marker(os.Getpid()))
	}
	if out, err := exec.Command("usermod", "--comment", "taken over by an admin", u.Name).CombinedOutput(); err != nil {
		t.Fatalf("usermod: %v %s", err, out)
	}
	if err := remove(); err == nil || !strings.Contains(err.Error(), "not removed") {
		t.Errorf("remove of a user without the marker: %v", err)
	}
	if _, ok := comment(t, u.Name); !ok {
		t.Errorf("remove deleted %s, which lacked the marker", u.Name)
	}
}

// TestSweepTempUsers (root): the sweep removes only users with the prefix and the marker of a
// dead creator; an unmarked user with the prefix, a live creator's user and a dead creator's
// user with another prefix stay.
func TestSweepTempUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating users needs root")
	}
	dead := deadPID(t)
	users := []struct {
		name, comment string
		swept         bool
	}{
		{randomName(t, "ppsweep"), Marker(dead), true},
		{randomName(t, "ppsweep"), "an admin's ppsweep user", false},
		{randomName(t, "ppsweep"), Marker(os.Getpid()), false},
		{randomName(t, "ppother"), Marker(dead), false},
	}
	for _, u := range users {
		addUser(t, u.name, u.comment)
	}
	removed, err := SweepTempUsers("ppsweep")
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != users[0].name {
		t.Errorf("swept %q, want [%s]", removed, users[0].name)
	}
	for _, u := range users {
		if _, ok := comment(t, u.name); ok == u.swept {
			t.Errorf("%s (%q): exists %v after the sweep", u.name, u.comment, ok)
		}
	}
	if _, err := SweepTempUsers("pp"); err == nil {
		t.Error("a 2-character prefix was accepted")
	}
}

// TestSSHDDiesWithItsStarter (root): a process that started sshd and is then SIGKILLed leaves
// no sshd behind. The starter is this test binary again (PALISADE_SSHD_STARTER set).
func TestSSHDDiesWithItsStarter(t *testing.T) {
	if dir := os.Getenv("PALISADE_SSHD_STARTER"); dir != "" {
		pub, err := HostKey(context.Background(), filepath.Join(dir, "host_key"))
		if err != nil || pub == "" {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		s, err := StartSSHD(context.Background(), dir, nil, "HostKey "+filepath.Join(dir, "host_key")+"\n")
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(s.Cmd.Process.Pid)
		select {} // until killed
	}
	if os.Geteuid() != 0 {
		t.Skip("sshd needs root")
	}
	if _, err := exec.LookPath(SSHDPath); err != nil {
		t.Skip("openssh-server not installed (scripts/setup.sh)")
	}
	starter := exec.Command(os.Args[0], "-test.run=^TestSSHDDiesWithItsStarter$")
	starter.Env = append(os.Environ(), "PALISADE_SSHD_STARTER="+t.TempDir())
	stdout, err := starter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := starter.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		starter.Process.Kill()
		starter.Wait()
		t.Fatalf("the starter printed %q (%v)", line, err)
	}
	if !processAlive(pid) {
		t.Fatalf("sshd %d is not running", pid)
	}
	starter.Process.Kill()
	starter.Wait()
	for deadline := time.Now().Add(5 * time.Second); processAlive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("sshd %d outlived its starter by 5 s", pid)
		}
	}
}
