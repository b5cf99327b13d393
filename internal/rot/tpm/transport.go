package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// OpenDevice opens a TPM: a "/dev/tpmrm0"-style character device or a "swtpm:PATH" Unix
// socket (the transport reads whole responses, which a stream socket may split).
func OpenDevice(dev string) (transport.TPMCloser, error) {
	if path, ok := strings.CutPrefix(dev, "swtpm:"); ok {
		c, err := net.Dial("unix", path)
		if err != nil {
			return nil, fmt.Errorf("open swtpm socket: %w", err)
		}
		return transport.FromReadWriteCloser(framedConn{c}), nil
	}
	t, err := linuxtpm.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("open TPM device: %w", err)
	}
	return t, nil
}

// framedConn reads one whole TPM response (10-byte header, then the size it announces) per
// Read: a stream socket may split a large response, which go-tpm's single Read would truncate.
type framedConn struct{ net.Conn }

func (f framedConn) Read(p []byte) (int, error) {
	if len(p) < 10 {
		return 0, fmt.Errorf("tpm response buffer of %d bytes", len(p))
	}
	if _, err := io.ReadFull(f.Conn, p[:10]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint32(p[2:6]))
	if n < 10 || n > len(p) {
		return 0, fmt.Errorf("tpm response size %d out of range", n)
	}
	if _, err := io.ReadFull(f.Conn, p[10:n]); err != nil {
		return 0, err
	}
	return n, nil
}
