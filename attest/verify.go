package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/rot/tpm"
)

// Names of the checks Verify makes, in the order it makes them (docs/attestation.md §4).
const (
	CheckEvidenceFormat    = "evidence-format"
	CheckIdentityKey       = "identity-key"
	CheckQuoteSignature    = "utpm-quote-signature"
	CheckNonce             = "nonce"
	CheckPAL               = "pal"
	CheckVisor             = "visor"
	CheckConfiguration     = "configuration"
	CheckConfigVersion     = "configuration-version"
	CheckConfigHash        = "configuration-hash"
	CheckConfigHead        = "configuration-head"
	CheckRooted            = "rooted"
	CheckEndorsementFormat = "endorsement-format"
	CheckAKPublic          = "ak-public"
	CheckAKPin             = "ak-pin"
	CheckEKCertificate     = "ek-certificate"
	CheckTPMQuoteSignature = "tpm-quote-signature"
	CheckTPMQuoteFormat    = "tpm-quote-format"
	// CheckQualifiedSigner: the quote's qualifiedSigner is the qualified name of ak_public,
	// so every byte of ak_public is bound to the TPM's signature.
	CheckQualifiedSigner  = "qualified-signer"
	CheckQualifyingData   = "qualifying-data"
	CheckPCRSelection     = "pcr-selection"
	CheckEventLogReplay   = "event-log-replay"
	CheckEventLog         = "event-log"
	CheckEventLogVisor    = "event-log-visor"
	CheckEventLogIdentity = "event-log-identity"
)

// Sentinels wrapped by CheckError, one per kind of failure.
var (
	ErrMismatch        = errors.New("attest: value differs from the expected one")
	ErrUnrooted        = errors.New("attest: evidence is not rooted in a TPM")
	ErrTPMSignature    = errors.New("attest: TPM quote signature does not verify")
	ErrTPMQuote        = errors.New("attest: malformed TPM quote or attestation key")
	ErrEventLog        = errors.New("attest: event log does not explain the quoted PCR")
	ErrEKCertificate   = errors.New("attest: EK certificate does not chain to a trusted root")
	ErrAKNotAcceptable = errors.New("attest: attestation key is not acceptable")
)

// CheckError says which check failed, and what was expected and found.
type CheckError struct {
	Check     string // one of the Check* names
	Want, Got string // empty when not meaningful
	Err       error  // a sentinel of this package, possibly wrapping the cause
}

