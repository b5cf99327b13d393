package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/palisade-project/palisade/internal/config"
)

func init() {
	register(&command{
		name:    "exec",
		summary: "run an application only if its image is trusted by the active configuration, with its secrets",
		usage:   "NAME [--state-dir DIR] [--tpm DEVICE] [--tree DIR] [--secret S:FD | --secret S:PATH]... -- CMD [ARGS...]",
		run:     runExec,
	})
}

// cfgSecretFlag collects repeated --secret flags.
type cfgSecretFlag []string

func (s *cfgSecretFlag) String() string     { return strings.Join(*s, ",") }
func (s *cfgSecretFlag) Set(v string) error { *s = append(*s, v); return nil }

// cfgSecretSpec is one --secret: secret name to descriptor fd, or (fd 0) to the file path.
type cfgSecretSpec struct {
	name string
	fd   int
	path string
}

// parseSecretSpecs checks every --secret before anything is opened or released: S:FD with FD
// in 3..1023, or S:PATH (any value that is not a decimal number is a path); no descriptor and
// no path twice. The secret names are checked at release.
func parseSecretSpecs(specs []string) ([]cfgSecretSpec, error) {
	var out []cfgSecretSpec
	fds, paths := map[int]bool{}, map[string]bool{}
	for _, s := range specs {
		name, where, ok := strings.Cut(s, ":")
		if !ok || name == "" || where == "" {
			return nil, usageErrorf("--secret %q: want S:FD or S:PATH", s)
		}
		if n, err := strconv.Atoi(where); err == nil {
			if n < 3 || n > 1023 || fds[n] {
				return nil, usageErrorf("--secret %q: descriptor must be 3..1023 and used once", s)
			}
			fds[n] = true
			out = append(out, cfgSecretSpec{name: name, fd: n})
			continue
		}
		if paths[where] {
			return nil, usageErrorf("--secret %q: path %s used twice", s, where)
		}
		paths[where] = true
		out = append(out, cfgSecretSpec{name: name, path: where})
	}
	return out, nil
}

// A secret released to a descriptor: the fd number the program will find it on.
type cfgFdSecret struct {
	name   string
	target int
	fd     int // a sealed memfd holding the value
}

func runExec(_ context.Context, args []string) error {
	c := commands["exec"]
	fs := newFlags(c)
	stateDir := fs.String("state-dir", configStateDir(), "state directory holding the active configuration")
	masterPath := fs.String("master-key", "", "development master key file (default: STATE/master.key)")
	tpmDev := cfgTPMFlag(fs)
	tree := fs.String("tree", "", "the application image is this directory tree (CMD must be inside it); default: the CMD executable alone")
	var secrets cfgSecretFlag
	fs.Var(&secrets, "secret", "S:FD releases secret S on descriptor FD (≥ 3) as a sealed memfd; S:PATH writes it to PATH (0600, on a tmpfs); repeatable")
	pos, cmdArgs, err := cfgParse(fs, args, true)
	if err != nil {
		return err
	}
	if len(pos) > 1 && len(cmdArgs) == 0 {
		// palisade exec app ./app: the command was given without the -- that introduces it.
		return usageErrorf("want NAME -- CMD: put -- before the command (%q)", pos[1])
	}
	if len(pos) != 1 {
		return usageErrorf("want one NAME")
	}
	if len(cmdArgs) == 0 {
		return usageErrorf("missing -- CMD")
	}
	name := pos[0]
	specs, err := parseSecretSpecs(secrets)
	if err != nil {
		return err
	}

	st, err := cfgOpenState(*stateDir, *tpmDev)
	if err != nil {
		return err
	}
	act, err := st.Active()
	if err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	kind, _, ok := act.Lookup(name)
	if !ok {
		return fmt.Errorf("refused: %q: %w (version %d)", name, config.ErrUnknownName, act.Version)
	}
	if kind != config.KindApp {
		return fmt.Errorf("refused: %q is a %s, not an application", name, kind)
	}

	path, err := exec.LookPath(cmdArgs[0])
	if err != nil {
		return err
	}
	var m config.Measurement
	execPath := path
	if *tree != "" {
		if err := cfgInsideTree(*tree, path); err != nil {
			return fmt.Errorf("refused: %w", err)
		}
		if m, err = config.MeasureTree(*tree); err != nil {
			return err
		}
	} else {
		// The kernel executes the sealed copy that was measured, so replacing the file
		// after the check changes nothing.
		fd, meas, err := cfgSealedCopy(path)
		if err != nil {
			return err
		}
		m = meas
		execPath = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	if err := config.Check(act.Config, name, m); err != nil {
		return fmt.Errorf("refused: image of %q (%s) is not trusted by configuration version %d: %w", name, path, act.Version, err)
	}

	var fds []cfgFdSecret
	var files []string
	cleanup := func() {
		for _, f := range files {
			os.Remove(f)
		}
	}
	if len(specs) > 0 {
		store, err := cfgOpenSecrets(st, *masterPath, false)
		if err != nil {
			return err
		}
		for _, s := range specs {
			value, err := store.Release(s.name, name, m)
			if err != nil {
				cleanup()
				return fmt.Errorf("refused: %w", err)
			}
			if s.path == "" {
				fd, err := cfgSealedMemfd("palisade-secret-"+s.name, bytes.NewReader(value), syscall.O_CLOEXEC)
				if err != nil {
					cleanup()
					return err
				}
				fds = append(fds, cfgFdSecret{name: s.name, target: s.fd, fd: fd})
				continue
			}
			if err := cfgWriteSecretFile(s.path, value); err != nil {
				cleanup()
				return fmt.Errorf("secret %s: %w", s.name, err)
			}
			files = append(files, s.path)
		}
	}
	// Move every descriptor out of the way of the targets first, then put each secret on its
	// number without close-on-exec: only those survive the exec (Go opens everything else
	// close-on-exec).
	base := 3
	for _, f := range fds {
		base = max(base, f.target+1)
	}
	for i := range fds {
		hi, err := unix.FcntlInt(uintptr(fds[i].fd), unix.F_DUPFD_CLOEXEC, base)
		if err != nil {
			cleanup()
			return err
		}
		fds[i].fd = hi
	}
	if strings.HasPrefix(execPath, "/proc/self/fd/") {
		fd, _ := strconv.Atoi(strings.TrimPrefix(execPath, "/proc/self/fd/"))
		flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		hi, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD, base)
		if err != nil {
			cleanup()
			return err
		}
		unix.FcntlInt(uintptr(hi), unix.F_SETFD, flags)
		unix.Close(fd)
		execPath = "/proc/self/fd/" + strconv.Itoa(hi)
	}
	for _, f := range fds {
		if err := unix.Dup3(f.fd, f.target, 0); err != nil {
			cleanup()
			return fmt.Errorf("secret %s on fd %d: %w", f.name, f.target, err)
		}
	}
	err = syscall.Exec(execPath, cmdArgs, os.Environ())
	cleanup()
	return fmt.Errorf("exec %s: %w", path, err)
}

