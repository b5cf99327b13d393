package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/palisade-project/palisade/internal/keys"
)

// Peer is who is on the other end of a connection, as the kernel reported it (SO_PEERCRED) when
// the connection was accepted. The uid is the one of the process that called connect(2).
type Peer struct {
	UID, GID uint32
	PID      int32
	// Groups are the peer's supplementary groups, read from /proc/PID/status at accept
	// (keys.ProcGroups); nil if they could not be read, which grants nothing by group.
	Groups []uint32
	credentials.CommonAuthInfo
}

// AuthType implements credentials.AuthInfo.
func (Peer) AuthType() string { return "peercred" }

// peerCreds are server transport credentials that do no cryptography: the Unix socket is the
// channel, and the handshake only records the peer's credentials for the handlers.
type peerCreds struct{}

var errNotUnix = errors.New("connection is not a Unix socket")

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	p, err := peerOf(c)
	if err != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", err)
	}
	return c, p, nil
}

func peerOf(c net.Conn) (Peer, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return Peer{}, errNotUnix
	}
	if _, ok := c.LocalAddr().(*net.UnixAddr); !ok {
		return Peer{}, errNotUnix
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var (
		uc   *unix.Ucred
		uerr error
	)
	if err := raw.Control(func(fd uintptr) {
		uc, uerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if uerr != nil {
		return Peer{}, uerr
	}
	groups, _ := keys.ProcGroups(uc.Pid)
	return Peer{
		UID: uc.Uid, GID: uc.Gid, PID: uc.Pid, Groups: groups,
		// The kernel vouches for the peer and nobody else can read the socket's traffic.
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peercred: server-side credentials only")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (peerCreds) Clone() credentials.TransportCredentials { return peerCreds{} }
func (peerCreds) OverrideServerName(string) error         { return nil }

// peerFrom returns the caller of an RPC. Every connection went through peerCreds, so a missing
// Peer is a bug, and the caller is refused rather than treated as anyone.
func peerFrom(ctx context.Context) (Peer, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}, false
	}
	pc, ok := p.AuthInfo.(Peer)
	return pc, ok
}
