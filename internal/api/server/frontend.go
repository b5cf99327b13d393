package server

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What other front ends of the daemon (the lean protocol of internal/lean) share with the gRPC
// service: the peer credentials of a connection, and the classification of errors, so that a
// caller gets the same answer whichever protocol it speaks.

// PeerOf returns the credentials of the process that connected c (SO_PEERCRED), as the gRPC
// handshake records them. c must be a Unix socket connection.
func PeerOf(c net.Conn) (Peer, error) { return peerOf(c) }

// PeerGroups returns the supplementary groups of the process that connected c, as they were
// at connect(2) (SO_PEERGROUPS, Linux ≥ 4.13). Taken from the socket, like SO_PEERCRED, they
// cannot be changed by the peer afterwards, and reading them does not race with the reuse of
// the peer's pid (as reading /proc/PID/status would).
func PeerGroups(c *net.UnixConn) ([]uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		groups []uint32
		gerr   error
	)
	if err := raw.Control(func(fd uintptr) {
		buf := make([]uint32, 64)
		for {
			n := uint32(len(buf) * 4)
			_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
				uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
			if errno == unix.ERANGE && int(n/4) > len(buf) {
				buf = make([]uint32, n/4) // n is the size needed
				continue
			}
			if errno != 0 {
				gerr = errno
				return
			}
			groups = buf[:n/4]
			return
		}
	}); err != nil {
		return nil, err
	}
	return groups, gerr
}

// Reason names the class of err as the gRPC API reports it (api.Reason*, in its ErrorInfo):
// "NOT_FOUND", "PERMISSION", "TIMEOUT", ... and "INTERNAL" for anything unclassified.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	return classify(err).String()
}