// Error says which check failed, what was expected and found, and why.
func (e *CheckError) Error() string {
	s := "attest: check " + e.Check + " failed"
	if e.Want != "" || e.Got != "" {
		s += fmt.Sprintf(": want %s, got %s", e.Want, e.Got)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns Err, so that errors.Is(err, ErrMismatch) and the like work.
func (e *CheckError) Unwrap() error { return e.Err }

func fail(check string, err error) *CheckError { return &CheckError{Check: check, Err: err} }

func mismatch(check string, want, got []byte) *CheckError {
	return &CheckError{Check: check, Want: hexOrEmpty(want), Got: hexOrEmpty(got), Err: ErrMismatch}
}

func hexOrEmpty(b []byte) string {
	if len(b) == 0 {
		return "(empty)"
	}
	return hex.EncodeToString(b)
}

// Options are the verifier's reference values and policy.
type Options struct {
	Nonce []byte   // the nonce the verifier sent; must match exactly
	PAL   [32]byte // expected PAL measurement (palisade measure)
	Visor [32]byte // expected visor measurement (MeasureVisor)
	// AllowUnrooted accepts evidence from the "none" root of trust (development only).
	AllowUnrooted bool
	// EKRoots, when set, requires an EK certificate chaining to one of these roots.
	EKRoots *x509.CertPool
	// AKPublic, when set, pins the attestation key (e.g. enrolled once by credential
	// activation): evidence quoted by any other key is refused.
	AKPublic *ecdsa.PublicKey
	// Configuration, when set, requires a configuration head in the evidence that meets it
	// (minimum version, configuration hash, history head). Without it a head present in the
	// evidence is still verified and returned in Result.Configuration.
	Configuration *ConfigPolicy
}

// Result is what verified evidence says.
type Result struct {
	Claims   *QuoteClaims     // the µTPM quote's claims (PAL, visor, PCRs, nonce, user data…)
	Identity *ecdsa.PublicKey // the visor identity key that signed them
	Root     string           // RootTPM or RootNone
	Rooted   bool             // true only when every TPM check passed
	// Configuration is the visor's trusted-configuration head, signed by the identity key
	// for this nonce; nil when the evidence has none.
	Configuration *ConfigHead

	// For RootTPM:
	PCR          int               // the visor PCR
	PCRValue     [32]byte          // its quoted value (equal to the event log's replay)
	Events       []Event           // the verified event log
	AKPublic     *ecdsa.PublicKey  // the attestation key that signed the TPM quote
	AKPinned     bool              // AKPublic equals Options.AKPublic
	EK           *x509.Certificate // the EK certificate in the evidence, if any
	EKVerified   bool              // EK chained to Options.EKRoots (see docs: this does not bind the AK)
	ResetCount   uint32            // TPM boots, from the quote's clock info
	RestartCount uint32            // TPM resumes and restarts since the last boot
}

// Verify checks every link of Palisade evidence (docs/attestation.md §4) and returns what it
// proves, or a *CheckError naming the first check that failed.
//
// What Verify does NOT prove: that the AK lives in a genuine TPM (unless Options.AKPublic
// pins an AK enrolled with NewEnrollment; an EK certificate alone does not bind the AK), and that the
// PCR was extended by the visor rather than replayed by root (no DRTM: see the docs).
func Verify(evidence []byte, opts Options) (*Result, error) {
	ev, err := Parse(evidence)
	if err != nil {
		return nil, fail(CheckEvidenceFormat, err)
	}
	idAny, err := x509.ParsePKIXPublicKey(ev.Identity)
	if err != nil {
		return nil, fail(CheckIdentityKey, fmt.Errorf("%w: %w", ErrEvidence, err))
	}
	id, ok := idAny.(*ecdsa.PublicKey)
	if !ok || id.Curve != elliptic.P256() {
		return nil, fail(CheckIdentityKey, fmt.Errorf("%w: identity is not an ECDSA P-256 key", ErrEvidence))
	}
	claims, err := VerifyQuote(ev.Quote, id)
	if err != nil {
		return nil, fail(CheckQuoteSignature, err)
	}
	if !bytes.Equal(claims.Nonce, opts.Nonce) {
		return nil, mismatch(CheckNonce, opts.Nonce, claims.Nonce)
	}
	if claims.PAL != opts.PAL {
		return nil, mismatch(CheckPAL, opts.PAL[:], claims.PAL[:])
	}
	if claims.Visor != opts.Visor {
		return nil, mismatch(CheckVisor, opts.Visor[:], claims.Visor[:])
	}
	head, err := checkConfig(ev, id, opts.Nonce, opts.Configuration)
	if err != nil {
		return nil, err
	}
	res := &Result{Claims: claims, Identity: id, Root: ev.Root, Configuration: head}
	if ev.Root == RootNone || !claims.Rooted {
		if !opts.AllowUnrooted {
			return nil, &CheckError{Check: CheckRooted, Want: "rooted (tpm)",
				Got: fmt.Sprintf("root %q, quote rooted=%v", ev.Root, claims.Rooted), Err: ErrUnrooted}
		}
		// An unrooted quote is only as good as the identity key: nothing more to check.
		return res, nil
	}
	if err := verifyEndorsement(ev, id, opts, res); err != nil {
		return nil, err
	}
	res.Rooted = true
	return res, nil
}

func verifyEndorsement(ev *Evidence, id *ecdsa.PublicKey, opts Options, res *Result) error {
	en, err := tpm.ParseEndorsement(ev.Endorsement)
	if err != nil {
		return fail(CheckEndorsementFormat, err)
	}
	ak, err := parseAK(en.AKPublic)
	if err != nil {
		return fail(CheckAKPublic, err)
	}
	res.AKPublic = ak
	if opts.AKPublic != nil && !opts.AKPublic.Equal(ak) {
		return &CheckError{Check: CheckAKPin, Want: keyHash(opts.AKPublic), Got: keyHash(ak), Err: ErrMismatch}
	}
	res.AKPinned = opts.AKPublic != nil
	if len(en.EKCert) > 0 {
		if res.EK, err = x509.ParseCertificate(en.EKCert); err != nil {
			return fail(CheckEKCertificate, fmt.Errorf("%w: %w", ErrEKCertificate, err))
		}
	}
	if opts.EKRoots != nil {
		if err := verifyEK(res.EK, en.EKChain, opts.EKRoots); err != nil {
			return fail(CheckEKCertificate, err)
		}
		res.EKVerified = true
	}
	if err := verifyTPMSignature(ak, en.Quoted, en.Signature); err != nil {
		return fail(CheckTPMQuoteSignature, err)
	}
	att, err := unmarshalTPM[tpm2.TPMSAttest](en.Quoted)
	if err != nil {
		return fail(CheckTPMQuoteFormat, fmt.Errorf("%w: %w", ErrTPMQuote, err))
	}
	if att.Magic != tpm2.TPMGeneratedValue || att.Type != tpm2.TPMSTAttestQuote {
		return fail(CheckTPMQuoteFormat, fmt.Errorf("%w: not a TPM-generated quote (magic %#x, type %#x)", ErrTPMQuote, uint32(att.Magic), uint16(att.Type)))
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return fail(CheckTPMQuoteFormat, fmt.Errorf("%w: %w", ErrTPMQuote, err))
	}
	// The signature was checked with the point of ak_public only; the rest of ak_public (the
	// attributes parseAK read) is bound here: the TPM names the key that signed the quote.
	if want := AKQualifiedName(en.AKPublic); !bytes.Equal(att.QualifiedSigner.Buffer, want) {
		return mismatch(CheckQualifiedSigner, want, att.QualifiedSigner.Buffer)
	}
	res.ResetCount, res.RestartCount = att.ClockInfo.ResetCount, att.ClockInfo.RestartCount
	if want := tpm.QualifyingData(ev.Identity, opts.Nonce); !bytes.Equal(att.ExtraData.Buffer, want) {
		return mismatch(CheckQualifyingData, want, att.ExtraData.Buffer)
	}
	if got := selectedPCRs(qi.PCRSelect); len(got) != 1 || got[0] != int(en.PCR) {
		return &CheckError{Check: CheckPCRSelection, Want: fmt.Sprintf("sha256:%d", en.PCR),
			Got: fmt.Sprintf("%v", qi.PCRSelect.PCRSelections), Err: ErrTPMQuote}
	}
	replayed := tpm.Replay(en.Events, en.PCR)
	if d := sha256.Sum256(replayed[:]); !bytes.Equal(qi.PCRDigest.Buffer, d[:]) {
		return &CheckError{Check: CheckEventLogReplay,
			Want: "PCR digest " + hexOrEmpty(qi.PCRDigest.Buffer),
			Got:  "replay " + hexOrEmpty(replayed[:]) + " (digest " + hexOrEmpty(d[:]) + ")", Err: ErrEventLog}
	}
	// The log replays; now it must say what Palisade extends, in order: visor, identity, cap.
	want := []string{tpm.EventVisor, tpm.EventIdentity, tpm.EventCap}
	var kinds []string
	for _, e := range en.Events {
		kinds = append(kinds, e.Kind)
		if e.PCR != en.PCR {
			return &CheckError{Check: CheckEventLog, Want: fmt.Sprintf("events on PCR %d", en.PCR),
				Got: fmt.Sprintf("event %q on PCR %d", e.Kind, e.PCR), Err: ErrEventLog}
		}
	}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		return &CheckError{Check: CheckEventLog, Want: fmt.Sprint(want), Got: fmt.Sprint(kinds), Err: ErrEventLog}
	}
	if en.Events[0].Digest != opts.Visor {
		return mismatch(CheckEventLogVisor, opts.Visor[:], en.Events[0].Digest[:])
	}
	if h := sha256.Sum256(ev.Identity); en.Events[1].Digest != h {
		return mismatch(CheckEventLogIdentity, h[:], en.Events[1].Digest[:])
	}
	if c := tpm.CapDigest(); en.Events[2].Digest != c {
		return mismatch(CheckEventLog, c[:], en.Events[2].Digest[:])
	}
	res.PCR, res.PCRValue = int(en.PCR), replayed
	for _, e := range en.Events {
		res.Events = append(res.Events, Event{PCR: e.PCR, Digest: e.Digest, Kind: e.Kind})
	}
	return nil
}

// parseAK accepts only what Palisade creates: a restricted, TPM-resident ECDSA P-256 signing
// key. "Restricted" is what makes a quote trustworthy: such a key never signs a digest that
// begins with TPM_GENERATED_VALUE unless the TPM produced the structure itself.
func parseAK(b []byte) (*ecdsa.PublicKey, error) {
	pub, err := unmarshalTPM[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTPMQuote, err)
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("%w: name algorithm %#x, want SHA-256", ErrAKNotAcceptable, uint16(pub.NameAlg))
	}
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgECC || !a.Restricted || !a.SignEncrypt || a.Decrypt ||
		!a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, fmt.Errorf("%w: want a restricted, fixedTPM, TPM-generated ECC signing key", ErrAKNotAcceptable)
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTPMQuote, err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, fmt.Errorf("%w: curve %#x, want NIST P-256", ErrAKNotAcceptable, uint16(parms.CurveID))
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTPMQuote, err)
	}
	k, err := tpm2.ECDSAPub(parms, point)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAKNotAcceptable, err)
	}
	return k, nil
}

