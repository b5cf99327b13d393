package keys_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/wasm"
	"github.com/palisade-project/palisade/internal/keys"
	"github.com/palisade-project/palisade/internal/rot/none"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/internal/visor"
)

// daemon is the part of palisaded the service runs in: a real development root of trust, the
// wasm engine, a visor and the bbolt state db, all in dir so that a second daemon on the same
// dir is a restart.
type daemon struct {
	dir    string
	s      *keys.Service
	mu     sync.Mutex
	events []keys.AuditEvent
	close  func()
}

func start(t testing.TB, dir string, opts ...func(*keys.Config)) *daemon {
	t.Helper()
	root, err := none.Open(filepath.Join(dir, "rot"), utpm.Digest{1})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := wasm.New(wasm.WithCacheDir(filepath.Join(dir, "cache")))
	if err != nil {
		t.Fatal(err)
	}
	v, err := visor.New(visor.Config{Root: root, Engines: []engine.Engine{eng}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{dir: dir}
	cfg := keys.Config{
		Visor: v, DB: db, Replicas: 2, Logger: slog.New(slog.DiscardHandler),
		Audit: func(ev keys.AuditEvent, _ bool) error {
			d.mu.Lock()
			d.events = append(d.events, ev)
			d.mu.Unlock()
			return nil
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	d.s, err = keys.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	d.close = func() {
		once.Do(func() {
			ctx := context.Background()
			if err := v.Close(ctx); err != nil {
				t.Errorf("visor Close: %v", err)
			}
			eng.Close(ctx)
			db.Close()
			root.Close()
		})
	}
	t.Cleanup(d.close)
	return d
}

// restart stops d and starts a daemon on the same state.
func (d *daemon) restart(t testing.TB) *daemon {
	d.close()
	return start(t, d.dir)
}

func (d *daemon) denials(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, ev := range d.events {
		if ev.Event == "key_denied" && ev.Key == name {
			n++
		}
	}
	return n
}

var (
	root  = keys.Caller{UID: 0, GID: 0}
	www   = keys.Caller{UID: 33, GID: 33}
	alice = keys.Caller{UID: 1000, GID: 1000, Groups: []uint32{27, 1000}}
)

// sign signs msg with the key's natural scheme and verifies the signature with its public key.
func sign(t testing.TB, s *keys.Service, c keys.Caller, name string, pin []byte) error {
	t.Helper()
	ctx := context.Background()
	info, err := s.Find(ctx, c, name)
	if err != nil {
		return err
	}
	pub, err := x509.ParsePKIXPublicKey(info.PublicDER)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello " + name)
	d := sha256.Sum256(msg)
	req := keys.SignRequest{Hash: signreq.HashSHA256, Digest: d[:], PIN: pin}
	switch info.Alg {
	case keys.ECDSAP256:
		req.Scheme = signreq.SchemeECDSA
	case keys.Ed25519:
		req.Scheme, req.Hash, req.Digest = signreq.SchemeEdDSA, signreq.HashNone, msg
	default:
		req.Scheme = signreq.SchemeRSAPSS
	}
	sig, err := s.Sign(ctx, c, name, req)
	if err != nil {
		return err
	}
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, d[:], sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, msg, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPSS(k, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	}
	if !ok {
		t.Fatalf("signature of %s does not verify with its public key", name)
	}
	return nil
}

func TestCreateSignEveryAlgorithm(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	for _, alg := range []keys.Alg{keys.ECDSAP256, keys.Ed25519, keys.RSA2048, keys.RSA3072} {
		t.Run(string(alg), func(t *testing.T) {
			info, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "k-" + string(alg), Alg: alg})
			if err != nil {
				t.Fatal(err)
			}
			if info.Alg != alg || info.Owner != 0 || info.Imported || info.SignerPAL != d.s.SignerMeasurement() ||
				info.KeyGenPAL != d.s.KeyGenMeasurement() || info.Created.IsZero() {
				t.Errorf("info = %+v", info)
			}
			if err := sign(t, d.s, root, info.Name, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAccess(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "web", Alg: keys.ECDSAP256, AllowUIDs: []uint32{33}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "sudoers", Alg: keys.ECDSAP256, AllowGIDs: []uint32{27}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    keys.Caller
		key  string
		want error
	}{
		{root, "web", nil},
		{www, "web", nil},
		{alice, "web", keys.ErrDenied},
		{alice, "sudoers", nil}, // by a supplementary group
		{www, "sudoers", keys.ErrDenied},
		{www, "nosuch", keys.ErrNotFound},
	} {
		before := d.denials(tc.key)
		err := sign(t, d.s, tc.c, tc.key, nil)
		if !errors.Is(err, tc.want) {
			t.Errorf("uid %d signs with %s: %v, want %v", tc.c.UID, tc.key, err, tc.want)
		}
		if got := d.denials(tc.key) - before; (tc.want == keys.ErrDenied) != (got == 1) {
			t.Errorf("uid %d signs with %s: %d denials audited", tc.c.UID, tc.key, got)
		}
	}
	// Only the owner manages a key; users see the keys they may use.
	if err := d.s.Delete(ctx, www, "web"); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("www deletes web: %v", err)
	}
	if _, err := d.s.SetAccess(ctx, www, "web", []uint32{1000}, nil); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("www changes access of web: %v", err)
	}
	l, err := d.s.List(ctx, www)
	if err != nil || len(l) != 1 || l[0].Name != "web" {
		t.Errorf("List(www) = %v, %v", l, err)
	}
	if _, err := d.s.SetAccess(ctx, root, "web", nil, []uint32{1000}); err != nil {
		t.Fatal(err)
	}
	if err := sign(t, d.s, www, "web", nil); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("www after its removal: %v", err)
	}
	if err := sign(t, d.s, alice, "web", nil); err != nil {
		t.Errorf("alice by her gid: %v", err)
	}
	if err := d.s.Delete(ctx, root, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.s.Find(ctx, root, "web"); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Find after Delete: %v", err)
	}
}

func TestKeysSurviveRestart(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	created, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "web", Alg: keys.ECDSAP256, AllowUIDs: []uint32{33}})
	if err != nil {
		t.Fatal(err)
	}
	d = d.restart(t)
	got, err := d.s.Find(ctx, www, "web")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.PublicDER) != string(created.PublicDER) || got.Created != created.Created {
		t.Errorf("after restart: %+v, want %+v", got, created)
	}
	if err := sign(t, d.s, www, "web", nil); err != nil {
		t.Fatal(err)
	}
	if err := sign(t, d.s, alice, "web", nil); !errors.Is(err, keys.ErrDenied) {
		t.Errorf("alice after restart: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	d := start(t, t.TempDir(), func(c *keys.Config) { c.MaxKeysPerOwner = 2 })
	ctx := context.Background()
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "ec", Alg: keys.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    keys.CreateOptions
		want error
	}{
		{"empty name", keys.CreateOptions{Alg: keys.ECDSAP256}, keys.ErrBadRequest},
		{"slash", keys.CreateOptions{Name: "a/b", Alg: keys.ECDSAP256}, keys.ErrBadRequest},
		{"dot first", keys.CreateOptions{Name: ".a", Alg: keys.ECDSAP256}, keys.ErrBadRequest},
		{"long name", keys.CreateOptions{Name: string(make([]byte, 129)), Alg: keys.ECDSAP256}, keys.ErrBadRequest},
		{"alg", keys.CreateOptions{Name: "a", Alg: "dsa-1024"}, keys.ErrBadRequest},
		{"exists", keys.CreateOptions{Name: "ec", Alg: keys.ECDSAP256}, keys.ErrExists},
		{"allow", keys.CreateOptions{Name: "a", Alg: keys.ECDSAP256, AllowUIDs: make([]uint32, 65)}, keys.ErrBadRequest},
		{"pin", keys.CreateOptions{Name: "a", Alg: keys.ECDSAP256, PIN: make([]byte, 65)}, keys.ErrBadRequest},
		{"signer image", keys.CreateOptions{Name: "a", Alg: keys.ECDSAP256, SignerImage: []byte("not wasm")}, keys.ErrBadRequest},
		{"second key", keys.CreateOptions{Name: "ec2", Alg: keys.ECDSAP256}, nil},
		{"third key over the limit", keys.CreateOptions{Name: "ec3", Alg: keys.ECDSAP256}, keys.ErrBadRequest},
	} {
		if _, err := d.s.Create(ctx, root, tc.o); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Import checks a new key's options as Create does.
	for _, tc := range []struct {
		name string
		o    keys.CreateOptions
		want error
	}{
		{"empty name", keys.CreateOptions{}, keys.ErrBadRequest},
		{"exists", keys.CreateOptions{Name: "ec"}, keys.ErrExists},
		{"allow", keys.CreateOptions{Name: "a", AllowGIDs: make([]uint32, 65)}, keys.ErrBadRequest},
		{"pin", keys.CreateOptions{Name: "a", PIN: make([]byte, 65)}, keys.ErrBadRequest},
		{"signer image", keys.CreateOptions{Name: "a", SignerImage: []byte("not wasm")}, keys.ErrBadRequest},
	} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.s.Import(ctx, root, keys.ImportOptions{CreateOptions: tc.o, PKCS8: pkcs8}); !errors.Is(err, tc.want) {
			t.Errorf("import, %s: %v, want %v", tc.name, err, tc.want)
		}
	}
	d32 := make([]byte, 32)
	for _, tc := range []struct {
		name string
		req  keys.SignRequest
		want error
	}{
		{"empty digest", keys.SignRequest{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256}, keys.ErrBadRequest},
		{"short digest", keys.SignRequest{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d32[:20]}, keys.ErrBadRequest},
		{"RSA scheme", keys.SignRequest{Scheme: signreq.SchemeRSAPSS, Hash: signreq.HashSHA256, Digest: d32}, keys.ErrBadRequest},
		{"unknown hash", keys.SignRequest{Scheme: signreq.SchemeECDSA, Hash: 0x99, Digest: d32}, keys.ErrBadRequest},
		{"huge", keys.SignRequest{Scheme: signreq.SchemeEdDSA, Digest: make([]byte, keys.MaxDigest+1)}, keys.ErrBadRequest},
	} {
		if _, err := d.s.Sign(ctx, root, "ec", tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// BenchmarkSign compares a signature through the service (access check, signing PAL, µTPM
// key object) with crypto/ecdsa in memory, in the same run.
func BenchmarkSign(b *testing.B) {
	d := start(b, b.TempDir())
	ctx := context.Background()
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "ec", Alg: keys.ECDSAP256}); err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	req := keys.SignRequest{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: digest[:]}
	b.Run("service/ecdsa-p256", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := d.s.Sign(ctx, root, "ec", req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b.Run("memory/ecdsa-p256", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := ecdsa.SignASN1(rand.Reader, k, digest[:]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// TestUnusableKeySaysWhy moves a key's state to a daemon with another master secret (a lost
// or replaced root of trust): the key is listed, and signing fails with ErrUnavailable saying
// that its blob was made under another master secret.
func TestUnusableKeySaysWhy(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "k", Alg: keys.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	d.close()
	if err := os.RemoveAll(filepath.Join(d.dir, "rot")); err != nil {
		t.Fatal(err)
	}
	d = start(t, d.dir)
	if _, err := d.s.Find(ctx, root, "k"); err != nil {
		t.Fatal(err)
	}
	err := sign(t, d.s, root, "k", nil)
	if !errors.Is(err, keys.ErrUnavailable) || !strings.Contains(err.Error(), "E_FOREIGN") || !strings.Contains(err.Error(), "another master secret") {
		t.Fatalf("sign with a key of another platform: %v", err)
	}
}

// TestHammer signs from many goroutines with two keys, one with a PIN whose state is renewed
// by failures, while the access list of a third changes and keys are created and deleted:
// every signature verifies and nothing races (run with -race).
func TestHammer(t *testing.T) {
	d := start(t, t.TempDir())
	ctx := context.Background()
	for _, o := range []keys.CreateOptions{
		{Name: "a", Alg: keys.ECDSAP256, AllowUIDs: []uint32{33}},
		{Name: "b", Alg: keys.Ed25519, PIN: []byte("9"), MaxTries: 200, AllowUIDs: []uint32{33}},
		{Name: "c", Alg: keys.ECDSAP256},
	} {
		if _, err := d.s.Create(ctx, root, o); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				var err error
				switch (g + i) % 4 {
				case 0:
					err = sign(t, d.s, www, "a", nil)
				case 1:
					err = sign(t, d.s, www, "b", []byte("9"))
				case 2:
					if err = sign(t, d.s, www, "b", []byte("0")); errors.Is(err, keys.ErrPINIncorrect) {
						err = nil
					}
				case 3:
					_, err = d.s.SetAccess(ctx, root, "c", []uint32{uint32(i)}, nil)
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d, step %d: %w", g, i, err)
					return
				}
			}
		}(g)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 5; i++ {
			name := fmt.Sprintf("tmp%d", i)
			if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: name, Alg: keys.ECDSAP256}); err != nil {
				errs <- err
				return
			}
			if err := d.s.Delete(ctx, root, name); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := sign(t, d.s, www, "b", []byte("9")); err != nil {
		t.Fatalf("after the hammer: %v", err)
	}
}
