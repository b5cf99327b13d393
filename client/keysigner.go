package client

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	"github.com/palisade-project/palisade/internal/api"
)

// Errors of the key RPCs (docs/keys.md §7), besides ErrNotFound, ErrPermission and ErrInvalid.
var (
	ErrKeyExists      = errors.New("palisade: a key of that name exists")
	ErrPINRequired    = errors.New("palisade: the key needs a PIN")
	ErrPINIncorrect   = errors.New("palisade: incorrect PIN")
	ErrLocked         = errors.New("palisade: the key is locked after too many incorrect PINs")
	ErrRefused        = errors.New("palisade: the signing PAL refused")
	ErrKeyUnavailable = errors.New("palisade: the key cannot be used")
)

// Key algorithms of KeyCreateOptions.Alg.
const (
	AlgECDSAP256 = "ecdsa-p256"
	AlgEd25519   = "ed25519"
	AlgRSA2048   = "rsa-2048"
	AlgRSA3072   = "rsa-3072"
)

// KeyInfo describes a named key held by the daemon.
type KeyInfo struct {
	Name      string           // the key's name, unique in the daemon
	Alg       string           // AlgECDSAP256, AlgEd25519, AlgRSA2048 or AlgRSA3072
	PublicDER []byte           // PKIX SubjectPublicKeyInfo
	Public    crypto.PublicKey // PublicDER parsed
	CertChain [][]byte         // DER, leaf first; may be empty
	Owner     uint32           // uid that created or imported the key
	AllowUIDs []uint32         // uids allowed to sign besides the owner
	AllowGIDs []uint32         // gids whose members may sign
	HasPIN    bool             // every signature needs the PIN
	Imported  bool             // imported, not generated in a PAL
	KeyGenPAL [32]byte         // measurement of the key-generation PAL; zero if imported
	SignerPAL [32]byte         // measurement of the signing PAL the key is bound to
	Created   time.Time        // UTC, second precision
}

func keyInfoFromProto(p *api.KeyInfo) (KeyInfo, error) {
	k := KeyInfo{
		Name: p.Name, Alg: p.Alg, PublicDER: p.PublicDer, CertChain: p.CertChain, Owner: p.OwnerUid,
		AllowUIDs: p.AllowUids, AllowGIDs: p.AllowGids, HasPIN: p.HasPin, Imported: p.Imported,
		Created: time.Unix(p.CreatedUnix, 0).UTC(),
	}
	copy(k.KeyGenPAL[:], p.KeygenPal)
	copy(k.SignerPAL[:], p.SignerPal)
	pub, err := x509.ParsePKIXPublicKey(p.PublicDer)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("palisade: key %q: public key: %w", p.Name, err)
	}
	k.Public = pub
	return k, nil
}

// KeyCreateOptions describe a new key.
type KeyCreateOptions struct {
	Name      string   // 1..128 bytes of [A-Za-z0-9._-], not starting with '.' or '-'
	Alg       string   // AlgECDSAP256 (default), AlgEd25519, AlgRSA2048, AlgRSA3072
	AllowUIDs []uint32 // uids allowed to sign besides the owner
	AllowGIDs []uint32 // gids whose members may sign
	PIN       []byte   // empty: no PIN
	MaxTries  uint32   // incorrect PINs before lockout; 0: the daemon's default (5)
	// SignerImage is a signing PAL of your own to bind the key to; nil: the shipped one.
	SignerImage []byte
}

// KeyCreate has the daemon generate a key in its key-generation PAL, owned by the caller.
func (c *Client) KeyCreate(ctx context.Context, o KeyCreateOptions) (KeyInfo, error) {
	if o.Alg == "" {
		o.Alg = AlgECDSAP256
	}
	p, err := c.rpc.KeyCreate(ctx, &api.KeyCreateRequest{
		Name: o.Name, Alg: o.Alg, AllowUids: o.AllowUIDs, AllowGids: o.AllowGIDs, Pin: o.PIN,
		MaxTries: o.MaxTries, SignerImage: o.SignerImage,
	})
	return c.keyInfo(p, err)
}

// KeyImport migrates an existing private key (PKCS#8 DER) into the daemon, with the access,
// PIN and signing PAL of o (o.Alg is ignored). The key is marked imported wherever it shows.
func (c *Client) KeyImport(ctx context.Context, pkcs8 []byte, o KeyCreateOptions) (KeyInfo, error) {
	p, err := c.rpc.KeyImport(ctx, &api.KeyImportRequest{
		Name: o.Name, PrivateKey: pkcs8, AllowUids: o.AllowUIDs, AllowGids: o.AllowGIDs, Pin: o.PIN,
		MaxTries: o.MaxTries, SignerImage: o.SignerImage,
	})
	return c.keyInfo(p, err)
}

func (c *Client) keyInfo(p *api.KeyInfo, err error) (KeyInfo, error) {
	if err != nil {
		return KeyInfo{}, c.fromStatus(err)
	}
	return keyInfoFromProto(p)
}

// KeyGet returns the key name, if the caller may use or manage it.
func (c *Client) KeyGet(ctx context.Context, name string) (KeyInfo, error) {
	p, err := c.rpc.KeyGet(ctx, &api.KeyGetRequest{Name: name})
	return c.keyInfo(p, err)
}

