package tpm

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/palisade-project/palisade/internal/atomicfile"

	"github.com/google/go-tpm/tpm2"
)

const masterSecretSize = 32

// sealedMaster is the persisted sealed object (file "master.sealed" in the state dir).
type sealedMaster struct {
	Public  []byte `cbor:"1,keyasint"` // TPM2B_PUBLIC
	Private []byte `cbor:"2,keyasint"` // TPM2B_PRIVATE
}

// akTemplate is a restricted ECDSA P-256 signing key: the TPM signs only TPM-generated
// structures (quotes) with it, never an arbitrary digest, so a quote cannot be forged with it.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
		Restricted: true, SignEncrypt: true, NoDA: true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		// The unique field makes the primary key Palisade's own, distinct from other AKs
		// created from the same template under the same endorsement seed.
		X: tpm2.TPM2BECCParameter{Buffer: []byte("palisade.ak.v1")},
	}),
}

// masterSecret unseals the master secret from the state dir, or creates and seals one on
// first run. The PCR must hold exactly the visor measurement (one extend after reset).
//
// The sealed object's policy says which mode it was made in: PolicyPCR of this visor's
// measurement (plain), or PolicyAuthorize by cfg.Authority (authorized). A plain object opened
// with an authority configured is resealed in authorized mode (same secret), so an existing
// installation adopts visor authorizations without losing its sealed data.
func (r *Root) masterSecret(cfg Config) ([]byte, error) {
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(r.tpm)
	if err != nil {
		return nil, tpmFailure("create SRK", err)
	}
	defer tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(r.tpm)
	srkPub, err := srk.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: SRK public: %w", err)
	}
	parent := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
	path := filepath.Join(cfg.StateDir, "master.sealed")
	plain, err := r.masterPolicy()
	if err != nil {
		return nil, fmt.Errorf("tpm: master secret policy: %w", err)
	}
	var authorized []byte
	if cfg.Authority != nil {
		if authorized, err = authorizedPolicy(cfg.Authority); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		secret := make([]byte, masterSecretSize)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("tpm: master secret: %w", err)
		}
		policy := plain
		if authorized != nil {
			policy = authorized
		}
		if err := r.sealMaster(parent, path, secret, policy); err != nil {
			return nil, err
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: read sealed master secret: %w", err)
	}
	var sm sealedMaster
	if err := decMode.Unmarshal(b, &sm); err != nil {
		return nil, fmt.Errorf("tpm: %s: %w sealed master secret: %w", path, ErrMalformed, err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](sm.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm: %s: %w sealed master secret: public: %w", path, ErrMalformed, err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](sm.Private)
	if err != nil {
		return nil, fmt.Errorf("tpm: %s: %w sealed master secret: private: %w", path, ErrMalformed, err)
	}
	pubArea, err := pub.Contents()
	if err != nil {
		return nil, fmt.Errorf("tpm: %s: %w sealed master secret: public: %w", path, ErrMalformed, err)
	}
	isAuthorized := authorized != nil && bytes.Equal(pubArea.AuthPolicy.Buffer, authorized)
	var auth *Authorization
	if isAuthorized {
		if auth, err = r.authorizationFor(cfg); err != nil {
			return nil, err
		}
	} else if !bytes.Equal(pubArea.AuthPolicy.Buffer, plain) && cfg.Authority != nil {
		// Neither this visor's PCR policy nor this authority's: either another visor sealed
		// it in plain mode, or another administrator key is configured.
		return nil, fmt.Errorf("%w: %s is sealed neither to this visor's PCR policy nor to PolicyAuthorize by the configured administrator key (%w)",
			ErrPolicy, path, ErrAuthority)
	}
	obj, err := tpm2.Load{ParentHandle: parent, InPrivate: *priv, InPublic: *pub}.Execute(r.tpm)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCBinding) {
			// The SRK (from the owner seed) cannot check the object: another TPM, or the
			// owner hierarchy was cleared since the master secret was sealed.
			return nil, fmt.Errorf("tpm: load sealed master secret: %s was sealed under another TPM's or owner's storage key: %w", path, err)
		}
		return nil, tpmFailure("load sealed master secret", err)
	}
	defer tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(r.tpm)
	// The session is salted to the SRK and encrypts the response, so the secret does not
	// cross the bus (or the swtpm socket) in clear.
	sess, closeSess, err := tpm2.PolicySession(r.tpm, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(srk.ObjectHandle, *srkPub), tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, tpmFailure("policy session", err)
	}
	defer closeSess()
	if isAuthorized {
		if err := r.authorizeSession(sess, cfg.Authority, auth); err != nil {
			return nil, err
		}
	} else if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: r.pcrSelection()}).Execute(r.tpm); err != nil {
		return nil, fmt.Errorf("tpm: PolicyPCR: %w", err)
	}
	u, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: sess}}.Execute(r.tpm)
	if errors.Is(err, tpm2.TPMRCPolicyFail) {
		return nil, fmt.Errorf("%w: PCR %d = %x after measuring visor %x; %s was sealed by another visor executable or configuration (TPM: %w)",
			ErrPolicy, r.pcr, Replay(r.events, r.pcr), r.visor, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm: unseal master secret: %w", err)
	}
	if len(u.OutData.Buffer) != masterSecretSize {
		return nil, fmt.Errorf("tpm: unsealed master secret has %d bytes, want %d", len(u.OutData.Buffer), masterSecretSize)
	}
	if authorized != nil && !isAuthorized {
		if err := r.sealMaster(parent, path, u.OutData.Buffer, authorized); err != nil {
			return nil, fmt.Errorf("tpm: reseal master secret under the administrator key: %w", err)
		}
	}
	return u.OutData.Buffer, nil
}

