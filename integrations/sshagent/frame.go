package sshagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxRequest bounds one agent request (its length prefix excluded), as OpenSSH's ssh-agent
// bounds its messages (AGENT_MAX_LEN, 256 KiB); the largest real request, an RSA 16384 key
// added with its certificate and constraints, is a few KiB. agent.ServeAgent allows 16 MiB and
// allocates a request's full length before reading it, so without this bound any client of the
// socket (a user of --allow-uid, or a host the agent is forwarded to with ssh -A) could make
// the agent hold 16 MiB per connection, and keep it.
const MaxRequest = 256 << 10

// ErrRequestTooLarge ends a connection whose request announces more than MaxRequest bytes.
var ErrRequestTooLarge = errors.New("sshagent: request too large")

// frameReader passes an agent connection's bytes on unchanged, frame by frame (a 4-byte
// big-endian length, then that many bytes), and fails before a frame's length prefix is handed
// on if the length is over max: the reader above (agent.ServeAgent) never sees it, so never
// allocates for it.
type frameReader struct {
	r    io.Reader
	max  uint32
	hdr  [4]byte
	out  int    // bytes of hdr not yet handed on
	body uint32 // bytes of the current frame's body not yet read
}

func (f *frameReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if f.out == 0 && f.body == 0 {
		// At a frame boundary: the whole prefix, checked, before any of it goes on.
		if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
			return 0, err
		}
		n := binary.BigEndian.Uint32(f.hdr[:])
		if n > f.max {
			return 0, fmt.Errorf("%w: %d bytes announced (at most %d, OpenSSH's agent's limit)", ErrRequestTooLarge, n, f.max)
		}
		f.out, f.body = len(f.hdr), n
	}
	if f.out > 0 {
		k := copy(p, f.hdr[len(f.hdr)-f.out:])
		f.out -= k
		return k, nil
	}
	if uint32(len(p)) > f.body {
		p = p[:f.body]
	}
	k, err := f.r.Read(p)
	f.body -= uint32(k)
	return k, err
}
