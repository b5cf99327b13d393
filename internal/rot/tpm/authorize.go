package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/utpm"
)

// Visor authorizations (docs/attestation.md §6.1): with an administrator key configured
// (Config.Authority), the master secret is sealed with TPM2_PolicyAuthorize by that key
// instead of PolicyPCR, and any visor whose PCR policy the administrator has signed unseals
// it. A new visor build then starts without resealing: the administrator signs its policy.

// visorPolicyRef qualifies every visor authorization, so that a signature the administrator
// key makes for another purpose never authorizes a visor.
const visorPolicyRef = "palisade.visor.v1"

// authorizationsDir is where Open also looks for authorizations, one file each.
const authorizationsDir = "authorizations"

// maxAuthorizationSize bounds an authorization file before it is parsed.
const maxAuthorizationSize = 1 << 10

// ErrAuthority: Config.Authority is not usable, or the sealed master secret is bound to
// another authority.
var ErrAuthority = errors.New("tpm: visor authority")

// Authorization is an administrator's approval of one visor measurement on one PCR: an ECDSA
// P-256 signature (r ‖ s, 32 bytes each) over SHA-256(VisorPolicy(visor, pcr) ‖
// "palisade.visor.v1"), which is what TPM2_VerifySignature checks before TPM2_PolicyAuthorize.
// Encoded as CBOR {1: pcr, 2: visor bstr(32), 3: signature bstr(64)}.
type Authorization struct {
	PCR       uint32      `cbor:"1,keyasint"`
	Visor     utpm.Digest `cbor:"2,keyasint"`
	Signature []byte      `cbor:"3,keyasint"`
}

// VisorPolicy is the PolicyPCR digest of the visor PCR (SHA-256 bank) holding exactly one
// extend of the visor measurement from zero: the state in which Open unseals the master
// secret. Computed offline, so an administrator can approve a build it has only measured.
func VisorPolicy(visor utpm.Digest, pcr int) ([]byte, error) {
	if pcr < 1 || pcr > 23 {
		return nil, fmt.Errorf("tpm: PCR %d out of range 1..23", pcr)
	}
	v := Replay([]Event{{PCR: uint32(pcr), Digest: visor}}, uint32(pcr))
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(uint(pcr)),
	}}}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: sha256Sum(v[:])}, Pcrs: sel}).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// approvalDigest is aHash of TPM2_PolicyAuthorize: H(approvedPolicy ‖ policyRef).
func approvalDigest(policy []byte) []byte {
	h := sha256.New()
	h.Write(policy)
	h.Write([]byte(visorPolicyRef))
	return h.Sum(nil)
}

// AuthorizeVisor signs an authorization for the visor measurement on pcr (0: DefaultPCR) with
// the administrator key (ECDSA P-256) and returns it encoded. Put it in the visor's
// Config.Authorizations or in STATE/authorizations/.
func AuthorizeVisor(admin crypto.Signer, visor utpm.Digest, pcr int) ([]byte, error) {
	if pcr == 0 {
		pcr = DefaultPCR
	}
	pub, ok := admin.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: the administrator key must be ECDSA P-256 (the TPM verifies it)", ErrAuthority)
	}
	policy, err := VisorPolicy(visor, pcr)
	if err != nil {
		return nil, err
	}
	der, err := admin.Sign(rand.Reader, approvalDigest(policy), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("tpm: sign visor authorization: %w", err)
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return nil, fmt.Errorf("tpm: sign visor authorization: %w", err)
	}
	rs := make([]byte, 64)
	sig.R.FillBytes(rs[:32])
	sig.S.FillBytes(rs[32:])
	return encMode.Marshal(Authorization{PCR: uint32(pcr), Visor: visor, Signature: rs})
}

// authorizationWire is Authorization as decoded: a byte array field would accept a shorter
// byte string.
type authorizationWire struct {
	PCR       uint32 `cbor:"1,keyasint"`
	Visor     []byte `cbor:"2,keyasint"`
	Signature []byte `cbor:"3,keyasint"`
}

// ParseAuthorization decodes an authorization strictly (exact field sizes, the one
// deterministic encoding). It checks no signature.
func ParseAuthorization(b []byte) (*Authorization, error) {
	if len(b) > maxAuthorizationSize {
		return nil, fmt.Errorf("%w authorization: %d bytes (max %d)", ErrMalformed, len(b), maxAuthorizationSize)
	}
	var w authorizationWire
	if err := decMode.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w authorization: %w", ErrMalformed, err)
	}
	if len(w.Visor) != 32 || len(w.Signature) != 64 || w.PCR < 1 || w.PCR > 23 {
		return nil, fmt.Errorf("%w authorization: fields", ErrMalformed)
	}
	a := &Authorization{PCR: w.PCR, Visor: utpm.Digest(w.Visor), Signature: w.Signature}
	if canon, err := encMode.Marshal(a); err != nil || !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w authorization: not in deterministic encoding", ErrMalformed)
	}
	return a, nil
}

