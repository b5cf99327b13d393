package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Secrets (passwords, PINs, keys) never come from the command line: every local user can read
// any process's arguments in /proc/PID/cmdline (and ps shows them). They come from a file, from
// standard input, or from the terminal with echo off (docs/cli.md, "Secrets").

// maxSecret bounds a secret read from a file or standard input.
const maxSecret = 64 << 10

// refusedSecretFlag is a flag that exists only to refuse a secret given on the command line,
// with the rule and the way to do it instead.
type refusedSecretFlag struct{ instead string }

func (f refusedSecretFlag) String() string { return "" }
func (f refusedSecretFlag) Set(string) error {
	return fmt.Errorf("secrets are not taken on the command line, where every local user can read them (/proc/PID/cmdline); use %s", f.instead)
}

// refuseSecretFlag defines flag name on fs so that giving it fails with the rule.
func refuseSecretFlag(fs *flag.FlagSet, name, instead string) {
	fs.Var(refusedSecretFlag{instead}, name, "refused: secrets do not go on the command line; use "+instead)
}

// readSecret reads a secret from path: "-" is standard input, where a terminal is prompted
// (with prompt, echo off). One trailing newline is removed; an empty secret is an error.
func readSecret(ctx context.Context, path, prompt string) ([]byte, error) {
	var b []byte
	var err error
	switch {
	case path == "-" && isTerminal(os.Stdin):
		b, err = readTerminal(ctx, os.Stdin, os.Stderr, "secret", maxSecret, prompt)
	case path == "-":
		b, err = io.ReadAll(io.LimitReader(os.Stdin, maxSecret+1))
	default:
		var f *os.File
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
		b, err = io.ReadAll(io.LimitReader(f, maxSecret+1))
		f.Close()
	}
	if err != nil {
		return nil, err
	}
	if len(b) > maxSecret {
		return nil, fmt.Errorf("%s: a secret is at most %d bytes", path, maxSecret)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: empty secret", path)
	}
	return b, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readTerminal reads a secret (what: "password", "PIN"…) typed on the terminal in with echo
// off, one line of at most max bytes per prompt (written to prompt); given two prompts, the two
// lines must agree (a mistyped new secret could lock an account or key). Echo is restored on
// return, ^C included.
func readTerminal(ctx context.Context, in *os.File, prompt io.Writer, what string, max int, prompts ...string) ([]byte, error) {
	fd := int(in.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	b, err := readCtx(ctx, func() ([]byte, error) {
		r := bufio.NewReaderSize(in, max+2)
		var lines [][]byte
		defer func() {
			for _, l := range lines {
				clear(l)
			}
		}()
		for _, q := range prompts {
			fmt.Fprint(prompt, q)
			line, err := r.ReadSlice('\n')
			if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
				return nil, fmt.Errorf("%s: %w (want one line of 1..%d bytes)", what, err, max)
			}
			lines = append(lines, bytes.Clone(bytes.TrimRight(line, "\r\n")))
			clear(line)
		}
		for _, l := range lines[1:] {
			if !bytes.Equal(l, lines[0]) {
				return nil, fmt.Errorf("the %ss typed do not match", what)
			}
		}
		return bytes.Clone(lines[0]), nil
	})
	if ctx.Err() != nil && err != nil {
		fmt.Fprintln(prompt) // end the prompt's line
	}
	return b, err
}

// readCtx returns what read returns, or ctx's error at once if ctx is done first. SIGINT only
// cancels main's context (it no longer kills the process), and a read of a terminal or a pipe
// cannot be interrupted: read runs on its own goroutine, left blocked until the process exits,
// and what it reads after a cancellation is cleared.
func readCtx(ctx context.Context, read func() ([]byte, error)) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := read()
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-ctx.Done():
		go func() { clear((<-done).b) }()
		return nil, ctx.Err()
	}
}
