// Package sshpass is the paper's SSH application (TrustVisor §6.2): an SSH server whose
// password check runs in a PAL. The checking PAL is pam_palisade's (integrations/pam/pal,
// C, Argon2id), driven through PassDB with the requests pam_palisade.so sends and the state
// directory `palisade passwd` writes. The password database — per user the Argon2id
// parameters, a salt, a verifier and a failure baseline — is sealed to the checking PAL; the
// server stores only the sealed blob and never sees a verifier, so a compromised server cannot
// run an offline dictionary attack, and online guessing goes through the PAL's lockout.
//
// The server runs no shell and no commands: a session answers "whoami" and "echo ..." itself
// and refuses everything else (exit status 127), so the example cannot hand out a real shell.
//
// The host key is any ssh.Signer: an in-memory ed25519 key, or (`palisade demo ssh --host-key
// pal`, TestPALHostKey) an ECDSA P-256 key object held by the HTTPS example's signing PAL, since
// an SSH host signature is an ECDSA/SHA-256 signature of the shape that PAL accepts.
package sshpass

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrWrongPassword means the user is unknown or the password is wrong (deliberately not told
// apart).
var ErrWrongPassword = errors.New("sshpass: wrong password")

// Checker checks passwords. Check returns nil, ErrWrongPassword, ErrLocked (PassDB) or another
// error.
type Checker interface {
	Check(ctx context.Context, user string, password []byte) error
}

// Server is the example SSH server.
type Server struct {
	cfg   *ssh.ServerConfig
	check Checker
	// Logf, if set, receives one line per authentication decision.
	Logf func(format string, a ...any)

	mu sync.Mutex
	ls []net.Listener
}

// NewServer returns a server that authenticates passwords with check and identifies itself
// with hostKey.
func NewServer(hostKey ssh.Signer, check Checker) *Server {
	s := &Server{check: check}
	s.cfg = &ssh.ServerConfig{
		PasswordCallback: func(m ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := s.check.Check(ctx, m.User(), password)
			if s.Logf != nil {
				verdict := "accepted"
				if err != nil {
					verdict = "refused: " + err.Error()
				}
				s.Logf("password for %q from %s: %s", m.User(), m.RemoteAddr(), verdict)
			}
			if err != nil {
				return nil, err
			}
			return &ssh.Permissions{}, nil
		},
		MaxAuthTries: 3,
	}
	s.cfg.AddHostKey(hostKey)
	return s
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	s.ls = append(s.ls, l)
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go s.handle(c)
	}
}

// Close stops accepting connections.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, l := range s.ls {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

func (s *Server) handle(nc net.Conn) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	conn, chans, reqs, err := ssh.NewServerConn(nc, s.cfg)
	if err != nil {
		return
	}
	defer conn.Close()
	nc.SetDeadline(time.Time{})
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go session(conn.User(), ch, creqs)
	}
}

// session answers one exec or shell request, then closes the channel.
func session(user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for r := range reqs {
		switch r.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(r.Payload, &p); err != nil {
				r.Reply(false, nil)
				return
			}
			r.Reply(true, nil)
			out, status := run(user, p.Command)
			io.WriteString(ch, out)
			exit(ch, status)
			return
		case "shell":
			r.Reply(true, nil)
			fmt.Fprintf(ch, "hello %s: this example server has no shell (try: ssh ... whoami)\r\n", user)
			exit(ch, 0)
			return
		case "pty-req", "env":
			r.Reply(true, nil)
		default:
			r.Reply(false, nil)
		}
	}
}

// run is the whole command set of the example.
func run(user, cmd string) (string, uint32) {
	f := strings.Fields(cmd)
	switch {
	case len(f) == 1 && f[0] == "whoami":
		return user + "\n", 0
	case len(f) >= 1 && f[0] == "echo":
		return strings.Join(f[1:], " ") + "\n", 0
	}
	return fmt.Sprintf("sshpass example: %q: command not available (only whoami and echo)\n", cmd), 127
}

func exit(ch ssh.Channel, status uint32) {
	ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
}

// Login is a client of the server: it dials addr, logs in as user with password pw (the host key
// is not checked: for demos and benchmarks on loopback only), runs command and returns its
// combined output.
func Login(addr, user, pw, command string) (string, error) {
	cc, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.Password(pw)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err != nil {
		return "", err
	}
	defer cc.Close()
	s, err := cc.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(command)
	return string(out), err
}