// AKQualifiedName is what a TPM2_Quote by Palisade's attestation key carries as its
// qualifiedSigner: the qualified name of a primary key of the endorsement hierarchy whose
// TPMT_PUBLIC is akPublic (name algorithm SHA-256, big-endian TPM encoding):
//
//	name = 0x000B ‖ SHA-256(akPublic)
//	qualifiedSigner = 0x000B ‖ SHA-256(0x4000000B ‖ name)    (0x4000000B = TPM_RH_ENDORSEMENT)
func AKQualifiedName(akPublic []byte) []byte {
	alg := []byte{0x00, 0x0b} // TPM_ALG_SHA256
	name := append(bytes.Clone(alg), sha256Sum(akPublic)...)
	var parent [4]byte
	binary.BigEndian.PutUint32(parent[:], uint32(tpm2.TPMRHEndorsement))
	return append(alg, sha256Sum(append(parent[:], name...))...)
}

func sha256Sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

func verifyTPMSignature(ak *ecdsa.PublicKey, quoted, sigBytes []byte) error {
	sig, err := unmarshalTPM[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTPMQuote, err)
	}
	if sig.SigAlg != tpm2.TPMAlgECDSA {
		return fmt.Errorf("%w: algorithm %#x, want ECDSA", ErrTPMSignature, uint16(sig.SigAlg))
	}
	e, err := sig.Signature.ECDSA()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTPMQuote, err)
	}
	if e.Hash != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: hash %#x, want SHA-256", ErrTPMSignature, uint16(e.Hash))
	}
	d := sha256.Sum256(quoted)
	r := new(big.Int).SetBytes(e.SignatureR.Buffer)
	s := new(big.Int).SetBytes(e.SignatureS.Buffer)
	if !ecdsa.Verify(ak, d[:], r, s) {
		return ErrTPMSignature
	}
	return nil
}

