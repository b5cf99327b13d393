package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/palisade-project/palisade/internal/e2e/apps"
	"github.com/palisade-project/palisade/internal/rot/tpm"
	"github.com/palisade-project/palisade/internal/utpm"
)

// benchUTPM runs each µTPM operation and the same operation on swtpm (a TPM 2.0 simulator,
// reached over a Unix socket as rot/tpm reaches it), alternating so both see the same load.
// The TPM side pays what any use of it pays: unseal includes TPM2_Load, a policy session with
// PolicyPCR and the flushes (as rot/tpm's BenchmarkUTPMvsTPM).
func benchUTPM(ctx context.Context, d *apps.Daemon, cfg Config, p *progress, r *benchReport) error {
	p.note("µTPM vs swtpm: starting swtpm")
	sw, err := startSWTPM(ctx)
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("µTPM vs TPM: skipped (%v)", err))
		return nil
	}
	defer sw.stop()
	t := sw.tpm

	plat, err := utpm.NewPlatform(d.Root().Platform())
	if err != nil {
		return err
	}
	palTPM, sealer := plat.NewTPM(utpm.Digest{1}), plat.NewTPM(utpm.Digest{2})
	blob, err := sealer.Seal(make([]byte, 32), utpm.Policy{PCRMask: 0b10, CurrentPCRs: true})
	if err != nil {
		return err
	}
	keyBlob, _, err := sealer.KeyCreate(utpm.KeyECDSAP256, utpm.Policy{})
	if err != nil {
		return err
	}

	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(t)
	if err != nil {
		return fmt.Errorf("swtpm: SRK: %w", err)
	}
	srkH := tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(16)}}}
	pcr16 := tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)}
	digest := sha256.Sum256([]byte("measurement"))
	tpmSeal := func() (*tpm2.CreateResponse, error) {
		calc, _ := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
		var zero [32]byte
		zs := sha256.Sum256(zero[:])
		(tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: zs[:]}, Pcrs: sel}).Update(calc)
		return tpm2.Create{
			ParentHandle: srkH,
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: make([]byte, 32)})}},
			InPublic: tpm2.New2B(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
				ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true},
				AuthPolicy:       tpm2.TPM2BDigest{Buffer: calc.Hash().Digest}}),
		}.Execute(t)
	}
	sealed, err := tpmSeal()
	if err != nil {
		return fmt.Errorf("swtpm: seal: %w", err)
	}
	nonce := make([]byte, 32)
	// swtpm holds three transient objects: the SRK stays loaded, each op's key is created
	// before its loop and flushed after it.
	var ak, signKey *tpm2.CreatePrimaryResponse
	primary := func(dst **tpm2.CreatePrimaryResponse, h tpm2.TPMHandle, restricted bool) func() (func(), error) {
		return func() (func(), error) {
			k, err := tpm2.CreatePrimary{PrimaryHandle: h, InPublic: tpm2.New2B(eccSigningTemplate(restricted))}.Execute(t)
			if err != nil {
				return nil, err
			}
			*dst = k
			return func() { tpm2.FlushContext{FlushHandle: k.ObjectHandle}.Execute(t) }, nil
		}
	}
	ops := []struct {
		name      string
		utpm, tpm func() error
		prepare   func() (func(), error)
	}{
		{"extend", func() error { return palTPM.Extend(1, utpm.Digest{2}) }, func() error {
			_, err := tpm2.PCRExtend{PCRHandle: pcr16, Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:]}}}}.Execute(t)
			return err
		}, nil},
		{"seal (32 bytes, PCR policy)", func() error {
			_, err := sealer.Seal(make([]byte, 32), utpm.Policy{PCRMask: 0b10, CurrentPCRs: true})
			return err
		}, func() error { _, err := tpmSeal(); return err }, nil},
		{"unseal", func() error { _, _, err := sealer.Unseal(blob); return err }, func() error {
			if _, err := (tpm2.PCRReset{PCRHandle: pcr16}).Execute(t); err != nil {
				return err
			}
			obj, err := tpm2.Load{ParentHandle: srkH, InPrivate: sealed.OutPrivate, InPublic: sealed.OutPublic}.Execute(t)
			if err != nil {
				return err
			}
			defer tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(t)
			sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16)
			if err != nil {
				return err
			}
			defer closeSess()
			if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(t); err != nil {
				return err
			}
			_, err = tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: sess}}.Execute(t)
			return err
		}, nil},
		{"quote", func() error { _, err := sealer.Quote(nonce, nil, 0xff); return err }, func() error {
			_, err := tpm2.Quote{
				SignHandle:     tpm2.AuthHandle{Handle: ak.ObjectHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
				QualifyingData: tpm2.TPM2BData{Buffer: nonce}, InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, PCRSelect: sel,
			}.Execute(t)
			return err
		}, primary(&ak, tpm2.TPMRHEndorsement, true)},
		{"sign (ECDSA P-256, key object)", func() error {
			_, err := sealer.KeySign(keyBlob, utpm.SchemeECDSA, utpm.HashSHA256, digest[:])
			return err
		}, func() error {
			_, err := tpm2.Sign{
				KeyHandle: tpm2.AuthHandle{Handle: signKey.ObjectHandle, Name: signKey.Name, Auth: tpm2.PasswordAuth(nil)},
				Digest:    tpm2.TPM2BDigest{Buffer: digest[:]},
				InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA,
					&tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
				Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
			}.Execute(t)
			return err
		}, primary(&signKey, tpm2.TPMRHOwner, false)},
	}
	for _, op := range ops {
		p.note("µTPM vs swtpm: " + op.name)
		if op.prepare != nil {
			done, err := op.prepare()
			if err != nil {
				return fmt.Errorf("swtpm %s: %w", op.name, err)
			}
			defer done()
		}
		var u, s []float64
		for i := 0; i <= cfg.TPMIters; i++ {
			t0 := time.Now()
			if err := op.utpm(); err != nil {
				return fmt.Errorf("µTPM %s: %w", op.name, err)
			}
			t1 := time.Now()
			if err := op.tpm(); err != nil {
				return fmt.Errorf("swtpm %s: %w", op.name, err)
			}
			if i > 0 {
				u, s = append(u, us(t1.Sub(t0))), append(s, us(time.Since(t1)))
			}
		}
		r.UTPM = append(r.UTPM, tpmOp{Op: op.name, UTPMUs: median(u), SWTPMUs: median(s)})
		p.step("µTPM vs swtpm: " + op.name)
	}
	r.Notes = append(r.Notes, "µTPM vs TPM: the µTPM called in process (as the visor does for a PAL's hostcall); swtpm 'socket --tpm2' over a Unix socket with go-tpm. A hardware TPM is typically slower than swtpm still (tens of ms for quote and sign).")
	return nil
}

// eccSigningTemplate is an ECDSA P-256 signing key; restricted for the AK (quotes only).
func eccSigningTemplate(restricted bool) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: restricted, SignEncrypt: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: tpm2.TPMECCNistP256,
		}),
	}
}

type swtpm struct {
	dir string
	cmd *exec.Cmd
	tpm transport.TPMCloser
}

// startSWTPM starts `swtpm socket --tpm2` on a Unix socket in a temporary directory.
func startSWTPM(ctx context.Context) (*swtpm, error) {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return nil, errors.New("swtpm is not installed (apt-get install swtpm)")
	}
	dir, err := os.MkdirTemp("", "palisade-bench-swtpm-")
	if err != nil {
		return nil, err
	}
	s := &swtpm{dir: dir}
	sock := filepath.Join(dir, "tpm.sock")
	s.cmd = exec.Command(bin, "socket", "--tpm2", "--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"), "--tpmstate", "dir="+dir,
		"--flags", "not-need-init,startup-clear")
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.tpm, err = tpm.OpenDevice("swtpm:" + sock); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("swtpm did not start: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

func (s *swtpm) stop() {
	if s.tpm != nil {
		s.tpm.Close()
	}
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	os.RemoveAll(s.dir)
}
