package client

import (
	"context"
	"errors"
	"time"

	"github.com/palisade-project/palisade/internal/lean/wire"
)

// leanKeySign is KeySign over the lean protocol; ok is false when it must go over gRPC
// instead (no lean socket now: the daemon may be restarting, and gRPC's KeySign waits for it).
func (c *Client) leanKeySign(ctx context.Context, name string, scheme, hash uint16, digest, pin []byte) (sig []byte, ok bool, err error) {
	p := c.lean
	if !p.usable() || name == "" || len(name) > wire.MaxName || len(digest) > wire.MaxDigest || len(pin) > wire.MaxPIN {
		return nil, false, nil // gRPC gives the daemon's own answer to what lean cannot carry
	}
	req := wire.SignRequest{Name: name, Scheme: scheme, Hash: hash, Digest: digest, PIN: pin}
	code, body, lc, err := p.roundTrip(ctx, wire.OpSign, req.Append)
	if errors.Is(err, errNoLean) {
		p.down.Store(time.Now().Add(leanRetry).UnixNano())
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	if code != wire.CodeOK {
		err := leanError(code, body)
		p.put(lc)
		return nil, true, err
	}
	r, err := wire.DecodeSignResponse(body)
	if err != nil {
		lc.c.Close()
		return nil, true, p.ioError(ctx, err)
	}
	sig = append([]byte(nil), r.Signature...)
	p.put(lc)
	return sig, true, nil
}
