package lean

import (
	"context"
	"errors"

	"github.com/palisade-project/palisade/internal/keys"
	"github.com/palisade-project/palisade/internal/lean/wire"
)

// Creator is what key-create needs of the key service: its Create, the one the gRPC KeyCreate
// calls, which checks the name and algorithm, refuses an existing name, makes the caller the
// owner, audits (key_create) and fsyncs the store before it returns. A Config.Keys that is not
// a Creator (a signer-only front end) answers key-create with CodeNotSupported.
type Creator interface {
	Create(ctx context.Context, c keys.Caller, o keys.CreateOptions) (keys.Info, error)
}

// keyCreate serves op 0x06: the key is created without a PIN or shares, as the caller's own.
// The response is the new key's key-info.
func (c *conn) keyCreate(ctx context.Context, body, out []byte) (payload []byte, code wire.Code, msg string, derr error) {
	req, err := wire.DecodeKeyCreateRequest(body)
	if err != nil {
		return nil, 0, "", err
	}
	if c.s.cfg.Keys == nil {
		return nil, wire.CodeNoKeys, "this palisaded serves no keys", nil
	}
	cr, ok := c.s.cfg.Keys.(Creator)
	if !ok {
		return nil, wire.CodeNotSupported, "this palisaded's key front end does not create keys", nil
	}
	info, err := cr.Create(ctx, c.caller, keys.CreateOptions{Name: req.Name, Alg: keys.Alg(req.Alg)})
	if err != nil {
		return nil, createCode(err), err.Error(), nil
	}
	return keyInfoResponse(info).Append(out), 0, "", nil
}

// createCode maps an error of keys.Service.Create to its code: KEY_EXISTS, or those of the
// other key operations (INVALID for a name or algorithm the service refuses).
func createCode(err error) wire.Code {
	if errors.Is(err, keys.ErrExists) {
		return wire.CodeKeyExists
	}
	return keyCode(err)
}

// keyInfoResponse is the key-info body of a key.
func keyInfoResponse(info keys.Info) wire.KeyInfoResponse {
	var flags uint32
	if info.HasPIN {
		flags |= wire.KeyHasPIN
	}
	if info.Imported {
		flags |= wire.KeyImported
	}
	chain := info.CertChain
	if len(chain) > wire.MaxCerts {
		chain = chain[:wire.MaxCerts]
	}
	return wire.KeyInfoResponse{Alg: string(info.Alg), Flags: flags, PublicDER: info.PublicDER, CertChain: chain}
}
