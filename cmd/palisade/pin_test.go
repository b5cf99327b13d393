package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal: what the user types is written to
// the master, which reads what the terminal shows.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestReadPINTerminal: a PIN read from standard input that is a terminal is asked for with a
// prompt, read up to the end of the line (not of the input), with echo off; a new PIN is asked
// twice, and two that differ are refused; ^C (a cancelled context) ends the prompt at once;
// echo is on again afterwards. (Before, the PIN was echoed and only the end of the
// input — ^D — ended it, against docs/cli.md's rule for secrets.)
func TestReadPINTerminal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		isNew   bool
		typed   []string
		want    string // the PIN, or the error's text
		wantErr bool
	}{
		{"current PIN", false, []string{"1234"}, "1234", false},
		{"new PIN", true, []string{"s3cret", "s3cret"}, "s3cret", false},
		{"new PIN mistyped", true, []string{"s3cret", "s3cert"}, "differ", true},
		{"interrupted", false, nil, "context canceled", true}, // ^C at the prompt: nothing typed

	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPTY(t)
			savedIn, savedErr := os.Stdin, os.Stderr
			os.Stdin, os.Stderr = slave, slave // prompts go to standard error, as at a terminal
			defer func() { os.Stdin, os.Stderr = savedIn, savedErr }()
			type result struct {
				pin []byte
				err error
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan result, 1)
			go func() {
				pin, err := readPIN(ctx, "-", "PIN for key k: ", tc.isNew)
				done <- result{pin, err}
			}()
			// What the terminal shows, chunk by chunk.
			chunks := make(chan []byte, 64)
			go func() {
				for {
					buf := make([]byte, 256)
					n, err := master.Read(buf)
					if n > 0 {
						chunks <- buf[:n]
					}
					if err != nil {
						close(chunks)
						return
					}
				}
			}()
			var screen []byte
			// waitShown reads what the terminal shows until it holds n prompts.
			waitShown := func(n int) {
				for bytes.Count(screen, []byte(": ")) < n {
					select {
					case c, ok := <-chunks:
						if !ok {
							return
						}
						screen = append(screen, c...)
					case <-time.After(5 * time.Second):
						t.Fatalf("terminal shows %q: no prompt %d", screen, n)
					}
				}
			}
			// Each line is typed once its prompt is shown, echo being off by then.
			for i, line := range tc.typed {
				waitShown(i + 1)
				if _, err := master.Write([]byte(line + "\n")); err != nil {
					t.Fatal(err)
				}
			}
			if tc.typed == nil { // ^C: main's context is cancelled
				waitShown(1)
				cancel()
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("readPIN did not return at the end of the line or at ^C (a read to the end of the input, or not cancellable)")
			}
			for end := time.After(200 * time.Millisecond); ; {
				select {
				case c, ok := <-chunks:
					if ok {
						screen = append(screen, c...)
						continue
					}
				case <-end:
				}
				break
			}
			if !bytes.Contains(screen, []byte("PIN for key k: ")) {
				t.Errorf("terminal shows %q: no prompt", screen)
			}
			for _, line := range tc.typed {
				if bytes.Contains(screen, []byte(line)) {
					t.Errorf("terminal shows %q: the PIN was echoed", screen)
				}
			}
			if tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS); err != nil || tio.Lflag&unix.ECHO == 0 {
				t.Errorf("echo not restored: %v", err)
			}
			if tc.wantErr {
				if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
					t.Fatalf("readPIN = %q, %v; want an error with %q", r.pin, r.err, tc.want)
				}
				return
			}
			if r.err != nil || string(r.pin) != tc.want {
				t.Fatalf("readPIN = %q, %v; want %q", r.pin, r.err, tc.want)
			}
		})
	}
}
