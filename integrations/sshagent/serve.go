package sshagent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh/agent"
)

// Listen makes the agent's Unix socket at path, as OpenSSH's ssh-agent does: the socket is
// 0600 and, if its directory does not exist, the directory is made 0700. A socket at path that
// an agent serves is an error, and so is a file that is not a socket; a socket nobody listens
// on (left by an agent killed by SIGKILL, which cannot remove it) is replaced, as gpg-agent
// does, so that the agent starts again without the user removing it.
//
// The Listener holds a lock on path for as long as it is open (flock(2) of the file
// path+".lock"), taken before the left socket is checked: two agents started at the same moment
// on the same left socket could otherwise both find it unserved, and one remove the socket the
// other had just made, the first then serving a socket nobody can reach (and removing the
// second's at its exit). The second is refused with an error naming the lock.
func Listen(path string) (*Listener, error) {
	if len(path) >= 108 {
		return nil, fmt.Errorf("sshagent: socket path %q is %d bytes (a Unix socket path has at most 107)", path, len(path))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	lock, err := lockSocket(path)
	if err != nil {
		return nil, err
	}
	l, err := listenLocked(path)
	if err != nil {
		unlockSocket(path, lock)
		return nil, err
	}
	return &Listener{UnixListener: l, path: path, lock: lock}, nil
}

// listenLocked makes the socket at path; the caller holds its lock.
func listenLocked(path string) (*net.UnixListener, error) {
	if err := removeLeftSocket(path); err != nil {
		return nil, err
	}
	// The umask keeps the socket private between bind and chmod.
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Listener is the socket Listen made, with its lock.
type Listener struct {
	*net.UnixListener
	path string
	lock *os.File

	once     sync.Once
	closeErr error
}

// Close stops listening and removes the socket, then the lock file, then releases the lock:
// while the lock is held no other agent can have replaced the socket, so the one removed is
// this agent's own.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.closeErr = l.UnixListener.Close() // net.ListenUnix's listener unlinks its socket
		unlockSocket(l.path, l.lock)
	})
	return l.closeErr
}

// lockSocket takes the lock of the socket path: an exclusive flock(2) of path+".lock", made
// 0600 if missing, never through a symbolic link.
func lockSocket(path string) (*os.File, error) {
	lockPath := path + ".lock"
	for {
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sshagent: lock of the socket: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("sshagent: %s is in use: another agent is starting on it or serves it (it holds %s; stop it, or give -a another path)", path, lockPath)
			}
			return nil, fmt.Errorf("sshagent: lock of the socket: flock %s: %w", lockPath, err)
		}
		// An agent that stops removes the lock file before it releases the lock: a lock won
		// on a file no longer at lockPath locks nothing (a third agent would lock a new
		// file there), so it is taken again on whatever file is there now.
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("sshagent: lock of the socket: %w", err)
		}
		pi, err := os.Lstat(lockPath)
		if err == nil && os.SameFile(fi, pi) {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sshagent: lock of the socket: %w", err)
		}
	}
}

// unlockSocket removes the lock file of path, then releases the lock held on it by f.
func unlockSocket(path string, f *os.File) {
	os.Remove(path + ".lock")
	f.Close() // closing the only descriptor of the open file releases the flock
}

// removeLeftSocket removes path if it is a socket that nobody listens on, and reports an error
// if it is one that somebody does or a file of another kind.
func removeLeftSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("sshagent: %s exists and is not a socket (a %v)", path, fi.Mode().Type())
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("sshagent: %s is in use: another agent serves it (stop it, or give -a another path)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("sshagent: socket %s exists and cannot be checked: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sshagent: removing the socket left at %s: %w", path, err)
	}
	return nil
}

// DialForward returns an Options.Forward that connects to the agent at path for each request.
func DialForward(path string) func() (agent.ExtendedAgent, func() error, error) {
	return func() (agent.ExtendedAgent, func() error, error) {
		c, err := net.Dial("unix", path)
		if err != nil {
			return nil, nil, err
		}
		return agent.NewClient(c), c.Close, nil
	}
}

