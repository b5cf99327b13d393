package utpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"
)

// MaxEdDSAMessage bounds the message of a pure Ed25519 signature (docs/abi.md §3).
const MaxEdDSAMessage = 4 << 10

// KeyCreate generates a key of algorithm alg inside the µTPM and returns it sealed under p as a
// key blob (plaintext alg ‖ PKCS#8 DER, docs/formats.md §2) with its public half as DER
// SubjectPublicKeyInfo. The private key is never returned by any API: only KeySign uses it.
func (t *TPM) KeyCreate(alg KeyAlg, p Policy) (blob, pub []byte, err error) {
	defer func() {
		if !t.audited("key-create", &err) {
			blob, pub = nil, nil
		}
	}()
	var key crypto.Signer
	switch alg {
	case KeyECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), t.p.rand)
	case KeyEd25519:
		_, key, err = ed25519.GenerateKey(t.p.rand)
	case KeyRSA2048:
		key, err = rsa.GenerateKey(t.p.rand, 2048)
	case KeyRSA3072:
		key, err = rsa.GenerateKey(t.p.rand, 3072)
	default:
		return nil, nil, fmt.Errorf("key create: algorithm %d: %w", alg, ErrUnsupported)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("key create: generate: %w: %w", ErrInternal, err)
	}
	return t.sealKey("key create", alg, key, p)
}

// sealKey seals key as a key blob under p (plaintext alg ‖ PKCS#8 DER, docs/formats.md §2)
// and returns it with the public key, DER SubjectPublicKeyInfo: the end of KeyCreate and
// KeyImport, whose errors op prefixes. The plaintext copies are cleared.
func (t *TPM) sealKey(op string, alg KeyAlg, key crypto.Signer, p Policy) (blob, pub []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: encode: %w: %w", op, ErrInternal, err)
	}
	pub, err = x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		clear(der)
		return nil, nil, fmt.Errorf("%s: encode public: %w: %w", op, ErrInternal, err)
	}
	plain := make([]byte, 1+len(der))
	plain[0] = byte(alg)
	copy(plain[1:], der)
	clear(der)
	blob, err = t.seal(blobKey, plain, p)
	clear(plain)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	return blob, pub, nil
}

// KeySign signs digest with the key in blob. The blob's policy is checked on every call, as
// for Unseal (a data blob → ErrWrongType). Schemes, hashes and lengths follow docs/abi.md §3:
// a scheme or hash that does not fit the key → ErrUnsupported, a digest whose length does not
// match the hash (or, with HashNone, does not fit the padding or exceeds 64 bytes) → ErrInvalid.
func (t *TPM) KeySign(blob []byte, s Scheme, h Hash, digest []byte) (sig []byte, err error) {
	defer func() {
		if !t.audited("key-sign", &err) {
			sig = nil
		}
	}()
	key, err := t.signingKey(blob)
	if err != nil {
		return nil, fmt.Errorf("key sign: %w", err)
	}
	if sig, err = t.sign(key, s, h, digest); err != nil {
		return nil, fmt.Errorf("key sign: %w", err)
	}
	return sig, nil
}

// signingKey checks blob's policy and returns its private key, from the cache when this exact
// blob was authenticated before.
func (t *TPM) signingKey(blob []byte) (crypto.Signer, error) {
	h, err := t.check(blob)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256(blob)
	if k := t.p.keys.get(id); k != nil {
		return k, nil
	}
	plain, err := t.p.open(&h, blob)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	if h.typ != blobKey {
		return nil, fmt.Errorf("data blob: %w", ErrWrongType)
	}
	key, err := parseKey(plain)
	if err != nil {
		return nil, err
	}
	t.p.keys.put(id, key)
	return key, nil
}

// parseKey decodes the plaintext of a key blob. The blob was authenticated, so any mismatch is
// a bug of this package, not an attack.
func parseKey(plain []byte) (crypto.Signer, error) {
	if len(plain) < 1 {
		return nil, fmt.Errorf("empty key blob: %w", ErrInternal)
	}
	k, err := x509.ParsePKCS8PrivateKey(plain[1:])
	if err != nil {
		return nil, fmt.Errorf("parse key: %w: %w", ErrInternal, err)
	}
	ok := false
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		ok = KeyAlg(plain[0]) == KeyECDSAP256 && k.Curve == elliptic.P256()
	case ed25519.PrivateKey:
		ok = KeyAlg(plain[0]) == KeyEd25519
	case *rsa.PrivateKey:
		ok = KeyAlg(plain[0]) == KeyRSA2048 && k.N.BitLen() == 2048 ||
			KeyAlg(plain[0]) == KeyRSA3072 && k.N.BitLen() == 3072
	}
	if !ok {
		return nil, fmt.Errorf("key blob of algorithm %d holds %T: %w", plain[0], k, ErrInternal)
	}
	return k.(crypto.Signer), nil
}

