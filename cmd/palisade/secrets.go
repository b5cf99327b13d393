package main

import (
	"bufio"
	"bytes"
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
func readSecret(path, prompt string) ([]byte, error) {
	var b []byte
	var err error
	switch {
	case path == "-" && isTerminal(os.Stdin):
		b, err = readNoEcho(os.Stdin, prompt)
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

// readNoEcho prompts on standard error and reads one line from the terminal f with echo off.
func readNoEcho(f *os.File, prompt string) ([]byte, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	defer func() {
		unix.IoctlSetTermios(fd, unix.TCSETS, old)
		fmt.Fprintln(os.Stderr)
	}()
	fmt.Fprint(os.Stderr, prompt)
	line, err := bufio.NewReader(io.LimitReader(f, maxSecret+1)).ReadBytes('\n')
	if errors.Is(err, io.EOF) && len(line) > 0 {
		err = nil
	}
	return line, err
}
