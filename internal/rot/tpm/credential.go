package tpm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Credential activation binds the AK to the TPM whose EK certificate a verifier trusts
// (docs/attestation.md §5): the verifier encrypts a secret to the EK, bound to the AK's name
// (TPM2_MakeCredential, done in software by attest.NewEnrollment); only that TPM, with that AK
// loaded, can recover it (TPM2_ActivateCredential, Root.ActivateCredential).

// ErrNoEK: the TPM has no EK certificate, or its EK is not the one the certificate names.
var ErrNoEK = errors.New("tpm: no usable endorsement key certificate")

// CredentialChallenge is what a verifier sends to enroll the AK.
type CredentialChallenge struct {
	IDObject  []byte `cbor:"1,keyasint"` // TPM2B_ID_OBJECT contents
	EncSecret []byte `cbor:"2,keyasint"` // TPM2B_ENCRYPTED_SECRET contents
}

// Marshal encodes c.
func (c *CredentialChallenge) Marshal() ([]byte, error) { return encMode.Marshal(c) }

// ParseCredentialChallenge decodes a challenge strictly.
func ParseCredentialChallenge(b []byte) (*CredentialChallenge, error) {
	var c CredentialChallenge
	if err := decMode.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: credential challenge: %w", ErrMalformed, err)
	}
	if len(c.IDObject) == 0 || len(c.EncSecret) == 0 || len(c.IDObject) > maxBlob || len(c.EncSecret) > maxBlob {
		return nil, fmt.Errorf("%w: credential challenge field sizes %d, %d", ErrMalformed, len(c.IDObject), len(c.EncSecret))
	}
	return &c, nil
}

// EKPublic is the TPMT_PUBLIC of the endorsement key that cert certifies, assuming the TCG
// default EK templates (RSA 2048 or ECC P-256, low range), which go-tpm's RSAEKTemplate and
// ECCEKTemplate are.
func EKPublic(cert *x509.Certificate) (*tpm2.TPMTPublic, error) {
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 {
			return nil, fmt.Errorf("%w: RSA EK of %d bits", ErrNoEK, k.N.BitLen())
		}
		pub := tpm2.RSAEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
		return &pub, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECC EK on %s (only the P-256 default template is supported)", ErrNoEK, k.Curve.Params().Name)
		}
		pt, err := k.Bytes() // 0x04 ‖ X ‖ Y
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoEK, err)
		}
		pub := tpm2.ECCEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: pt[33:65]},
		})
		return &pub, nil
	default:
		return nil, fmt.Errorf("%w: EK key type %T", ErrNoEK, cert.PublicKey)
	}
}

// ActivateCredential answers a verifier's enrollment challenge: the TPM recovers the secret only
// if it holds the EK the challenge was made for and the AK the challenge names.
func (r *Root) ActivateCredential(ctx context.Context, challenge []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := ParseCredentialChallenge(challenge)
	if err != nil {
		return nil, err
	}
	if r.ekCert == nil {
		return nil, fmt.Errorf("%w: none in TPM NV", ErrNoEK)
	}
	cert, err := x509.ParseCertificate(r.ekCert)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoEK, err)
	}
	want, err := EKPublic(cert)
	if err != nil {
		return nil, err
	}
	tmpl := tpm2.RSAEKTemplate
	if want.Type == tpm2.TPMAlgECC {
		tmpl = tpm2.ECCEKTemplate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	ek, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tmpl)}.Execute(r.tpm)
	if err != nil {
		return nil, tpmFailure("create EK", err)
	}
	defer tpm2.FlushContext{FlushHandle: ek.ObjectHandle}.Execute(r.tpm)
	// The name covers the whole public area: equal names, same key and template.
	if wn, err := tpm2.ObjectName(want); err != nil || !bytes.Equal(wn.Buffer, ek.Name.Buffer) {
		return nil, fmt.Errorf("%w: the EK certificate's key is not this TPM's default-template EK", ErrNoEK)
	}
	// The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT), with the (empty) endorsement auth.
	ekAuth := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, n tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: h, NonceTPM: n}.Execute(t)
		return err
	})
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: r.ak.Handle, Name: r.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: ek.ObjectHandle, Name: ek.Name, Auth: ekAuth},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: c.IDObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: c.EncSecret},
	}.Execute(r.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}
