package keys_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/internal/api/server"
	"github.com/palisade-project/palisade/internal/keys"
	"github.com/palisade-project/palisade/internal/tmpfstest"
)

// TestAuditFailureRefuses gives the service the daemon's audit log on a file system that fills
// up: every operation whose record the log cannot take is refused with ErrAudit naming the log
// and changes nothing (no key made, deleted or changed, no signature or attestation returned);
// once space returns, the same operations succeed.
func TestAuditFailureRefuses(t *testing.T) {
	logDir := tmpfstest.Mount(t, 64<<10)
	path := filepath.Join(logDir, "audit.log")
	a, err := server.OpenAudit(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	d := start(t, t.TempDir(), func(c *keys.Config) { c.Audit = server.KeyAudit(a) })
	ctx := context.Background()
	if _, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "ec", Alg: keys.ECDSAP256}); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("x"))
	req := keys.SignRequest{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: digest[:]}
	if _, err := d.s.Sign(ctx, root, "ec", req); err != nil {
		t.Fatal(err)
	}

	free := tmpfstest.Fill(t, logDir)
	// Records that fit the log's last page are still written: sign until one is refused.
	for i := 0; ; i++ {
		sig, err := d.s.Sign(ctx, root, "ec", req)
		if err != nil {
			if !errors.Is(err, keys.ErrAudit) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) || sig != nil {
				t.Fatalf("signature on a full disk: %x %v, want ErrAudit naming %s", sig, err, path)
			}
			break
		}
		if i == 100 {
			t.Fatal("100 signatures on a full disk")
		}
	}
	ops := []struct {
		name string
		run  func() error
	}{
		{"sign", func() error { _, err := d.s.Sign(ctx, root, "ec", req); return err }},
		{"attest", func() error { _, err := d.s.Attest(ctx, root, "ec", []byte("nonce")); return err }},
		{"create", func() error {
			_, err := d.s.Create(ctx, root, keys.CreateOptions{Name: "new", Alg: keys.Ed25519})
			return err
		}},
		{"import", func() error {
			_, err := d.s.Import(ctx, root, keys.ImportOptions{CreateOptions: keys.CreateOptions{Name: "imp"}, PKCS8: newPKCS8(t)})
			return err
		}},
		{"set access", func() error { _, err := d.s.SetAccess(ctx, root, "ec", []uint32{33}, nil); return err }},
		{"set PIN", func() error { _, err := d.s.SetPIN(ctx, root, "ec", nil, []byte("1234"), 0); return err }},
		{"delete", func() error { return d.s.Delete(ctx, root, "ec") }},
	}
	for _, op := range ops {
		if err := op.run(); !errors.Is(err, keys.ErrAudit) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s on a full disk: %v, want ErrAudit naming %s", op.name, err, path)
		}
	}
	// Nothing changed, in memory or in the state db.
	check := func(d *daemon) {
		t.Helper()
		l, err := d.s.List(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != 1 || l[0].Name != "ec" || len(l[0].AllowUIDs) != 0 || l[0].HasPIN {
			t.Errorf("keys after the refusals: %+v, want ec alone, unchanged", l)
		}
	}
	check(d)
	a.Close() // the restarted daemon below has no log; its state is what counts
	d = d.restart(t)
	check(d)
	d.close()

	// Space returns: the operations succeed again.
	free()
	if a, err = server.OpenAudit(path, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	d = start(t, d.dir, func(c *keys.Config) { c.Audit = server.KeyAudit(a) })
	for _, op := range ops {
		if err := op.run(); err != nil {
			t.Errorf("%s after space returned: %v", op.name, err)
		}
	}
	l, err := d.s.List(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range l {
		names = append(names, k.Name)
	}
	if !slices.Equal(names, []string{"imp", "new"}) {
		t.Errorf("keys after space returned: %q", names)
	}
}

func newPKCS8(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