// masterPolicy is the PolicyPCR digest for the current value of the visor PCR, computed from
// the event log (not read back from the TPM).
func (r *Root) masterPolicy() ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	v := Replay(r.events, r.pcr)
	pcrDigest := sha256Sum(v[:])
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest}, Pcrs: r.pcrSelection()}).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// sealMaster seals secret under policy (no UserWithAuth: only the policy authorises Unseal)
// and persists the object, replacing any previous one atomically.
func (r *Root) sealMaster(parent tpm2.AuthHandle, path string, secret, policy []byte) error {
	cr, err := tpm2.Create{
		ParentHandle: parent,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret})}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			// No UserWithAuth: only the PCR policy authorises Unseal.
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		}),
	}.Execute(r.tpm)
	if err != nil {
		return tpmFailure("seal master secret", err)
	}
	b, err := encMode.Marshal(sealedMaster{Public: tpm2.Marshal(cr.OutPublic), Private: tpm2.Marshal(cr.OutPrivate)})
	if err != nil {
		return fmt.Errorf("tpm: encode sealed master secret: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("tpm: persist sealed master secret: %w", err)
	}
	return nil
}

// loadAK recreates the attestation key: a primary key under the endorsement hierarchy, so the
// same TPM always yields the same AK and nothing needs persisting.
func (r *Root) loadAK() error {
	ak, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(akTemplate)}.Execute(r.tpm)
	if err != nil {
		return tpmFailure("create attestation key", err)
	}
	pub, err := ak.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("tpm: attestation key public: %w", err)
	}
	r.ak = tpm2.NamedHandle{Handle: ak.ObjectHandle, Name: ak.Name}
	r.akPublic = tpm2.Marshal(pub)
	return nil
}

// EK certificate NV indices (TCG EK Credential Profile): RSA 2048, ECC P-256, ECC P-384.
var ekCertIndices = []tpm2.TPMHandle{0x01c00002, 0x01c0000a, 0x01c00016}

// readEKCert returns the first EK certificate found in NV, or nil when there is none.
func (r *Root) readEKCert() []byte {
	for _, idx := range ekCertIndices {
		if c, err := r.readNVCert(idx); err == nil {
			return c
		}
	}
	return nil
}

// ErrEKChain: the configured EK chain does not lead from the TPM's EK certificate upward.
var ErrEKChain = errors.New("tpm: EK certificate chain")

// checkEKChain checks a configured chain against the EK certificate read from NV: each
// certificate must have signed the one before it, so a verifier holding only the root can
// follow root → chain → EK certificate. A chain without an EK certificate is a
// misconfiguration, not something to send.
func checkEKChain(ekDER []byte, chain [][]byte) error {
	if len(chain) == 0 {
		return nil
	}
	if ekDER == nil {
		return fmt.Errorf("%w: a chain is configured but the TPM holds no EK certificate (NV %#x, %#x, %#x)",
			ErrEKChain, uint32(ekCertIndices[0]), uint32(ekCertIndices[1]), uint32(ekCertIndices[2]))
	}
	if len(chain) > maxChain {
		return fmt.Errorf("%w: %d certificates (max %d)", ErrEKChain, len(chain), maxChain)
	}
	child, err := x509.ParseCertificate(ekDER)
	if err != nil {
		return fmt.Errorf("%w: EK certificate from NV: %w", ErrEKChain, err)
	}
	for i, der := range chain {
		if len(der) > maxBlob {
			return fmt.Errorf("%w: certificate %d has %d bytes (max %d)", ErrEKChain, i+1, len(der), maxBlob)
		}
		parent, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("%w: certificate %d: %w", ErrEKChain, i+1, err)
		}
		if err := child.CheckSignatureFrom(parent); err != nil {
			return fmt.Errorf("%w: certificate %d (%s) did not issue %s: %w", ErrEKChain, i+1,
				parent.Subject, certName(child, i), err)
		}
		child = parent
	}
	return nil
}

func certName(c *x509.Certificate, i int) string {
	if i == 0 {
		return "the EK certificate (issuer " + c.Issuer.String() + ")"
	}
	return fmt.Sprintf("certificate %d (%s)", i, c.Subject)
}

func (r *Root) readNVCert(idx tpm2.TPMHandle) ([]byte, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(r.tpm)
	if err != nil {
		return nil, err
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	const chunk = 512 // every TPM's NV buffer holds at least this much
	var data []byte
	for off := 0; off < int(pub.DataSize); off += chunk {
		n := min(chunk, int(pub.DataSize)-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: idx, Name: rp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(r.tpm)
		if err != nil {
			return nil, err
		}
		data = append(data, rsp.Data.Buffer...)
	}
	// NV areas are often larger than the certificate: keep exactly one DER element.
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("EK certificate at NV %#x: %w", uint32(idx), err)
	}
	return raw.FullBytes, nil
}
