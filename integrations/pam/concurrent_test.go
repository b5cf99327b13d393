package pam_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/proctest"
)

// action is a login through pam_palisade.so (pamtester) or a `palisade passwd` run.
type action struct {
	login    bool
	user, pw string
	args     []string // passwd's flags
}

func login(user, pw string) action { return action{login: true, user: user, pw: pw} }

func passwd(user, pw string, args ...string) action { return action{user: user, pw: pw, args: args} }

func (a action) String() string {
	if a.login {
		return fmt.Sprintf("login %s/%q", a.user, a.pw)
	}
	return fmt.Sprintf("passwd %s %v", a.user, a.args)
}

// start starts a in the background; wait returns its combined output and whether it succeeded.
func (s *pamSetup) start(t *testing.T, a action) (pid int, wait func() (string, bool)) {
	t.Helper()
	var cmd *exec.Cmd
	if a.login {
		cmd = exec.Command("pamtester", "-v", s.service, a.user, "authenticate")
		cmd.Env = append(os.Environ(), s.env()...)
	} else {
		cmd = exec.Command(s.e.CLI, append([]string{"passwd", a.user, "--dir", s.state}, a.args...)...)
		cmd.Env = append(os.Environ(), "PALISADE_SOCKET="+s.e.Socket)
	}
	cmd.Stdin = strings.NewReader(a.pw + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd.Process.Pid, func() (string, bool) {
		err := <-done
		ok := err == nil && (!a.login || strings.Contains(out.String(), "successfully authenticated"))
		return out.String(), ok
	}
}

// waitStuck waits until process pid holds a socket (it has read the state and called the
// frozen daemon), or, if lockDir is not "", waits for the state's lock: blocked in flock(2)
// (/proc/locks: "N: -> FLOCK ADVISORY WRITE PID ...") or polling it (pam_palisade.so, which
// holds the directory open meanwhile).
func waitStuck(t *testing.T, pid int, what action, lockDir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && (strings.HasPrefix(l, "socket:") || lockDir != "" && l == lockDir) {
				return
			}
		}
		locks, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(locks), "\n") {
			if f := strings.Fields(line); lockDir != "" && len(f) > 5 && f[1] == "->" && f[5] == strconv.Itoa(pid) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: neither calling palisaded nor waiting for the state's lock after 30 s", what)
}

// TestConcurrentWriters: logins through pam_palisade.so and `palisade passwd` runs that rewrite
// the sealed database at the same time keep each other's changes. A success after failures
// stores the database with the user's failure baseline moved; each writer stores a database
// derived from the one it read, so without a lock held from the read to the write the last
// writer undid the other's change: an enrolment reported done but absent, a deleted user's
// password working again, a changed password's old one working again, a moved baseline lost
// (a user whose every failure was followed by a success locked out). palisaded is frozen while
// the two run, so both have read the database (or wait for the lock) before either writes.
func TestConcurrentWriters(t *testing.T) {
	e, s := pamtesterSetup(t)
	pid := e.Daemon.Cmd.Process.Pid
	t.Cleanup(func() { proctest.Thaw(pid) })
	type check struct {
		user, pw string
		want     bool
	}
	// Every case: alice (max-failures 2) has failed once, so her next success stores a new
	// database; her login runs with the second writer. Afterwards she fails once more and must
	// still get in (her baseline moved), and the second writer's change must hold.
	for i, tc := range []struct {
		name   string
		setup  []action // after alice's enrolment, before her failure
		second action
		checks []check
	}{
		{"enrolment", nil, passwd("bob", "bobs password"),
			[]check{{"bob", "bobs password", true}}},
		{"another user's moved baseline",
			[]action{passwd("bob", "bobs password"), login("bob", "wrong")},
			login("bob", "bobs password"),
			[]check{{"bob", "wrong", false}, {"bob", "bobs password", true}}},
		{"deletion", []action{passwd("mallory", "mallorys password")}, passwd("mallory", "", "--delete"),
			[]check{{"mallory", "mallorys password", false}}},
		{"password change", []action{passwd("carol", "leaked")}, passwd("carol", "new secret"),
			[]check{{"carol", "leaked", false}, {"carol", "new secret", true}}},
		{"unlock",
			[]action{passwd("dave", "daves password"), login("dave", "wrong"), login("dave", "wrong")},
			passwd("dave", "", "--unlock"),
			[]check{{"dave", "daves password", true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.state = filepath.Join(e.Dir, fmt.Sprintf("state-%d", i))
			s.writeService(t)
			s.passwd(t, "alice", "correct horse", "--max-failures", "2")
			for _, a := range append(tc.setup, login("alice", "wrong")) {
				if _, wait := s.start(t, a); a.login {
					wait()
				} else if out, ok := wait(); !ok {
					t.Fatalf("setup %s: %s", a, out)
				}
			}

			if err := proctest.Freeze(pid); err != nil {
				t.Fatal(err)
			}
			first := login("alice", "correct horse")
			pid1, wait1 := s.start(t, first)
			waitStuck(t, pid1, first, "")
			pid2, wait2 := s.start(t, tc.second)
			waitStuck(t, pid2, tc.second, s.state)
			if err := proctest.Thaw(pid); err != nil {
				t.Fatal(err)
			}
			for _, w := range []struct {
				a    action
				wait func() (string, bool)
			}{{first, wait1}, {tc.second, wait2}} {
				if out, ok := w.wait(); !ok {
					t.Fatalf("%s failed:\n%s", w.a, out)
				}
			}

			for _, c := range append(tc.checks, check{"alice", "wrong", false}, check{"alice", "correct horse", true}) {
				if got := s.pamtester(t, c.user, c.pw); got != c.want {
					t.Errorf("after %s with %s: login %s/%q: %v, want %v", first, tc.second, c.user, c.pw, got, c.want)
				}
			}
		})
	}
}
