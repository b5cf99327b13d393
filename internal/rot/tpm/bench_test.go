package tpm

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/palisade-project/palisade/internal/swtpmtest"
	"github.com/palisade-project/palisade/internal/utpm"
)

// benchEnv is a visor on swtpm with one PAL's µTPM, and what the TPM side of each operation
// needs: an SRK and a sealed object bound to PCR 16 (resettable, so the visor PCR is left alone).
type benchEnv struct {
	r      *Root
	pal    *utpm.TPM // extended by the extend benchmark
	sealer *utpm.TPM // PCRs never change, so its blob always unseals
	srk    tpm2.AuthHandle
	sel    tpm2.TPMLPCRSelection
	sealed *tpm2.CreateResponse
	blob   []byte
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	sw := swtpmtest.Start(b)
	r := mustOpen(b, sw, b.TempDir(), visorFile(b, "bench visor"), nil)
	b.Cleanup(func() { r.Close() })
	plat, err := utpm.NewPlatform(r.Platform())
	if err != nil {
		b.Fatal(err)
	}
	e := &benchEnv{r: r, pal: plat.NewTPM(utpm.Digest{1}), sealer: plat.NewTPM(utpm.Digest{2})}
	e.sel = tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(16)}}}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(r.tpm)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(r.tpm) })
	e.srk = tpm2.AuthHandle{Handle: srk.ObjectHandle, Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
	e.sealed = e.tpmSeal(b)
	if e.blob, err = e.sealer.Seal(make([]byte, 32), utpm.Policy{PCRMask: 0b10, CurrentPCRs: true}); err != nil {
		b.Fatal(err)
	}
	return e
}

func (e *benchEnv) tpmExtend(b *testing.B) {
	d := sha256.Sum256([]byte("measurement"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(e.r.tpm); err != nil {
		b.Fatal(err)
	}
}

// tpmSeal is TPM2_Create of a 32-byte sealed object with PolicyPCR(16), as the µTPM's Seal
// with a PCR policy.
func (e *benchEnv) tpmSeal(b *testing.B) *tpm2.CreateResponse {
	calc, _ := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	var zero [32]byte
	(tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: sha256Sum(zero[:])}, Pcrs: e.sel}).Update(calc)
	cr, err := tpm2.Create{
		ParentHandle: e.srk,
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: make([]byte, 32)})}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: calc.Hash().Digest}}),
	}.Execute(e.r.tpm)
	if err != nil {
		b.Fatal(err)
	}
	return cr
}

// tpmUnseal is what unsealing a blob costs on a TPM: TPM2_Load, a policy session with
// PolicyPCR, TPM2_Unseal, and flushing both.
func (e *benchEnv) tpmUnseal(b *testing.B) {
	// PCR 16 must hold the sealed value (zero): reset it, extend benchmarks change it.
	if _, err := (tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: 16, Auth: tpm2.PasswordAuth(nil)}}).Execute(e.r.tpm); err != nil {
		b.Fatal(err)
	}
	obj, err := tpm2.Load{ParentHandle: e.srk, InPrivate: e.sealed.OutPrivate, InPublic: e.sealed.OutPublic}.Execute(e.r.tpm)
	if err != nil {
		b.Fatal(err)
	}
	defer tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(e.r.tpm)
	sess, closeSess, err := tpm2.PolicySession(e.r.tpm, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		b.Fatal(err)
	}
	defer closeSess()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: e.sel}).Execute(e.r.tpm); err != nil {
		b.Fatal(err)
	}
	if _, err := (tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: sess}}).Execute(e.r.tpm); err != nil {
		b.Fatal(err)
	}
}

func (e *benchEnv) tpmQuote(b *testing.B) {
	if _, err := (tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: e.r.ak.Handle, Name: e.r.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: make([]byte, 32)},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      e.sel,
	}).Execute(e.r.tpm); err != nil {
		b.Fatal(err)
	}
}

func (e *benchEnv) ops() []benchOp {
	nonce := make([]byte, 32)
	return []benchOp{
		{"extend", func(b *testing.B) {
			if err := e.pal.Extend(1, utpm.Digest{2}); err != nil {
				b.Fatal(err)
			}
		}, e.tpmExtend},
		{"seal", func(b *testing.B) {
			if _, err := e.sealer.Seal(make([]byte, 32), utpm.Policy{PCRMask: 0b10, CurrentPCRs: true}); err != nil {
				b.Fatal(err)
			}
		}, func(b *testing.B) { e.tpmSeal(b) }},
		{"unseal", func(b *testing.B) {
			if _, _, err := e.sealer.Unseal(e.blob); err != nil {
				b.Fatal(err)
			}
		}, e.tpmUnseal},
		{"quote", func(b *testing.B) {
			if _, err := e.sealer.Quote(nonce, nil, 0xff); err != nil {
				b.Fatal(err)
			}
		}, e.tpmQuote},
	}
}