func cryptoHash(h Hash) (crypto.Hash, bool) {
	switch h {
	case HashSHA256:
		return crypto.SHA256, true
	case HashSHA384:
		return crypto.SHA384, true
	case HashSHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

func (t *TPM) sign(key crypto.Signer, s Scheme, h Hash, digest []byte) ([]byte, error) {
	if _, ok := key.(ed25519.PrivateKey); ok {
		if s != SchemeEdDSA || h != HashNone {
			return nil, fmt.Errorf("Ed25519 key with scheme %#x hash %#x: %w", s, h, ErrUnsupported)
		}
		if len(digest) > MaxEdDSAMessage {
			return nil, fmt.Errorf("EdDSA message of %d bytes: %w", len(digest), ErrTooLarge)
		}
		return ed25519.Sign(key.(ed25519.PrivateKey), digest), nil
	}
	if h == HashNone {
		switch key := key.(type) {
		case *rsa.PrivateKey:
			if s == SchemeRSASSA {
				return signRSARaw(t, key, digest)
			}
		case *ecdsa.PrivateKey:
			if s == SchemeECDSA {
				return signECDSARaw(t, key, digest)
			}
		}
	}
	ch, ok := cryptoHash(h)
	if !ok {
		return nil, fmt.Errorf("hash %#x: %w", h, ErrUnsupported)
	}
	var opts crypto.SignerOpts = ch
	switch key.(type) {
	case *ecdsa.PrivateKey:
		if s != SchemeECDSA {
			return nil, fmt.Errorf("ECDSA key with scheme %#x: %w", s, ErrUnsupported)
		}
	case *rsa.PrivateKey:
		switch s {
		case SchemeRSASSA:
		case SchemeRSAPSS:
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: ch}
		default:
			return nil, fmt.Errorf("RSA key with scheme %#x: %w", s, ErrUnsupported)
		}
	default:
		return nil, fmt.Errorf("key type %T: %w", key, ErrInternal)
	}
	if len(digest) != ch.Size() {
		return nil, fmt.Errorf("digest of %d bytes for %v: %w", len(digest), ch, ErrInvalid)
	}
	// ECDSA Sign yields the ASN.1 DER signature; RSA Sign dispatches on opts (PKCS#1 v1.5 or PSS).
	sig, err := key.Sign(t.p.rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("sign: %w: %w", ErrInternal, err)
	}
	return sig, nil
}

// signRSARaw is RSASSA with HashNone (docs/abi.md §3): PKCS#1 v1.5 block type 1 padding of
// data as given, which is what PKCS#11's CKM_RSA_PKCS signs. The caller encodes the DigestInfo
// (of any hash: SHA-1, SHA-224…) or, as TLS 1.0 did, none. It gives the caller nothing it could
// not get with a SHA-2 hash id: whoever may use the key may already sign any message. data must
// leave room for the padding: 1 to k−11 bytes for a k-byte modulus (RFC 8017 §9.2).
func signRSARaw(t *TPM, key *rsa.PrivateKey, data []byte) ([]byte, error) {
	if len(data) == 0 || len(data) > key.Size()-11 {
		return nil, fmt.Errorf("RSASSA without hash: %d bytes for a %d-bit key (1..%d): %w",
			len(data), key.N.BitLen(), key.Size()-11, ErrInvalid)
	}
	sig, err := rsa.SignPKCS1v15(t.p.rand, key, crypto.Hash(0), data)
	if err != nil {
		return nil, fmt.Errorf("sign: %w: %w", ErrInternal, err)
	}
	return sig, nil
}

// signECDSARaw is ECDSA with HashNone (docs/abi.md §3): digest is a hash of any length (1 to 64
// bytes: SHA-1's 20, SHA-224's 28…), used as FIPS 186 says, its leftmost bits as wide as the
// curve's order. That is PKCS#11's CKM_ECDSA, which the caller hashes for. It gives the caller
// nothing new: every value it yields is one a 32-byte digest could have named.
func signECDSARaw(t *TPM, key *ecdsa.PrivateKey, digest []byte) ([]byte, error) {
	if len(digest) == 0 || len(digest) > 64 {
		return nil, fmt.Errorf("ECDSA without hash: digest of %d bytes (1..64): %w", len(digest), ErrInvalid)
	}
	sig, err := ecdsa.SignASN1(t.p.rand, key, digest)
	if err != nil {
		return nil, fmt.Errorf("sign: %w: %w", ErrInternal, err)
	}
	return sig, nil
}

// keyCache holds parsed private keys by SHA-256 of their (authenticated) blob, so that an RSA
// key is not re-parsed and re-validated on every signature. Policy is still checked per call.
type keyCache struct {
	mu sync.RWMutex
	m  map[[32]byte]crypto.Signer
}

const maxCachedKeys = 256

func (c *keyCache) get(id [32]byte) crypto.Signer {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[id]
}

func (c *keyCache) put(id [32]byte, k crypto.Signer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]crypto.Signer)
	}
	if len(c.m) >= maxCachedKeys {
		for old := range c.m { // evict an arbitrary entry: it is only a cache
			delete(c.m, old)
			break
		}
	}
	c.m[id] = k
}