// Server serves an Agent on a listener.
type Server struct {
	Agent *Agent
	// AllowUIDs are the peers served besides the agent's own uid and root (sshd reading a
	// HostKeyAgent runs as root). Others are refused at accept, as ssh-agent refuses a peer
	// whose getpeereid uid is neither its own nor root's.
	AllowUIDs []uint32

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("sshagent: server closed")

// Serve accepts connections on l (a Listener, or the socket systemd passed:
// ActivationListener) until Close, which closes l.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.l = l
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.mu.Unlock()
	var wait time.Duration // after a failed accept that may succeed later
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			done := s.done
			s.mu.Unlock()
			if done {
				return ErrServerClosed
			}
			if !retryAccept(err) {
				return err
			}
			// Out of descriptors or memory (a client holding many connections, which a host
			// the agent is forwarded to can open): wait for some to close, as net/http does,
			// rather than exit.
			if wait == 0 {
				wait = 5 * time.Millisecond
				s.Agent.log.Warn("accept failed; retrying", "err", err)
			} else {
				wait = min(2*wait, time.Second)
			}
			time.Sleep(wait)
			continue
		}
		wait = 0
		c, ok := nc.(*net.UnixConn)
		if !ok {
			s.Agent.log.Warn("connection refused", "err", fmt.Errorf("a %s connection, not a Unix socket's", nc.LocalAddr().Network()))
			nc.Close()
			continue
		}
		uid, err := peerUID(c)
		if err == nil && !s.allowed(uid) {
			err = fmt.Errorf("peer uid %d is not allowed", uid)
		}
		if err != nil {
			s.Agent.log.Warn("connection refused", "err", err)
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			// ServeAgent returns at EOF or on a malformed request.
			// A Session per connection: its forwarded requests share one connection to the
			// other agent, as session-bind@openssh.com needs (Session). Requests are bounded
			// at MaxRequest before ServeAgent reads them.
			sess := s.Agent.Session()
			rw := struct {
				io.Reader
				io.Writer
			}{&frameReader{r: c, max: MaxRequest}, c}
			err := agent.ServeAgent(sess, rw)
			switch {
			case errors.Is(err, ErrRequestTooLarge):
				s.Agent.log.Warn("connection closed", "err", err)
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
				s.Agent.log.Debug("connection ended", "err", err)
			}
			sess.Close()
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// retryAccept reports whether a failed accept may succeed later: a timeout, or a lack of
// descriptors, buffers or memory, or a connection that died in the queue.
func retryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) allowed(uid uint32) bool {
	if uid == 0 || uid == uint32(os.Getuid()) {
		return true
	}
	for _, u := range s.AllowUIDs {
		if u == uid {
			return true
		}
	}
	return false
}

// Close stops accepting, closes open connections and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.done = true
	var err error
	if s.l != nil {
		err = s.l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		cred *syscall.Ucred
		cerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred.Uid, nil
}

// ActivationListener returns the socket systemd passed by socket activation (sd_listen_fds(3):
// LISTEN_PID is this process, LISTEN_FDS is 1, the socket is descriptor 3), or nil when the
// agent was not started that way. The variables are removed so that programs the agent runs
// (askpass) do not take the socket for theirs. More than one socket, or one that is not a
// listening Unix stream socket, is an error naming the unit's mistake.
func ActivationListener() (*net.UnixListener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if fds != "1" {
		return nil, fmt.Errorf("sshagent: socket activation passed LISTEN_FDS=%s sockets; the agent serves exactly one (one ListenStream= in the socket unit)", fds)
	}
	const first = 3 // SD_LISTEN_FDS_START
	syscall.CloseOnExec(first)
	f := os.NewFile(first, "systemd-socket")
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("sshagent: the socket passed by systemd: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("sshagent: the socket passed by systemd is a %s socket, not a Unix stream one (ListenStream= must be a path)", l.Addr().Network())
	}
	return ul, nil
}