// unmarshalTPM decodes a TPM structure from hostile bytes: it must use every byte, and any
// panic of the reflective decoder becomes an error.
func unmarshalTPM[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (v *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("decode %T: %v", v, r)
		}
	}()
	v, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tpm2.Marshal(*v), b) {
		return nil, fmt.Errorf("decode %T: trailing or non-canonical bytes", v)
	}
	return v, nil
}

func selectedPCRs(sel tpm2.TPMLPCRSelection) []int {
	var out []int
	for _, s := range sel.PCRSelections {
		for i, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) == 0 {
					continue
				}
				if s.Hash != tpm2.TPMAlgSHA256 {
					return append(out, -1) // any other bank is unexpected
				}
				out = append(out, i*8+bit)
			}
		}
	}
	return out
}

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

func verifyEK(ek *x509.Certificate, chain [][]byte, roots *x509.CertPool) error {
	if ek == nil {
		return fmt.Errorf("%w: evidence carries no EK certificate", ErrEKCertificate)
	}
	inter := x509.NewCertPool()
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("%w: chain certificate %d: %w", ErrEKCertificate, i, err)
		}
		inter.AddCert(c)
	}
	// EK certificates have an empty subject and a critical SAN holding TPM manufacturer
	// attributes (a directoryName) that crypto/x509 does not interpret; that SAN is expected.
	c := *ek
	c.UnhandledCriticalExtensions = nil
	for _, oid := range ek.UnhandledCriticalExtensions {
		if !oid.Equal(oidSAN) {
			c.UnhandledCriticalExtensions = append(c.UnhandledCriticalExtensions, oid)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		if len(chain) == 0 && errors.As(err, new(x509.UnknownAuthorityError)) {
			return fmt.Errorf("%w: %w (the evidence carries no intermediate certificates: the visor's EK chain is not configured, palisaded ek_chain)", ErrEKCertificate, err)
		}
		return fmt.Errorf("%w: %w", ErrEKCertificate, err)
	}
	return nil
}

func keyHash(k *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "(unencodable key)"
	}
	h := sha256.Sum256(der)
	return "key sha256:" + hex.EncodeToString(h[:])
}