// cfgSealedCopy copies the executable at path into a sealed memfd while measuring it, and returns
// the descriptor and the measurement. A script ("#!") keeps its descriptor across exec: the
// kernel hands the interpreter /dev/fd/N, which must still be open.
func cfgSealedCopy(path string) (int, config.Measurement, error) {
	f, err := os.Open(path)
	if err != nil {
		return -1, config.Measurement{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return -1, config.Measurement{}, err
	}
	if !st.Mode().IsRegular() {
		return -1, config.Measurement{}, fmt.Errorf("%s: not a regular file", path)
	}
	var head [2]byte
	f.ReadAt(head[:], 0)
	cloexec := syscall.O_CLOEXEC
	if string(head[:]) == "#!" {
		cloexec = 0
	}
	pr, pw := io.Pipe()
	type result struct {
		m   config.Measurement
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := config.MeasureReader(pr, st.Size())
		pr.CloseWithError(err)
		done <- result{m, err}
	}()
	fd, err := cfgSealedMemfd(filepath.Base(path), io.TeeReader(io.LimitReader(f, st.Size()+1), pw), cloexec)
	pw.Close()
	r := <-done
	if err != nil {
		return -1, config.Measurement{}, err
	}
	if r.err != nil {
		unix.Close(fd)
		return -1, config.Measurement{}, fmt.Errorf("measure %s: %w", path, r.err)
	}
	return fd, r.m, nil
}

// cfgSealedMemfd returns a memfd holding what r yields, sealed against any change, positioned at 0.
func cfgSealedMemfd(name string, r io.Reader, cloexec int) (int, error) {
	flags := unix.MFD_ALLOW_SEALING
	if cloexec != 0 {
		flags |= unix.MFD_CLOEXEC
	}
	fd, err := unix.MemfdCreate(name, flags)
	if err != nil {
		return -1, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return -1, fmt.Errorf("memfd: %w", err)
	}
	// Dup before f's finalizer can close fd; f is then closed explicitly.
	keep, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	f.Close()
	if err != nil {
		return -1, err
	}
	if cloexec == 0 {
		unix.FcntlInt(uintptr(keep), unix.F_SETFD, 0)
	}
	if _, err := unix.FcntlInt(uintptr(keep), unix.F_ADD_SEALS,
		unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		unix.Close(keep)
		return -1, fmt.Errorf("memfd seals: %w", err)
	}
	if _, err := unix.Seek(keep, 0, io.SeekStart); err != nil {
		unix.Close(keep)
		return -1, err
	}
	return keep, nil
}

// Filesystems whose files never reach a disk.
const (
	cfgTmpfsMagic = 0x01021994
	cfgRamfsMagic = 0x858458f6
)

// cfgWriteSecretFile writes value to a new file at path, 0600, refusing anything but a fresh
// file (no symlink, no existing file) in a directory on tmpfs or ramfs.
func cfgWriteSecretFile(path string, value []byte) error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(path), &sfs); err != nil {
		return err
	}
	if sfs.Type != cfgTmpfsMagic && sfs.Type != cfgRamfsMagic {
		return fmt.Errorf("%s is not on a tmpfs: a secret must not be written to disk", filepath.Dir(path))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(value); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// cfgInsideTree checks that the file to execute lies in the measured tree, so that what runs is
// part of what was measured.
func cfgInsideTree(tree, path string) error {
	t, err := filepath.EvalSymlinks(tree)
	if err != nil {
		return err
	}
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	t, _ = filepath.Abs(t)
	p, _ = filepath.Abs(p)
	if rel, err := filepath.Rel(t, p); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return errors.New(path + " is not inside the measured tree " + tree)
	}
	return nil
}
