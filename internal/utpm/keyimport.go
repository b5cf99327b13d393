package utpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
)

// KeyImport seals an existing private key, PKCS#8 DER, as a key blob under p, as KeyCreate does
// for a key it generates, and returns the blob, the public key (DER SubjectPublicKeyInfo) and
// the key's algorithm. It is not an operation of the PAL ABI: palisaded's key service calls it
// to migrate a key into Palisade (`palisade key import`), on a µTPM whose measurement names the
// importer, so that nothing mistakes the key for one that never left a µTPM. Keys of other
// types or sizes than KeyCreate's → ErrUnsupported; a key that does not parse → ErrInvalid.
func (t *TPM) KeyImport(pkcs8 []byte, p Policy) (blob, pub []byte, alg KeyAlg, err error) {
	defer func() {
		if !t.audited("key-import", &err) {
			blob, pub, alg = nil, nil, 0
		}
	}()
	k, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("key import: %w: %v", ErrInvalid, err)
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve == elliptic.P256() {
			alg = KeyECDSAP256
		}
	case ed25519.PrivateKey:
		alg = KeyEd25519
	case *rsa.PrivateKey:
		switch k.N.BitLen() {
		case 2048:
			alg = KeyRSA2048
		case 3072:
			alg = KeyRSA3072
		}
	}
	if alg == 0 {
		return nil, nil, 0, fmt.Errorf("key import: %T of this size: %w", k, ErrUnsupported)
	}
	// Re-encoded, so that the blob holds exactly what KeyCreate would have written.
	if blob, pub, err = t.sealKey("key import", alg, k.(crypto.Signer), p); err != nil {
		return nil, nil, 0, err
	}
	return blob, pub, alg, nil
}
