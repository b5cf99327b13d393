package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPasswdFlags: flags whose value the command would drop or wrap are refused with status 2
// before anything is read or written: an explicit 0 (the "keep the database's" default), a
// value past the PAL's 32-bit field (4294967298 was t = 2), and parameters given with --unlock
// or --delete, which change none.
func TestPasswdFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--time", "4294967298"}, "--time 4294967298: want 1..4294967295"},
		{[]string{"--memory", "4294987264"}, "--memory 4294987264: want 1..4294967295"},
		{[]string{"--max-failures", "4294967296"}, "--max-failures 4294967296: want 1..4294967295"},
		{[]string{"--max-failures", "0"}, "--max-failures 0: want 1..4294967295"},
		{[]string{"--threads", "0", "--memory", "1024"}, "--threads 0: want 1..4294967295"},
		{[]string{"--unlock", "--max-failures", "3"}, "--max-failures: --unlock and --delete change no parameter"},
		{[]string{"--delete", "--time", "3"}, "--time: --unlock and --delete change no parameter"},
		{[]string{"--threads", "17"}, "1 ≤ p ≤ 16"},
	} {
		args := append([]string{"passwd", "alice", "--dir", dir, "--socket", filepath.Join(dir, "none.sock")}, tc.args...)
		code, out, errOut := capture(t, args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("palisade %v: status %d, want 2 and %q:\n%s%s", args, code, tc.want, out, errOut)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a refused command line touched the state directory: %v", err)
	}
}

// TestPasswdReadPassword: the password from a pipe is one line without its end; an empty one,
// one longer than its buffer, and one holding a NUL byte (which PAM, passing passwords as C
// strings, could never give at login) are refused.
func TestPasswdReadPassword(t *testing.T) {
	long := strings.Repeat("x", 4096)
	for _, tc := range []struct {
		in, want, err string
	}{
		{"correct horse\n", "correct horse", ""},
		{"no newline", "no newline", ""},
		{"crlf\r\n", "crlf", ""},
		{long + "\n", long, ""},
		{long + "xx\n", "", "at most 4096 bytes"}, // 4097 bytes fit the buffer; Enrol refuses them
		{"\n", "", "empty password"},
		{"a\x00b\n", "", "NUL byte"},
	} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() { w.WriteString(tc.in); w.Close() }()
		pw, err := readPassword(context.Background(), r, io.Discard)
		r.Close()
		switch {
		case tc.err == "" && (err != nil || string(pw) != tc.want):
			t.Errorf("%.20q: %.20q (%d bytes), %v; want %.20q", tc.in, pw, len(pw), err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%.20q: %.20q (%d bytes), %v; want an error with %q", tc.in, pw, len(pw), err, tc.err)
		}
	}
}

// openPTY opens a pseudo-terminal pair: what is written to master is typed on slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestPasswdTerminal: on a terminal the password is typed twice without echo, and echo is back
// afterwards; ^C at the prompt (main's context cancelled by SIGINT) ends the command at once,
// echo restored. It used to go on waiting for a line with echo off: SIGINT is caught, and a
// read of the terminal does not see the context.
func TestPasswdTerminal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		typed string // "" types nothing and cancels
		want  string
		err   string
	}{
		{"typed twice", "correct horse\ncorrect horse\n", "correct horse", ""},
		{"mistyped", "correct horse\ncorrect hose\n", "", "do not match"},
		{"interrupted", "", "", "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t)
			go io.Copy(io.Discard, master) // the terminal's output (the echoed newlines)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.typed != "" {
				master.WriteString(tc.typed)
			} else {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			type result struct {
				pw  []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				pw, err := readPassword(ctx, slave, io.Discard)
				done <- result{pw, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("readPassword still waiting 10 s after the input or the cancellation")
			}
			switch {
			case tc.err == "" && (r.err != nil || string(r.pw) != tc.want):
				t.Errorf("%q, %v; want %q", r.pw, r.err, tc.want)
			case tc.err != "" && (r.err == nil || !strings.Contains(r.err.Error(), tc.err)):
				t.Errorf("%q, %v; want an error with %q", r.pw, r.err, tc.err)
			}
			attrs, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if attrs.Lflag&unix.ECHO == 0 {
				t.Error("echo left off")
			}
		})
	}
}
