package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// SocketOptions say how the daemon's socket is created.
type SocketOptions struct {
	Mode os.FileMode // permission bits; 0 means 0660
	GID  int         // group of the socket; -1 keeps the daemon's
}

// Listen creates the Unix socket at path with restrictive permissions and listens on it.
//
// The socket's directory must exist or be creatable, be owned by the daemon's uid and not be
// writable by group or others: otherwise another user could replace the socket with their own
// and impersonate the daemon. The socket is bound in a private directory, given its mode and
// group, then renamed into place, so it is never reachable with looser permissions. A stale
// socket (nobody answers on it) is replaced; a live one means another daemon runs, and Listen
// fails. The caller removes path when done (the listener does not unlink it).
func Listen(path string, opts SocketOptions) (*net.UnixListener, error) {
	if opts.Mode == 0 {
		opts.Mode = 0o660
	}
	if opts.Mode&^0o777 != 0 {
		return nil, fmt.Errorf("socket mode %#o: only permission bits allowed", opts.Mode)
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".palisaded-")
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	tpath := filepath.Join(tmp, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tpath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, error) {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Chmod(tpath, opts.Mode); err != nil {
		return fail(err)
	}
	if opts.GID >= 0 {
		if err := os.Chown(tpath, -1, opts.GID); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tpath, path); err != nil {
		return fail(err)
	}
	return l, nil
}

func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s is owned by uid %d, not by the daemon (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("socket directory %s is writable by group or others (mode %#o): another user could replace the socket", dir, fi.Mode().Perm())
	}
	// The directories above it count too: whoever may rename entries in one of them can move
	// the socket's directory away and put their own in its place, with their socket in it. So
	// each must be owned by root or the daemon, and writable by group or others only if sticky
	// (as /tmp is: there only an entry's owner may rename it). Checked along the path as given
	// and, if a symbolic link is on it, along the path it resolves to.
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	for _, d := range []string{dir, real} {
		for p := filepath.Dir(d); ; p = filepath.Dir(p) {
			if err := checkAncestor(dir, p); err != nil {
				return err
			}
			if p == filepath.Dir(p) {
				break
			}
		}
	}
	return nil
}

// checkAncestor checks that p, a directory above the socket directory dir, lets no other user
// replace what it holds.
func checkAncestor(dir, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("socket directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("socket directory %s: cannot read the owner of %s", dir, p)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s: %s above it is owned by uid %d, neither root nor the daemon (uid %d): that user could replace the socket's directory", dir, p, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("socket directory %s: %s above it is writable by group or others and not sticky (mode %#o): another user could replace the socket's directory", dir, p, fi.Mode().Perm())
	}
	return nil
}

// errDaemonRunning means a live daemon already serves the socket.
var errDaemonRunning = errors.New("another palisaded is serving this socket")

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, errDaemonRunning)
	}
	return os.Remove(path)
}