type benchOp struct {
	name      string
	utpm, tpm func(*testing.B)
}

// BenchmarkUTPMvsTPM runs each µTPM operation and the same operation on swtpm in one run and
// reports both times and their ratio (swtpm-ns/op ÷ utpm-ns/op): how much faster the µTPM is.
// Iterations alternate µTPM and TPM so both see the same machine load. Unseal checks a PCR
// policy on both sides; TPM unseal includes Load, the policy session and the flushes, which
// any use of a TPM-sealed blob pays.
func BenchmarkUTPMvsTPM(b *testing.B) {
	e := newBenchEnv(b)
	for _, op := range e.ops() {
		b.Run(op.name, func(b *testing.B) {
			var u, tp time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				op.utpm(b)
				t1 := time.Now()
				op.tpm(b)
				u += t1.Sub(t0)
				tp += time.Since(t1)
			}
			un := float64(u.Nanoseconds()) / float64(b.N)
			tn := float64(tp.Nanoseconds()) / float64(b.N)
			b.ReportMetric(un, "utpm-ns/op")
			b.ReportMetric(tn, "swtpm-ns/op")
			b.ReportMetric(tn/un, "ratio")
		})
	}
}

// BenchmarkUTPM and BenchmarkSWTPM are the same operations one side at a time, for benchstat.
func BenchmarkUTPM(b *testing.B) {
	e := newBenchEnv(b)
	for _, op := range e.ops() {
		b.Run(op.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				op.utpm(b)
			}
		})
	}
}

func BenchmarkSWTPM(b *testing.B) {
	e := newBenchEnv(b)
	for _, op := range e.ops() {
		b.Run(op.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				op.tpm(b)
			}
		})
	}
}

// BenchmarkOpen is a visor start on swtpm: reset, extends, unseal, identity key, AK, counters.
func BenchmarkOpen(b *testing.B) {
	sw := swtpmtest.Start(b)
	state, exe := b.TempDir(), visorFile(b, "bench visor")
	for i := 0; i < b.N; i++ {
		r := mustOpen(b, sw, state, exe, nil)
		r.Close()
	}
}

// BenchmarkEndorse is one TPM endorsement (TPM2_Quote + encoding).
func BenchmarkEndorse(b *testing.B) {
	e := newBenchEnv(b)
	nonce := []byte("nonce")
	for i := 0; i < b.N; i++ {
		if _, err := e.r.Endorse(b.Context(), nonce); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCounterIncrement is one NV-anchored counter increment (file fsync + NV_Increment).
func BenchmarkCounterIncrement(b *testing.B) {
	e := newBenchEnv(b)
	for i := 0; i < b.N; i++ {
		if _, err := e.r.Counters().Increment(utpm.Digest{1}, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenMode compares a visor start with the master secret under PolicyPCR (plain)
// and under PolicyAuthorize by an administrator key (LoadExternal, VerifySignature,
// PolicyPCR, PolicyAuthorize).
func BenchmarkOpenMode(b *testing.B) {
	admin := adminKey(b)
	auth := authorize(b, admin, "bench visor")
	for _, mode := range []string{"plain", "authorized"} {
		b.Run(mode, func(b *testing.B) {
			sw := swtpmtest.Start(b)
			state := b.TempDir()
			for i := 0; i < b.N; i++ {
				var r *Root
				var err error
				if mode == "plain" {
					r, err = open(b, sw, state, visorFile(b, "bench visor"), []byte("conf"), 0)
				} else {
					r, err = openAuthorized(b, sw, state, "bench visor", admin, auth)
				}
				if err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}

// BenchmarkVersionAnchorAdvance is one configuration version step (one TPM2_NV_Increment,
// plus the read that checks the base).
func BenchmarkVersionAnchorAdvance(b *testing.B) {
	sw := swtpmtest.Start(b)
	a, err := OpenVersionAnchor(sw.Device(), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	v, _ := a.Read()
	for i := 0; i < b.N; i++ {
		v++
		if err := a.Advance(v); err != nil {
			b.Fatal(err)
		}
	}
}