// KeyList returns the keys the caller may use or manage, sorted by name.
func (c *Client) KeyList(ctx context.Context) ([]KeyInfo, error) {
	resp, err := c.rpc.KeyList(ctx, &api.KeyListRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	out := make([]KeyInfo, 0, len(resp.Keys))
	for _, p := range resp.Keys {
		k, err := keyInfoFromProto(p)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// KeyDelete deletes the key name (its owner or an admin).
func (c *Client) KeyDelete(ctx context.Context, name string) error {
	_, err := c.rpc.KeyDelete(ctx, &api.KeyDeleteRequest{Name: name})
	return c.fromStatus(err)
}

// KeySetAccess replaces the uids and gids allowed to sign with the key name.
func (c *Client) KeySetAccess(ctx context.Context, name string, uids, gids []uint32) (KeyInfo, error) {
	p, err := c.rpc.KeySetAccess(ctx, &api.KeySetAccessRequest{Name: name, AllowUids: uids, AllowGids: gids})
	return c.keyInfo(p, err)
}

// KeySetPIN sets, changes (oldPIN is the current one) or, with newPIN empty, removes the PIN.
func (c *Client) KeySetPIN(ctx context.Context, name string, oldPIN, newPIN []byte, maxTries uint32) (KeyInfo, error) {
	p, err := c.rpc.KeySetPIN(ctx, &api.KeySetPINRequest{Name: name, OldPin: oldPIN, NewPin: newPIN, MaxTries: maxTries})
	return c.keyInfo(p, err)
}

// KeySetChain stores the key's certificate chain (DER, leaf first; the leaf must be for the
// key's public key). An empty chain removes it.
func (c *Client) KeySetChain(ctx context.Context, name string, chain [][]byte) (KeyInfo, error) {
	p, err := c.rpc.KeySetChain(ctx, &api.KeySetChainRequest{Name: name, CertChain: chain})
	return c.keyInfo(p, err)
}

// KeyAttest returns the key-attestation bundle of name, fresh for nonce (1..64 bytes).
func (c *Client) KeyAttest(ctx context.Context, name string, nonce []byte) ([]byte, error) {
	resp, err := c.rpc.KeyAttest(ctx, &api.KeyAttestRequest{Name: name, Nonce: nonce})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return resp.Evidence, nil
}

// KeySign signs digest with the key name. scheme and hash are the ids of package signreq.
// Like every call, it waits for a restarting daemon up to ReconnectWait, never past ctx.
func (c *Client) KeySign(ctx context.Context, name string, scheme, hash uint16, digest, pin []byte) ([]byte, error) {
	if sig, ok, err := c.leanKeySign(ctx, name, scheme, hash, digest, pin); ok { // the hot path (lean_keys.go)
		return sig, err
	}
	resp, err := c.rpc.KeySign(ctx, &api.KeySignRequest{
		Name: name, Scheme: uint32(scheme), Hash: uint32(hash), Digest: digest, Pin: pin,
	}, grpc.WaitForReady(true))
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return resp.Signature, nil
}

// KeySigner is a crypto.Signer backed by a named key of the daemon: it plugs into crypto/tls
// (tls.Certificate{PrivateKey: s}), crypto/x509 (CreateCertificate, CreateCertificateRequest)
// and x/crypto/ssh. It survives daemon restarts: a signature waits for the daemon to come
// back up to ReconnectWait, or Timeout if that is shorter.
type KeySigner struct {
	c    *Client
	own  bool // c was dialled by NewKeySigner and is closed by Close
	info KeyInfo
	// PIN is sent with every signature, for a key that has one.
	PIN []byte
	// Timeout bounds each Sign, including any wait for a restarting daemon (default 30 s).
	Timeout time.Duration
}

// DefaultKeySignTimeout is KeySigner.Timeout's default.
const DefaultKeySignTimeout = 30 * time.Second

// KeySigner returns a signer for the key name, which the caller must be allowed to use.
func (c *Client) KeySigner(ctx context.Context, name string) (*KeySigner, error) {
	info, err := c.KeyGet(ctx, name)
	if err != nil {
		return nil, err
	}
	return &KeySigner{c: c, info: info, Timeout: DefaultKeySignTimeout}, nil
}

// NewKeySigner connects to the daemon at SocketPath() and returns a signer for the key name;
// Close closes its connection.
func NewKeySigner(ctx context.Context, name string) (*KeySigner, error) {
	c, err := Dial(ctx, "")
	if err != nil {
		return nil, err
	}
	s, err := c.KeySigner(ctx, name)
	if err != nil {
		c.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

// Info returns the key as it was when the signer was made (its chain included).
func (s *KeySigner) Info() KeyInfo { return s.info }

// Public implements crypto.Signer.
func (s *KeySigner) Public() crypto.PublicKey { return s.info.Public }

// Sign implements crypto.Signer. rand is ignored: randomness comes from the µTPM.
func (s *KeySigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context.
func (s *KeySigner) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	req, err := signRequest(s.info.Public, digest, opts)
	if err != nil {
		return nil, err
	}
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	sig, err := s.c.KeySign(ctx, s.info.Name, req.Scheme, req.Hash, req.Digest, s.PIN)
	if err != nil {
		return nil, fmt.Errorf("sign with key %q: %w", s.info.Name, err)
	}
	return sig, nil
}

// Close closes the connection if NewKeySigner made it.
func (s *KeySigner) Close() error {
	if s.own {
		return s.c.Close()
	}
	return nil
}
