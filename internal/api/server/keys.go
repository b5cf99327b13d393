package server

import (
	"context"
	"fmt"

	"github.com/palisade-project/palisade/internal/api"
	"github.com/palisade-project/palisade/internal/keys"
)

// KeyAudit returns the audit function of keys.Config: key events go to a's log, durable ones
// fsync'd before the operation is acknowledged, signatures buffered like µTPM key uses.
func KeyAudit(a *Audit) func(keys.AuditEvent, bool) error {
	return func(ev keys.AuditEvent, durable bool) error {
		e := Event{
			Event: ev.Event, UID: u32p(ev.Caller.UID), PID: ev.Caller.PID, Key: ev.Key,
			Owner: u32p(ev.Owner), Op: ev.Op,
		}
		if ev.Event == "key_sign" || ev.Event == "key_update" || ev.Event == "key_attest" {
			ok := ev.Err == nil
			e.OK = &ok
		}
		if ev.Err != nil {
			e.Error = ev.Err.Error()
		}
		if durable {
			return a.Log(e)
		}
		return a.LogBuffered(e)
	}
}

var errNoKeys = fmt.Errorf("%w: this daemon has no key service", errInvalid)

// keyCaller returns the caller of a key RPC and the key service.
func (s *Server) keyCaller(ctx context.Context) (keys.Caller, *keys.Service, error) {
	if s.keys == nil {
		return keys.Caller{}, nil, errNoKeys
	}
	p, err := caller(ctx)
	if err != nil {
		return keys.Caller{}, nil, err
	}
	return keys.Caller{UID: p.UID, GID: p.GID, Groups: p.Groups, PID: p.PID}, s.keys, nil
}

func keyInfoToProto(i keys.Info) *api.KeyInfo {
	k := &api.KeyInfo{
		Name: i.Name, Alg: string(i.Alg), PublicDer: i.PublicDER, CertChain: i.CertChain,
		OwnerUid: i.Owner, AllowUids: i.AllowUIDs, AllowGids: i.AllowGIDs, HasPin: i.HasPIN,
		Imported: i.Imported, SignerPal: i.SignerPAL[:], CreatedUnix: i.Created.Unix(),
	}
	if !i.Imported {
		k.KeygenPal = i.KeyGenPAL[:]
	}
	return k
}

// maxTries converts the wire's max_tries.
func maxTries(n uint32) (uint8, error) {
	if n > 255 {
		return 0, fmt.Errorf("%w: max_tries %d (max 255)", keys.ErrBadRequest, n)
	}
	return uint8(n), nil
}

// keyRPC runs op for the caller of a key RPC with the key service; every error, the
// caller's included, leaves as a gRPC status (toStatus).
func keyRPC[R any](ctx context.Context, s *Server, op func(keys.Caller, *keys.Service) (R, error)) (R, error) {
	var zero R
	c, ks, err := s.keyCaller(ctx)
	if err != nil {
		return zero, toStatus(err)
	}
	r, err := op(c, ks)
	if err != nil {
		return zero, toStatus(err)
	}
	return r, nil
}

// keyInfoRPC is keyRPC for the RPCs that answer with the key they created, read or changed.
func keyInfoRPC(ctx context.Context, s *Server, op func(keys.Caller, *keys.Service) (keys.Info, error)) (*api.KeyInfo, error) {
	return keyRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (*api.KeyInfo, error) {
		info, err := op(c, ks)
		if err != nil {
			return nil, err
		}
		return keyInfoToProto(info), nil
	})
}

// KeyCreate implements api.PalisadeServer.
func (s *Server) KeyCreate(ctx context.Context, req *api.KeyCreateRequest) (*api.KeyInfo, error) {
	return keyInfoRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (keys.Info, error) {
		tries, err := maxTries(req.MaxTries)
		if err != nil {
			return keys.Info{}, err
		}
		return ks.Create(ctx, c, keys.CreateOptions{
			Name: req.Name, Alg: keys.Alg(req.Alg), AllowUIDs: req.AllowUids, AllowGIDs: req.AllowGids,
			PIN: req.Pin, MaxTries: tries, SignerImage: nonEmpty(req.SignerImage),
		})
	})
}

