package openssh

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
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
