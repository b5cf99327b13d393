package attest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/rot/tpm"
)

// ErrEnrollment is wrapped when an AK cannot be enrolled.
var ErrEnrollment = errors.New("attest: AK enrollment failed")

// Enrollment binds an attestation key to a TPM whose EK certificate the verifier trusts, by
// credential activation (docs/attestation.md §5). Once Finish succeeds, pin the AK it returns
// (Options.AKPublic, `palisade verify --ak`): later evidence then proves it comes from that TPM.
//
//	e, _ := attest.NewEnrollment(evidence, ekRoots)
//	answer := <visor>.ActivateCredential(e.Challenge)   // TPM2_ActivateCredential on the visor's TPM
//	ak, err := e.Finish(answer)
//
// Not yet usable against palisaded: the daemon has no request, and the CLI no command, that
// answers a challenge; only code holding the visor's TPM root of trust in-process (this
// module's tests) can today.
type Enrollment struct {
	Challenge []byte            // send to the visor
	AK        *ecdsa.PublicKey  // the AK being enrolled
	EK        *x509.Certificate // the EK certificate the challenge is encrypted to
	secret    []byte
}

// NewEnrollment checks that evidence carries an EK certificate chaining to roots and an
// acceptable AK, and makes a challenge only the TPM holding both can answer. It does not verify
// the evidence's quotes (use Verify for that).
func NewEnrollment(evidence []byte, roots *x509.CertPool) (*Enrollment, error) {
	if roots == nil {
		return nil, fmt.Errorf("%w: no EK roots", ErrEnrollment)
	}
	ev, err := Parse(evidence)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnrollment, err)
	}
	if ev.Root != RootTPM {
		return nil, fmt.Errorf("%w: root %q has no TPM", ErrEnrollment, ev.Root)
	}
	en, err := tpm.ParseEndorsement(ev.Endorsement)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnrollment, err)
	}
	ak, err := parseAK(en.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnrollment, err)
	}
	var ek *x509.Certificate
	if len(en.EKCert) > 0 {
		if ek, err = x509.ParseCertificate(en.EKCert); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrEnrollment, err)
		}
	}
	if err := verifyEK(ek, en.EKChain, roots); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnrollment, err)
	}
	ekPub, err := tpm.EKPublic(ek)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnrollment, err)
	}
	kem, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		return nil, fmt.Errorf("%w: EK: %w", ErrEnrollment, err)
	}
	akPub, err := unmarshalTPM[tpm2.TPMTPublic](en.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnrollment, err)
	}
	name, err := tpm2.ObjectName(akPub)
	if err != nil {
		return nil, fmt.Errorf("%w: AK name: %w", ErrEnrollment, err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand.Reader, kem, name.Buffer, secret)
	if err != nil {
		return nil, fmt.Errorf("%w: make credential: %w", ErrEnrollment, err)
	}
	ch, err := (&tpm.CredentialChallenge{IDObject: idObject, EncSecret: encSecret}).Marshal()
	if err != nil {
		return nil, err
	}
	return &Enrollment{Challenge: ch, AK: ak, EK: ek, secret: secret}, nil
}

// Finish checks the visor's answer to the challenge and returns the AK to pin.
func (e *Enrollment) Finish(answer []byte) (*ecdsa.PublicKey, error) {
	if subtle.ConstantTimeCompare(answer, e.secret) != 1 {
		return nil, fmt.Errorf("%w: wrong answer to the credential challenge (AK not in the TPM of this EK)", ErrEnrollment)
	}
	return e.AK, nil
}