// authorityPublic is the TPM public area of the administrator key, loaded with
// TPM2_LoadExternal (public part only) to verify authorizations. Its name, which the sealed
// object's policy commits to, depends only on the key.
func authorityPublic(k *ecdsa.PublicKey) (tpm2.TPMTPublic, error) {
	if k == nil || k.Curve != elliptic.P256() {
		return tpm2.TPMTPublic{}, fmt.Errorf("%w: the administrator key must be ECDSA P-256", ErrAuthority)
	}
	b, err := k.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil {
		return tpm2.TPMTPublic{}, fmt.Errorf("%w: %w", ErrAuthority, err)
	}
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{SignEncrypt: true, UserWithAuth: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: b[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: b[33:65]},
		}),
	}, nil
}

// authorizedPolicy is the sealed object's policy in authorized mode:
// PolicyAuthorize(keySign = name of the authority, policyRef).
func authorizedPolicy(k *ecdsa.PublicKey) ([]byte, error) {
	pub, err := authorityPublic(k)
	if err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthority, err)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyAuthorize{KeySign: *name, PolicyRef: tpm2.TPM2BDigest{Buffer: []byte(visorPolicyRef)}}).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// authorizationFor returns the authorization for this visor and PCR among cfg's and the state
// directory's, checked against the authority in software (the TPM checks it again).
func (r *Root) authorizationFor(cfg Config) (*Authorization, error) {
	raws := append([][]byte(nil), cfg.Authorizations...)
	dir := filepath.Join(cfg.StateDir, authorizationsDir)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("tpm: %w", err)
		}
		raws = append(raws, b)
	}
	policy, err := VisorPolicy(r.visor, int(r.pcr))
	if err != nil {
		return nil, err
	}
	digest := approvalDigest(policy)
	for _, raw := range raws {
		a, err := ParseAuthorization(raw)
		if err != nil || a.Visor != r.visor || a.PCR != r.pcr {
			continue
		}
		rr, ss := new(big.Int).SetBytes(a.Signature[:32]), new(big.Int).SetBytes(a.Signature[32:])
		if ecdsa.Verify(cfg.Authority, digest, rr, ss) {
			return a, nil
		}
	}
	return nil, fmt.Errorf("%w: no authorization by the administrator key for visor %x on PCR %d (of %d offered)",
		ErrPolicy, r.visor, r.pcr, len(raws))
}

// authorizeSession runs, in policy session sess, what the authorized master secret's policy
// demands: PolicyPCR (the session's digest becomes this visor's policy, if the PCR holds it),
// then PolicyAuthorize with a ticket from TPM2_VerifySignature of the administrator's
// signature over that policy.
func (r *Root) authorizeSession(sess tpm2.Session, authority *ecdsa.PublicKey, a *Authorization) error {
	pub, err := authorityPublic(authority)
	if err != nil {
		return err
	}
	ext, err := tpm2.LoadExternal{InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHOwner}.Execute(r.tpm)
	if err != nil {
		return tpmFailure("load administrator key", err)
	}
	defer tpm2.FlushContext{FlushHandle: ext.ObjectHandle}.Execute(r.tpm)
	policy, err := VisorPolicy(a.Visor, int(a.PCR))
	if err != nil {
		return err
	}
	vs, err := tpm2.VerifySignature{
		KeyHandle: tpm2.NamedHandle{Handle: ext.ObjectHandle, Name: ext.Name},
		Digest:    tpm2.TPM2BDigest{Buffer: approvalDigest(policy)},
		Signature: tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       tpm2.TPMAlgSHA256,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: a.Signature[:32]},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: a.Signature[32:]},
			}),
		},
	}.Execute(r.tpm)
	if err != nil {
		return fmt.Errorf("%w: TPM refused the visor authorization's signature: %w", ErrPolicy, err)
	}
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: r.pcrSelection()}).Execute(r.tpm); err != nil {
		return fmt.Errorf("tpm: PolicyPCR: %w", err)
	}
	if _, err := (tpm2.PolicyAuthorize{
		PolicySession:  sess.Handle(),
		ApprovedPolicy: tpm2.TPM2BDigest{Buffer: policy},
		PolicyRef:      tpm2.TPM2BDigest{Buffer: []byte(visorPolicyRef)},
		KeySign:        ext.Name,
		CheckTicket:    vs.Validation,
	}).Execute(r.tpm); err != nil {
		return fmt.Errorf("%w: PolicyAuthorize: %w", ErrPolicy, err)
	}
	return nil
}
