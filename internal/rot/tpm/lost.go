package tpm

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"github.com/google/go-tpm/tpm2/transport"
)

// ErrTPMLost means the connection to the TPM broke (swtpm stopped, the device went away).
// Nothing the visor asks of that TPM can succeed any more, and a TPM that comes back has lost
// the visor's measurement in its PCR, so the visor must start again (Root.Lost).
var ErrTPMLost = errors.New("TPM connection lost")

// watchedTPM passes commands to a TPM and notes the first failure that means the connection
// itself is gone, as opposed to a TPM error response (which go-tpm returns from Execute, not
// from Send).
type watchedTPM struct {
	transport.TPMCloser
	once sync.Once
	lost chan struct{}
	err  error // set before lost is closed
}

func watch(t transport.TPMCloser) *watchedTPM {
	return &watchedTPM{TPMCloser: t, lost: make(chan struct{})}
}

func (w *watchedTPM) Send(cmd []byte) ([]byte, error) {
	resp, err := w.TPMCloser.Send(cmd)
	if err != nil && connectionLost(err) {
		w.once.Do(func() {
			w.err = fmt.Errorf("%w: %v", ErrTPMLost, err)
			close(w.lost)
		})
	}
	return resp, err
}

// connectionLost reports whether err from a TPM transport means the other end is gone: the
// peer closed the socket (EOF, EPIPE, ECONNRESET) or the device disappeared (ENODEV, ENXIO).
func connectionLost(err error) bool {
	for _, e := range []error{io.EOF, io.ErrUnexpectedEOF, syscall.EPIPE, syscall.ECONNRESET, syscall.ENODEV, syscall.ENXIO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Lost is closed when the connection to the TPM breaks; LostErr then says how. A daemon
// stops on it (its supervisor starts it again, which redoes the start sequence on the TPM).
func (r *Root) Lost() <-chan struct{} {
	if r.watch == nil {
		return nil // a Root made by hand in a test: never lost
	}
	return r.watch.lost
}

// LostErr is the error that closed Lost (wrapping ErrTPMLost), or nil while it is open.
func (r *Root) LostErr() error {
	if r.watch == nil {
		return nil
	}
	select {
	case <-r.watch.lost:
		return r.watch.err
	default:
		return nil
	}
}
