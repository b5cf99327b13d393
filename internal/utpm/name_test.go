package utpm_test

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/palisade-project/palisade/internal/configtest"

	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/utpm"
)

// Measurements of the PALs of the name-under-signer tests: A seals, B and B2 (a new build of
// B) are listed in turn under the name "vault", C never is.
var (
	palB2 = utpm.Digest{0xb2}
	// testVisor is the visor the configurations list: the watcher asks for it.
	testVisor = config.Measurement{0x71}
)

// trusted is a real configuration state signed by a real administrator key, watched the way
// the visor watches it.
type trusted struct {
	admin crypto.Signer
	kid   utpm.Digest
	st    *config.State
	w     *config.Watcher
}

func newTrusted(t testing.TB) *trusted {
	t.Helper()
	admin, st := configtest.NewState(t, "ed25519")
	_, kid := st.AdminKey()
	return &trusted{admin: admin, kid: utpm.Digest(kid), st: st, w: config.NewWatcher(st, testVisor)}
}

// apply signs and applies version v listing vault (and other, an unrelated PAL name) with
// the given measurements.
func (tr *trusted) apply(t testing.TB, v uint64, vault ...utpm.Digest) {
	t.Helper()
	ms := make([]config.Measurement, len(vault))
	for i, m := range vault {
		ms[i] = config.Measurement(m)
	}
	c := &config.Config{
		Version: v,
		Visors:  []config.Measurement{testVisor},
		PALs:    map[string][]config.Measurement{"vault": ms, "other": {config.Measurement(palC)}},
	}
	raw, err := config.Sign(c, tr.admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.st.Apply(raw); err != nil {
		t.Fatal(err)
	}
}

func TestSealToNameUnderSigner(t *testing.T) {
	tr := newTrusted(t)
	tr.apply(t, 1, palB)
	p := newPlatform(t, randomMaster(t))
	p.SetAuthorizer(tr.w.UTPMAuthorizer())
	a, b, b2, c := p.NewTPM(palA), p.NewTPM(palB), p.NewTPM(palB2), p.NewTPM(palC)
	vault := utpm.Policy{Name: "vault", Signer: tr.kid}

	blob, err := a.Seal([]byte("db password"), vault)
	wantErr(t, err, nil)
	kblob, pub, err := a.KeyCreate(utpm.KeyECDSAP256, vault)
	wantErr(t, err, nil)
	digest := sha256.Sum256([]byte("to be signed"))
	sign := func(tp *utpm.TPM) error {
		sig, err := tp.KeySign(kblob, utpm.SchemeECDSA, utpm.HashSHA256, digest[:])
		if err == nil {
			k, perr := x509.ParsePKIXPublicKey(pub)
			if perr != nil {
				t.Fatal(perr)
			}
			if verr := verify(k, utpm.SchemeECDSA, utpm.HashSHA256, digest[:], sig); verr != nil {
				t.Fatal(verr)
			}
		}
		return err
	}

	// v1 lists B: B unseals and signs, the sealer A and the stranger C do not.
	data, creator, err := b.Unseal(blob)
	wantErr(t, err, nil)
	if string(data) != "db password" || creator != palA {
		t.Fatalf("unsealed %q from %x", data, creator)
	}
	wantErr(t, sign(b), nil)
	for _, tp := range []*utpm.TPM{a, c, b2} {
		_, _, err := tp.Unseal(blob)
		wantErr(t, err, utpm.ErrNotAuthorized)
		wantErr(t, err, config.ErrNotListed)
		if utpm.Code(err) != 14 {
			t.Fatalf("code %d for %v", utpm.Code(err), err)
		}
		wantErr(t, sign(tp), utpm.ErrNotAuthorized)
	}

	// v2, signed by the same admin, lists B2 instead of B: the same blobs keep working for
	// the new build without resealing, and B is refused at its next call (its key is cached
	// by the µTPM from the signature above: the policy is still checked).
	tr.apply(t, 2, palB2)
	_, _, err = b.Unseal(blob)
	wantErr(t, err, utpm.ErrNotAuthorized)
	wantErr(t, sign(b), utpm.ErrNotAuthorized)
	data, _, err = b2.Unseal(blob)
	wantErr(t, err, nil)
	if string(data) != "db password" {
		t.Fatalf("unsealed %q", data)
	}
	wantErr(t, sign(b2), nil)

	// A blob sealed under another administrator's key is refused whatever the measurement.
	foreign, err := a.Seal([]byte("x"), utpm.Policy{Name: "vault", Signer: utpm.Digest{0xf0}})
	wantErr(t, err, nil)
	_, _, err = b2.Unseal(foreign)
	wantErr(t, err, utpm.ErrNotAuthorized)
	wantErr(t, err, config.ErrWrongSigner)

	// A name the configuration does not have.
	ghost, err := a.Seal([]byte("x"), utpm.Policy{Name: "ghost", Signer: tr.kid})
	wantErr(t, err, nil)
	_, _, err = b2.Unseal(ghost)
	wantErr(t, err, config.ErrUnknownName)
}

// Renaming the blob's name in its clear header to a name the caller is listed under passes
// the authorizer but not the AEAD: the header is authenticated and the key depends on the name.
func TestNameHeaderIsAuthenticated(t *testing.T) {
	tr := newTrusted(t)
	tr.apply(t, 1, palB)
	p := newPlatform(t, randomMaster(t))
	p.SetAuthorizer(tr.w.UTPMAuthorizer())
	blob, err := p.NewTPM(palA).Seal([]byte("x"), utpm.Policy{Name: "other", Signer: tr.kid})
	wantErr(t, err, nil)
	// "other" (5 bytes) → "vault" (5 bytes): same layout, name at offset 7+32+1.
	forged := append([]byte(nil), blob...)
	copy(forged[40:], "vault")
	_, _, err = p.NewTPM(palB).Unseal(forged)
	wantErr(t, err, utpm.ErrTampered)
	// The untouched blob opens for "other" (C).
	_, _, err = p.NewTPM(palC).Unseal(blob)
	wantErr(t, err, nil)
}

func TestNameWithoutAuthorizer(t *testing.T) {
	tr := newTrusted(t)
	tr.apply(t, 1, palB)
	master := randomMaster(t)
	with := newPlatform(t, master)
	with.SetAuthorizer(tr.w.UTPMAuthorizer())
	blob, err := with.NewTPM(palA).Seal([]byte("x"), utpm.Policy{Name: "vault", Signer: tr.kid})
	wantErr(t, err, nil)

	// Same master secret, no trusted configuration: the blob is not refused as foreign or
	// tampered, the platform says it cannot decide.
	without := newPlatform(t, master)
	_, _, err = without.NewTPM(palB).Unseal(blob)
	wantErr(t, err, utpm.ErrUnsupported)
	_, err = without.NewTPM(palA).Seal([]byte("x"), utpm.Policy{Name: "vault", Signer: tr.kid})
	wantErr(t, err, utpm.ErrUnsupported)
	// Setting and clearing the authorizer at run time.
	without.SetAuthorizer(tr.w.UTPMAuthorizer())
	_, _, err = without.NewTPM(palB).Unseal(blob)
	wantErr(t, err, nil)
	without.SetAuthorizer(nil)
	_, _, err = without.NewTPM(palB).Unseal(blob)
	wantErr(t, err, utpm.ErrUnsupported)
}

// A state that can no longer be read is a failure to decide (E_INTERNAL), not a refusal.
func TestNameAuthorizerInternalFailure(t *testing.T) {
	tr := newTrusted(t)
	tr.apply(t, 1, palB)
	p := newPlatform(t, randomMaster(t))
	p.SetAuthorizer(tr.w.UTPMAuthorizer())
	blob, err := p.NewTPM(palA).Seal([]byte("x"), utpm.Policy{Name: "vault", Signer: tr.kid})
	wantErr(t, err, nil)
	cfgs, _ := filepath.Glob(filepath.Join(tr.st.Dir(), "configs", "*.cose"))
	if len(cfgs) != 1 {
		t.Fatalf("configs: %v", cfgs)
	}
	if err := os.Remove(cfgs[0]); err != nil {
		t.Fatal(err)
	}
	// A watcher that has to load the state now (the visor starting) cannot.
	p.SetAuthorizer(config.NewWatcher(tr.st, testVisor).UTPMAuthorizer())
	_, _, err = p.NewTPM(palB).Unseal(blob)
	wantErr(t, err, utpm.ErrInternal)
	if utpm.Code(err) != 12 {
		t.Fatalf("code %d for %v", utpm.Code(err), err)
	}
}

func TestNamePolicyChecks(t *testing.T) {
	tr := newTrusted(t)
	tr.apply(t, 1, palB)
	p := newPlatform(t, randomMaster(t))
	p.SetAuthorizer(tr.w.UTPMAuthorizer())
	a := p.NewTPM(palA)
	for _, tc := range []struct {
		name string
		p    utpm.Policy
	}{
		{"zero signer", utpm.Policy{Name: "vault"}},
		{"bad name", utpm.Policy{Name: "-vault", Signer: tr.kid}},
		{"long name", utpm.Policy{Name: string(make([]byte, 129)), Signer: tr.kid}},
		{"name and target", utpm.Policy{Name: "vault", Signer: tr.kid, Target: palB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Seal([]byte("x"), tc.p)
			wantErr(t, err, utpm.ErrInvalid)
		})
	}
	// PCR binding applies on top of the name: B must also have the PCR value.
	b := p.NewTPM(palB)
	var pcrs [utpm.NumPCRs]utpm.Digest
	pcrs[3] = utpm.Digest{3}
	blob, err := a.Seal([]byte("x"), utpm.Policy{Name: "vault", Signer: tr.kid, PCRMask: 1 << 3, PCRValues: pcrs})
	wantErr(t, err, nil)
	_, _, err = b.Unseal(blob)
	wantErr(t, err, utpm.ErrPCRMismatch)
	_, _, err = p.NewTPM(palC).Unseal(blob)
	wantErr(t, err, utpm.ErrNotAuthorized) // the name is checked before the PCRs
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"vault", true}, {"a", true}, {"A.b_c-9", true}, {"9", true},
		{"", false}, {".a", false}, {"-a", false}, {"_a", false}, {"a b", false}, {"a/b", false},
		{"é", false}, {string(make([]byte, 128)), false},
	} {
		if got := utpm.ValidName(tc.s); got != tc.ok {
			t.Errorf("ValidName(%q) = %v", tc.s, got)
		}
	}
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'a'
	}
	if utpm.ValidName(string(long[:128])) != true || utpm.ValidName(string(long)) {
		t.Error("length limit is not 128")
	}
}
