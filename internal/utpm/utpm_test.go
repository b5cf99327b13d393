package utpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
)

var (
	fixedNow = time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	visor    = utpm.Digest{0x76, 0x69, 0x73, 0x6f, 0x72}
	palA     = utpm.Digest{0xa}
	palB     = utpm.Digest{0xb}
	palC     = utpm.Digest{0xc}
)

func randomMaster(t testing.TB) []byte {
	m := make([]byte, 32)
	if _, err := rand.Read(m); err != nil {
		t.Fatal(err)
	}
	return m
}

// newPlatform makes a platform with a real file counter store in a temporary directory.
func newPlatform(t testing.TB, master []byte) *utpm.Platform {
	t.Helper()
	id, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	counters, err := none.OpenFileCounters(filepath.Join(t.TempDir(), "counters"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := utpm.NewPlatform(utpm.PlatformConfig{
		MasterSecret: master,
		Identity:     id,
		Visor:        visor,
		Counters:     counters,
		Now:          func() time.Time { return fixedNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func identityKey(t testing.TB, p *utpm.Platform) *ecdsa.PublicKey {
	t.Helper()
	k, err := x509.ParsePKIXPublicKey(p.IdentityPublic())
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PublicKey)
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

func TestNewPlatformChecksConfig(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		name string
		cfg  utpm.PlatformConfig
		ok   bool
	}{
		{"ok", utpm.PlatformConfig{MasterSecret: make([]byte, 32), Identity: p256}, true},
		{"short secret", utpm.PlatformConfig{MasterSecret: make([]byte, 31), Identity: p256}, false},
		{"no identity", utpm.PlatformConfig{MasterSecret: make([]byte, 32)}, false},
		{"P-384 identity", utpm.PlatformConfig{MasterSecret: make([]byte, 32), Identity: p384}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := utpm.NewPlatform(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestIdentityPublic(t *testing.T) {
	id, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p, err := utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: make([]byte, 32), Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	if !identityKey(t, p).Equal(&id.PublicKey) {
		t.Fatal("IdentityPublic is not the identity key")
	}
	if p.NewTPM(palA).Platform() != p {
		t.Fatal("TPM.Platform is not its platform")
	}
}

func TestPCRs(t *testing.T) {
	tpm := newPlatform(t, randomMaster(t)).NewTPM(palA)
	if tpm.Measurement() != palA {
		t.Fatal("wrong measurement")
	}
	want := utpm.Digest(sha256.Sum256(append(make([]byte, 32), palA[:]...)))
	if got, _ := tpm.PCR(0); got != want {
		t.Fatalf("PCR0 = %x, want SHA-256(0^32 ‖ m) = %x", got, want)
	}
	for i := 1; i < utpm.NumPCRs; i++ {
		if got, _ := tpm.PCR(i); got != (utpm.Digest{}) {
			t.Fatalf("PCR%d = %x, want zero", i, got)
		}
	}
	d := utpm.Digest{1, 2, 3}
	for _, tc := range []struct {
		pcr  int
		want error
	}{{0, utpm.ErrPCR}, {-1, utpm.ErrPCR}, {8, utpm.ErrPCR}, {1 << 30, utpm.ErrPCR}, {1, nil}, {7, nil}} {
		t.Run(fmt.Sprint("extend", tc.pcr), func(t *testing.T) {
			before := tpm.PCRs()
			err := tpm.Extend(tc.pcr, d)
			wantErr(t, err, tc.want)
			after := tpm.PCRs()
			if err != nil {
				if after != before {
					t.Fatal("a failed extend changed PCRs")
				}
				return
			}
			exp := utpm.Digest(sha256.Sum256(append(before[tc.pcr][:], d[:]...)))
			if after[tc.pcr] != exp {
				t.Fatalf("PCR%d = %x, want %x", tc.pcr, after[tc.pcr], exp)
			}
			if got, _ := tpm.PCR(tc.pcr); got != exp {
				t.Fatal("PCR and PCRs disagree")
			}
		})
	}
	for _, i := range []int{-1, 8} {
		if _, err := tpm.PCR(i); !errors.Is(err, utpm.ErrPCR) {
			t.Fatalf("PCR(%d) error = %v", i, err)
		}
	}
}

func TestSealUnseal(t *testing.T) {
	p := newPlatform(t, randomMaster(t))
	a, b, c := p.NewTPM(palA), p.NewTPM(palB), p.NewTPM(palC)
	big := make([]byte, utpm.MaxSealData)
	rand.Read(big)
	for _, tc := range []struct {
		name     string
		data     []byte
		policy   utpm.Policy
		unsealer *utpm.TPM
		sealErr  error
		want     error
	}{
		{"empty", nil, utpm.Policy{}, a, nil, nil},
		{"64 bytes", bytes.Repeat([]byte{7}, 64), utpm.Policy{}, a, nil, nil},
		{"max size", big, utpm.Policy{}, a, nil, nil},
		{"too large", make([]byte, utpm.MaxSealData+1), utpm.Policy{}, a, utpm.ErrTooLarge, nil},
		{"own target explicit", []byte("x"), utpm.Policy{Target: palA}, a, nil, nil},
		{"self-sealed, other PAL unseals", []byte("x"), utpm.Policy{}, b, nil, utpm.ErrWrongPAL},
		{"for B, B unseals", []byte("for b"), utpm.Policy{Target: palB}, b, nil, nil},
		{"for B, A (the creator) unseals", []byte("for b"), utpm.Policy{Target: palB}, a, nil, utpm.ErrWrongPAL},
		{"for B, C unseals", []byte("for b"), utpm.Policy{Target: palB}, c, nil, utpm.ErrWrongPAL},
		{"current PCRs", []byte("pcr"), utpm.Policy{PCRMask: 0xff, CurrentPCRs: true}, a, nil, nil},
		{"explicit PCR0 of A", []byte("pcr"), utpm.Policy{PCRMask: 1, PCRValues: a.PCRs()}, a, nil, nil},
		{"explicit wrong PCR3", []byte("pcr"), utpm.Policy{PCRMask: 1 << 3, PCRValues: [8]utpm.Digest{3: {1}}}, a, nil, utpm.ErrPCRMismatch},
		{"for B bound to A's PCR0", []byte("pcr"), utpm.Policy{Target: palB, PCRMask: 1, CurrentPCRs: true}, b, nil, utpm.ErrPCRMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, err := a.Seal(tc.data, tc.policy)
			wantErr(t, err, tc.sealErr)
			if err != nil {
				return
			}
			data, creator, err := tc.unsealer.Unseal(blob)
			wantErr(t, err, tc.want)
			if err != nil {
				return
			}
			if !bytes.Equal(data, tc.data) {
				t.Fatal("unsealed data differs")
			}
			if creator != palA {
				t.Fatalf("creator = %x, want A", creator)
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	a := newPlatform(t, randomMaster(t)).NewTPM(palA)
	b1, _ := a.Seal([]byte("same"), utpm.Policy{})
	b2, _ := a.Seal([]byte("same"), utpm.Policy{})
	if bytes.Equal(b1, b2) {
		t.Fatal("two seals of the same data are identical")
	}
}

func TestPCRBoundSealFailsAfterExtend(t *testing.T) {
	a := newPlatform(t, randomMaster(t)).NewTPM(palA)
	blob, err := a.Seal([]byte("s"), utpm.Policy{PCRMask: 1<<0 | 1<<2, CurrentPCRs: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Unseal(blob); err != nil {
		t.Fatal(err)
	}
	unbound, _ := a.Seal([]byte("s"), utpm.Policy{PCRMask: 1 << 0, CurrentPCRs: true})
	if err := a.Extend(2, utpm.Digest{9}); err != nil {
		t.Fatal(err)
	}
	_, _, err = a.Unseal(blob)
	wantErr(t, err, utpm.ErrPCRMismatch)
	if _, _, err := a.Unseal(unbound); err != nil {
		t.Fatalf("blob not bound to PCR2 failed: %v", err)
	}
}

func TestForeignPlatform(t *testing.T) {
	master := randomMaster(t)
	p1 := newPlatform(t, master)
	blob, err := p1.NewTPM(palA).Seal([]byte("s"), utpm.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	// Same master secret, fresh identity key: a restarted visor must unseal its old blobs.
	if _, _, err := newPlatform(t, master).NewTPM(palA).Unseal(blob); err != nil {
		t.Fatalf("restarted platform: %v", err)
	}
	_, _, err = newPlatform(t, randomMaster(t)).NewTPM(palA).Unseal(blob)
	wantErr(t, err, utpm.ErrForeign)

	kblob, _, err := p1.NewTPM(palA).KeyCreate(utpm.KeyECDSAP256, utpm.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = newPlatform(t, randomMaster(t)).NewTPM(palA).KeySign(kblob, utpm.SchemeECDSA, utpm.HashSHA256, make([]byte, 32))
	wantErr(t, err, utpm.ErrForeign)
}

// Blob layout from docs/formats.md §2, with one PCR (PCR1) in the policy.
const (
	offType     = 5
	offKind     = 6
	offTarget   = 7
	offMask     = 39
	offPCRVal   = 40
	offCreator  = offPCRVal + 32
	offPlatform = offCreator + 32
	offNonce    = offPlatform + 8
	headerLen   = offNonce + 12
)

func regionErr(i int) error {
	switch {
	case i < offType+1, i == offKind:
		return utpm.ErrMalformed
	case i < offMask:
		return utpm.ErrWrongPAL
	case i == offMask: // one more PCR: the fields after it shift, the platform id no longer matches
		return utpm.ErrForeign
	case i < offCreator:
		return utpm.ErrPCRMismatch
	case i < offPlatform:
		return utpm.ErrTampered
	case i < offNonce:
		return utpm.ErrForeign
	}
	return utpm.ErrTampered
}

func TestUnsealTampered(t *testing.T) {
	a := newPlatform(t, randomMaster(t)).NewTPM(palA)
	a.Extend(1, utpm.Digest{1})
	data := bytes.Repeat([]byte{0x55}, 64)
	blob, err := a.Seal(data, utpm.Policy{PCRMask: 1 << 1, CurrentPCRs: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(blob) != headerLen+len(data)+16 {
		t.Fatalf("blob is %d bytes, want %d (docs/formats.md §2)", len(blob), headerLen+len(data)+16)
	}
	for i := range blob {
		mut := bytes.Clone(blob)
		mut[i] ^= 0x01
		_, _, err := a.Unseal(mut)
		if !errors.Is(err, regionErr(i)) {
			t.Errorf("byte %d flipped: error %v, want %v", i, err, regionErr(i))
		}
	}
	// Turning the data blob into a key blob must not pass: the type selects the key.
	mut := bytes.Clone(blob)
	mut[offType] = 2
	if _, err := a.KeySign(mut, utpm.SchemeECDSA, utpm.HashSHA256, make([]byte, 32)); !errors.Is(err, utpm.ErrTampered) {
		t.Errorf("type changed to key: %v, want ErrTampered", err)
	}
	for n := 0; n < len(blob); n++ {
		want := utpm.ErrTampered
		if n < headerLen+16 {
			want = utpm.ErrMalformed
		}
		if _, _, err := a.Unseal(blob[:n]); !errors.Is(err, want) {
			t.Errorf("truncated to %d: error %v, want %v", n, err, want)
		}
	}
	if _, _, err := a.Unseal(append(bytes.Clone(blob), 0)); !errors.Is(err, utpm.ErrTampered) {
		t.Errorf("extended by one byte: %v", err)
	}
}

func TestWrongType(t *testing.T) {
	a := newPlatform(t, randomMaster(t)).NewTPM(palA)
	kblob, _, err := a.KeyCreate(utpm.KeyEd25519, utpm.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = a.Unseal(kblob)
	wantErr(t, err, utpm.ErrWrongType)
	dblob, _ := a.Seal(make([]byte, 32), utpm.Policy{})
	_, err = a.KeySign(dblob, utpm.SchemeEdDSA, utpm.HashNone, []byte("m"))
	wantErr(t, err, utpm.ErrWrongType)
}

func TestQuote(t *testing.T) {
	p := newPlatform(t, randomMaster(t))
	a := p.NewTPM(palA)
	a.Extend(3, utpm.Digest{3})
	pcrs := a.PCRs()
	for _, tc := range []struct {
		name        string
		nonce, user []byte
		mask        uint8
		want        error
	}{
		{"empty", nil, nil, 0, nil},
		{"all PCRs", []byte("n"), []byte("u"), 0xff, nil},
		{"PCR0 and PCR3", bytes.Repeat([]byte{1}, utpm.MaxNonce), bytes.Repeat([]byte{2}, utpm.MaxUserData), 1<<0 | 1<<3, nil},
		{"nonce too large", make([]byte, utpm.MaxNonce+1), nil, 0, utpm.ErrTooLarge},
		{"user data too large", nil, make([]byte, utpm.MaxUserData+1), 0, utpm.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := a.Quote(tc.nonce, tc.user, tc.mask)
			wantErr(t, err, tc.want)
			if err != nil {
				// The error names the limit, so a caller knows how much is allowed.
				if !strings.Contains(err.Error(), fmt.Sprint("at most ", utpm.MaxNonce)) &&
					!strings.Contains(err.Error(), fmt.Sprint("at most ", utpm.MaxUserData)) {
					t.Errorf("error %q does not name the limit", err)
				}
				return
			}
			c, err := attest.VerifyQuote(ev, identityKey(t, p))
			if err != nil {
				t.Fatal(err)
			}
			if c.Version != 1 || c.PAL != palA || c.Visor != visor || c.Rooted || !c.IssuedAt.Equal(fixedNow) {
				t.Fatalf("claims %+v", c)
			}
			if !bytes.Equal(c.Nonce, tc.nonce) || !bytes.Equal(c.UserData, tc.user) {
				t.Fatal("nonce or user data differ")
			}
			want := map[int][32]byte{}
			for i := 0; i < utpm.NumPCRs; i++ {
				if tc.mask&(1<<i) != 0 {
					want[i] = pcrs[i]
				}
			}
			if fmt.Sprint(c.PCRs) != fmt.Sprint(want) {
				t.Fatalf("PCRs %x, want %x", c.PCRs, want)
			}
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if _, err := attest.VerifyQuote(ev, &other.PublicKey); !errors.Is(err, attest.ErrSignature) {
				t.Fatalf("other key: %v", err)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy source failed") }

type failingCounters struct{}

func (failingCounters) Read(utpm.Digest, uint32) (uint64, error) {
	return 0, errors.New("disk on fire")
}
func (failingCounters) Increment(utpm.Digest, uint32) (uint64, error) {
	return 0, errors.New("disk on fire")
}

func TestRandom(t *testing.T) {
	a := newPlatform(t, randomMaster(t)).NewTPM(palA)
	b1, b2 := make([]byte, 32), make([]byte, 32)
	wantErr(t, a.Random(b1), nil)
	wantErr(t, a.Random(b2), nil)
	if bytes.Equal(b1, b2) || bytes.Equal(b1, make([]byte, 32)) {
		t.Fatal("random bytes repeat or are zero")
	}
	wantErr(t, a.Random(make([]byte, utpm.MaxRandom)), nil)
	wantErr(t, a.Random(make([]byte, utpm.MaxRandom+1)), utpm.ErrTooLarge)

	// A failing entropy source is a fault we cannot cause with the real one.
	id, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p, _ := utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: make([]byte, 32), Identity: id, Rand: failingReader{}})
	f := p.NewTPM(palA)
	wantErr(t, f.Random(make([]byte, 1)), utpm.ErrInternal)
	_, err := f.Seal(nil, utpm.Policy{})
	wantErr(t, err, utpm.ErrInternal)
}

func TestCounters(t *testing.T) {
	p := newPlatform(t, randomMaster(t))
	a, a2, b := p.NewTPM(palA), p.NewTPM(palA), p.NewTPM(palB)
	steps := []struct {
		tpm  *utpm.TPM
		inc  bool
		id   uint32
		want uint64
	}{
		{a, false, 1, 0},
		{a, true, 1, 1},
		{a, true, 1, 2},
		{a2, false, 1, 2}, // same measurement, same counters (a replica)
		{b, false, 1, 0},
		{b, true, 1, 1},
		{a, false, 2, 0},
		{a, true, 0xffffffff, 1},
		{a, false, 1, 2},
	}
	for i, s := range steps {
		var v uint64
		var err error
		if s.inc {
			v, err = s.tpm.CounterIncrement(s.id)
		} else {
			v, err = s.tpm.CounterRead(s.id)
		}
		if err != nil || v != s.want {
			t.Fatalf("step %d: %d, %v; want %d", i, v, err, s.want)
		}
	}

	id, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fp, _ := utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: make([]byte, 32), Identity: id, Counters: failingCounters{}})
	_, err := fp.NewTPM(palA).CounterRead(1)
	wantErr(t, err, utpm.ErrInternal)
	_, err = fp.NewTPM(palA).CounterIncrement(1)
	wantErr(t, err, utpm.ErrInternal)
	np, _ := utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: make([]byte, 32), Identity: id})
	_, err = np.NewTPM(palA).CounterIncrement(1)
	wantErr(t, err, utpm.ErrUnsupported)
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int32
	}{
		{nil, 0},
		{utpm.ErrInvalid, 1},
		{utpm.ErrPCR, 4},
		{utpm.ErrTampered, 5},
		{utpm.ErrForeign, 6},
		{utpm.ErrWrongPAL, 7},
		{utpm.ErrPCRMismatch, 8},
		{utpm.ErrWrongType, 9},
		{utpm.ErrUnsupported, 10},
		{utpm.ErrTooLarge, 11},
		{utpm.ErrInternal, 12},
		{utpm.ErrMalformed, 13},
		{utpm.ErrNotAuthorized, 14},
		{fmt.Errorf("%w: %w", utpm.ErrNotAuthorized, errors.New("not listed")), 14},
		{fmt.Errorf("unseal: %w", utpm.ErrWrongPAL), 7},
		{fmt.Errorf("counter: %w: %w", utpm.ErrInternal, io.ErrUnexpectedEOF), 12},
		{fmt.Errorf("x: %w: %w", utpm.ErrInternal, utpm.ErrTampered), 12},
		{errors.New("something else"), 12},
	} {
		if got := utpm.Code(tc.err); got != tc.code {
			t.Errorf("Code(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// TestHammer runs every operation on shared µTPMs from many goroutines (run with -race).
func TestHammer(t *testing.T) {
	p := newPlatform(t, randomMaster(t))
	a, b := p.NewTPM(palA), p.NewTPM(palB)
	kblob, _, err := a.KeyCreate(utpm.KeyECDSAP256, utpm.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				if err := a.Extend(1+i%7, utpm.Digest{byte(g)}); err != nil {
					errs <- err
					return
				}
				data := []byte(fmt.Sprint(g, i))
				// Target other PAL: data blobs per (type, target) share cached AEADs.
				blob, err := a.Seal(data, utpm.Policy{Target: palB})
				if err != nil {
					errs <- err
					return
				}
				got, creator, err := b.Unseal(blob)
				if err != nil || !bytes.Equal(got, data) || creator != palA {
					errs <- fmt.Errorf("unseal: %v", err)
					return
				}
				if _, err := a.Quote([]byte{byte(i)}, nil, 0xff); err != nil {
					errs <- err
					return
				}
				if _, err := a.KeySign(kblob, utpm.SchemeECDSA, utpm.HashSHA256, make([]byte, 32)); err != nil {
					errs <- err
					return
				}
				if _, err := b.CounterIncrement(uint32(g % 2)); err != nil {
					errs <- err
					return
				}
				_ = a.PCRs()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v0, _ := b.CounterRead(0)
	v1, _ := b.CounterRead(1)
	if v0+v1 != 8*30 {
		t.Fatalf("counters %d+%d, want %d increments", v0, v1, 8*30)
	}
}