// KeyImport implements api.PalisadeServer.
func (s *Server) KeyImport(ctx context.Context, req *api.KeyImportRequest) (*api.KeyInfo, error) {
	defer clear(req.PrivateKey)
	return keyInfoRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (keys.Info, error) {
		tries, err := maxTries(req.MaxTries)
		if err != nil {
			return keys.Info{}, err
		}
		return ks.Import(ctx, c, keys.ImportOptions{
			CreateOptions: keys.CreateOptions{
				Name: req.Name, AllowUIDs: req.AllowUids, AllowGIDs: req.AllowGids, PIN: req.Pin,
				MaxTries: tries, SignerImage: nonEmpty(req.SignerImage),
			},
			PKCS8: req.PrivateKey,
		})
	})
}

func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// KeyGet implements api.PalisadeServer.
func (s *Server) KeyGet(ctx context.Context, req *api.KeyGetRequest) (*api.KeyInfo, error) {
	return keyInfoRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (keys.Info, error) {
		return ks.Show(c, req.Name)
	})
}

// KeyList implements api.PalisadeServer.
func (s *Server) KeyList(ctx context.Context, _ *api.KeyListRequest) (*api.KeyListResponse, error) {
	return keyRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (*api.KeyListResponse, error) {
		l, err := ks.List(ctx, c)
		if err != nil {
			return nil, err
		}
		resp := &api.KeyListResponse{}
		for _, i := range l {
			resp.Keys = append(resp.Keys, keyInfoToProto(i))
		}
		return resp, nil
	})
}

// KeyDelete implements api.PalisadeServer.
func (s *Server) KeyDelete(ctx context.Context, req *api.KeyDeleteRequest) (*api.KeyDeleteResponse, error) {
	return keyRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (*api.KeyDeleteResponse, error) {
		return &api.KeyDeleteResponse{}, ks.Delete(ctx, c, req.Name)
	})
}

// KeySetAccess implements api.PalisadeServer.
func (s *Server) KeySetAccess(ctx context.Context, req *api.KeySetAccessRequest) (*api.KeyInfo, error) {
	return keyInfoRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (keys.Info, error) {
		return ks.SetAccess(ctx, c, req.Name, req.AllowUids, req.AllowGids)
	})
}

// KeySetPIN implements api.PalisadeServer.
func (s *Server) KeySetPIN(ctx context.Context, req *api.KeySetPINRequest) (*api.KeyInfo, error) {
	return keyInfoRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (keys.Info, error) {
		tries, err := maxTries(req.MaxTries)
		if err != nil {
			return keys.Info{}, err
		}
		return ks.SetPIN(ctx, c, req.Name, req.OldPin, req.NewPin, tries)
	})
}

// KeySetChain implements api.PalisadeServer.
func (s *Server) KeySetChain(ctx context.Context, req *api.KeySetChainRequest) (*api.KeyInfo, error) {
	return keyInfoRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (keys.Info, error) {
		return ks.SetChain(ctx, c, req.Name, req.CertChain)
	})
}

// KeySign implements api.PalisadeServer.
func (s *Server) KeySign(ctx context.Context, req *api.KeySignRequest) (*api.KeySignResponse, error) {
	return keyRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (*api.KeySignResponse, error) {
		if req.Scheme > 0xffff || req.Hash > 0xffff {
			return nil, fmt.Errorf("%w: scheme %#x or hash %#x is not a 16-bit TPM algorithm id", keys.ErrBadRequest, req.Scheme, req.Hash)
		}
		sig, err := ks.Sign(ctx, c, req.Name, keys.SignRequest{
			Scheme: uint16(req.Scheme), Hash: uint16(req.Hash), Digest: req.Digest, PIN: nonEmpty(req.Pin),
		})
		if err != nil {
			return nil, err
		}
		return &api.KeySignResponse{Signature: sig}, nil
	})
}

// KeyAttest implements api.PalisadeServer.
func (s *Server) KeyAttest(ctx context.Context, req *api.KeyAttestRequest) (*api.KeyAttestResponse, error) {
	return keyRPC(ctx, s, func(c keys.Caller, ks *keys.Service) (*api.KeyAttestResponse, error) {
		ev, err := ks.Attest(ctx, c, req.Name, req.Nonce)
		if err != nil {
			return nil, err
		}
		return &api.KeyAttestResponse{Evidence: ev}, nil
	})
}
