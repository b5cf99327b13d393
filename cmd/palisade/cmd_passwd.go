package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/palisade-project/palisade/integrations/pam"
)

func init() {
	register(&command{
		name:    "passwd",
		summary: "set a user's password in pam_palisade's sealed verifier database: read from the terminal (twice) or one line of stdin, never from arguments (docs/ssh.md)",
		usage:   "USER [--dir DIR] [--image PAL] [--time T --memory KiB --threads P] [--max-failures N] [--unlock | --delete] [--socket PATH]",
		run:     runPasswd,
	})
}

func runPasswd(ctx context.Context, args []string) error {
	fs := newFlags(commands["passwd"])
	dir := fs.String("dir", pam.DefaultDir, "pam_palisade's state directory (its dir= argument)")
	socket := fs.String("socket", "", "palisaded socket (default $PALISADE_SOCKET or the system's)")
	image := fs.String("image", "", "checking PAL image to register instead of a shipped build (wasm, or kvm where palisaded offers it); used only when the state has no registered PAL yet")
	t := fs.Uint("time", 0, "Argon2id passes t (default: the database's; a new one: 2)")
	m := fs.Uint("memory", 0, "Argon2id memory m in KiB (default: the database's; a new one: 19456)")
	p := fs.Uint("threads", 0, "Argon2id lanes p (default: the database's; a new one: 1)")
	maxFail := fs.Uint("max-failures", 0, "failed checks that lock a user (default: the database's; a new one: 5)")
	unlock := fs.Bool("unlock", false, "lift USER's lockout instead of setting a password")
	del := fs.Bool("delete", false, "remove USER from the database")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("want exactly one user name (the password is read from the terminal or stdin, never from arguments)")
	}
	user := pos[0]
	if user == "" || len(user) > pam.MaxUser || user[0] == '-' || user[0] == '+' {
		return usageErrorf("user name %q: 1..%d bytes, not starting with '-' or '+' (as pam_unix)", user, pam.MaxUser)
	}
	if *unlock && *del {
		return usageErrorf("--unlock and --delete exclude each other")
	}
	// A flag given must mean what it says: 0 (the "keep the database's" default) or a value
	// that does not fit the PAL's 32-bit field would otherwise be dropped or wrapped silently,
	// and --unlock and --delete change no parameter.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, f := range []struct {
		name string
		v    uint
	}{{"time", *t}, {"memory", *m}, {"threads", *p}, {"max-failures", *maxFail}} {
		switch {
		case !given[f.name]:
		case *unlock || *del:
			return usageErrorf("--%s: --unlock and --delete change no parameter (set it when enrolling a password)", f.name)
		case f.v == 0 || f.v > math.MaxUint32:
			return usageErrorf("--%s %d: want 1..%d", f.name, f.v, uint32(math.MaxUint32))
		}
	}
	params := pam.Params{Time: uint32(*t), Memory: uint32(*m), Threads: uint32(*p)}
	if params != (pam.Params{}) {
		// Any one given: the others default to OWASP's minimum.
		d := pam.DefaultParams
		if params.Time == 0 {
			params.Time = d.Time
		}
		if params.Memory == 0 {
			params.Memory = d.Memory
		}
		if params.Threads == 0 {
			params.Threads = d.Threads
		}
		if err := params.Check(); err != nil {
			return usageErrorf("%v", err)
		}
	}
	st := pam.State{Dir: *dir}
	db, err := st.DB()
	if err != nil {
		return err
	}
	if db == nil && (*unlock || *del) {
		return fmt.Errorf("%s has no password database yet", *dir)
	}
	if *socket == "" {
		*socket = os.Getenv("PALISADE_SOCKET")
	}
	c, err := dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	var img []byte
	if *image != "" {
		if img, err = os.ReadFile(*image); err != nil {
			return err
		}
	}
	k, err := st.Ensure(ctx, c, img, "")
	if err != nil {
		return err
	}
	var pw []byte
	if !*unlock && !*del {
		// Before the lock: a prompt must not hold up logins.
		if pw, err = readPassword(ctx, os.Stdin, os.Stderr); err != nil {
			return err
		}
		defer clear(pw)
	}
	return st.Update(func(db []byte) ([]byte, error) {
		switch {
		case db == nil && (*unlock || *del):
			return nil, fmt.Errorf("%s has no password database yet", *dir)
		case *unlock:
			return k.Unlock(ctx, db, user)
		case *del:
			return k.Delete(ctx, db, user)
		}
		return k.Enrol(ctx, db, user, pw, params, uint32(*maxFail))
	})
}

// readPassword reads a new password: from a terminal, twice without echo, else one line of in.
// A cancelled ctx (^C: main's context is cancelled by SIGINT, which therefore no longer kills
// the process) abandons the read at once, echo restored; a read cannot be interrupted, so it
// runs on its own goroutine, left blocked when the command returns.
func readPassword(ctx context.Context, in *os.File, prompt io.Writer) ([]byte, error) {
	fd := int(in.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	terminal := err == nil
	if terminal {
		noEcho := *old
		noEcho.Lflag &^= unix.ECHO
		noEcho.Lflag |= unix.ICANON | unix.ECHONL
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
			return nil, err
		}
		defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	}
	type result struct {
		pw  []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		if terminal {
			r.pw, r.err = readTwice(in, prompt)
		} else {
			r.pw, r.err = readLine(in)
		}
		done <- r
	}()
	select {
	case r := <-done:
		if r.err == nil {
			if r.err = checkPassword(r.pw); r.err != nil {
				clear(r.pw)
				r.pw = nil
			}
		}
		return r.pw, r.err
	case <-ctx.Done():
		if terminal {
			fmt.Fprintln(prompt) // the prompt's line
		}
		go func() { clear((<-done).pw) }()
		return nil, fmt.Errorf("password: %w", ctx.Err())
	}
}

// readLine reads one line of in (a pipe or file): the password without its line end.
func readLine(in io.Reader) ([]byte, error) {
	line, err := bufio.NewReaderSize(in, pam.MaxPassword+2).ReadSlice('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return nil, fmt.Errorf("password from stdin: %w (want one line, at most %d bytes)", err, pam.MaxPassword)
	}
	pw := bytes.Clone(bytes.TrimRight(line, "\r\n"))
	clear(line)
	return pw, nil
}

// readTwice prompts for the password twice on a terminal (echo already off) and returns it if
// both agree.
func readTwice(in io.Reader, prompt io.Writer) ([]byte, error) {
	r := bufio.NewReaderSize(in, pam.MaxPassword+2)
	var pws [2][]byte
	for i, q := range []string{"New password: ", "Retype new password: "} {
		fmt.Fprint(prompt, q)
		line, err := r.ReadSlice('\n')
		if err != nil {
			clear(pws[0])
			return nil, fmt.Errorf("password: %w", err)
		}
		pws[i] = bytes.Clone(bytes.TrimRight(line, "\r\n"))
		clear(line)
	}
	defer clear(pws[1])
	if !bytes.Equal(pws[0], pws[1]) {
		clear(pws[0])
		return nil, errors.New("the passwords do not match")
	}
	return pws[0], nil
}

// checkPassword refuses a password no login could give: empty, or holding a NUL byte (PAM hands
// pam_palisade.so the password as a C string, which ends at the first NUL, so the password
// enrolled would never match).
func checkPassword(pw []byte) error {
	switch {
	case len(pw) == 0:
		return errors.New("empty password")
	case bytes.IndexByte(pw, 0) >= 0:
		return errors.New("the password holds a NUL byte: PAM passes passwords as C strings, so no login could give it")
	}
	return nil
}
