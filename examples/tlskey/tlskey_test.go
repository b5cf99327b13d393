package tlskey_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-project/palisade/client"
	"github.com/palisade-project/palisade/client/signreq"
	"github.com/palisade-project/palisade/examples/tlskey"
	"github.com/palisade-project/palisade/internal/e2e/apps"
)

var (
	setupOnce sync.Once
	setupErr  error
	daemon    *apps.Daemon
	images    tlskey.Images
)

func TestMain(m *testing.M) {
	code := m.Run()
	if daemon != nil {
		daemon.Close(context.Background())
	}
	os.Exit(code)
}

// env starts one private daemon and builds the PALs once per test binary.
func env(t *testing.T) (*client.Client, tlskey.Images) {
	t.Helper()
	ctx := context.Background()
	setupOnce.Do(func() {
		if images.Keygen, setupErr = apps.BuildGoPAL(ctx, "examples/tlskey/keygen"); setupErr != nil {
			return
		}
		if images.Signer, setupErr = apps.BuildGoPAL(ctx, "examples/tlskey/signer"); setupErr != nil {
			return
		}
		daemon, setupErr = apps.StartDaemon(ctx, apps.DaemonOptions{Engines: []string{"wasm"}})
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	c, err := daemon.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, images
}

func setup(t *testing.T, o tlskey.Options) (*client.Client, *tlskey.Key) {
	c, img := env(t)
	if o.Signers == 0 {
		o.Signers = 1
	}
	k, err := tlskey.Setup(context.Background(), c, img, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close(context.Background()) })
	return c, k
}

// serve runs the example HTTPS server; it returns its address and the certificate's PEM file.
func serve(t *testing.T, k *tlskey.Key) (addr, caFile string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := tlskey.Serve(l, tlskey.ServerConfig(k.Cert), tlskey.Handler())
	t.Cleanup(func() { srv.Close() })
	caFile = filepath.Join(t.TempDir(), "cert.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Cert.Certificate[0]})
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return l.Addr().String(), caFile
}

func need(t *testing.T, tool string) {
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not installed (scripts/setup.sh installs it): %v", tool, err)
	}
}

// TestHTTPSRealClients fetches the page with curl and handshakes with openssl s_client, for
// both key types and both TLS versions, and checks that the server's certificate public key
// is the PAL's.
func TestHTTPSRealClients(t *testing.T) {
	need(t, "curl")
	need(t, "openssl")
	for _, alg := range []tlskey.Alg{tlskey.RSA2048, tlskey.ECDSAP256} {
		t.Run(string(alg), func(t *testing.T) {
			_, k := setup(t, tlskey.Options{Alg: alg})
			addr, ca := serve(t, k)
			_, port, _ := net.SplitHostPort(addr)
			url := "https://localhost:" + port + "/"
			for _, v := range []struct{ curl, openssl, want string }{
				{"--tlsv1.2 --tls-max 1.2", "-tls1_2", "TLSv1.2"},
				{"--tlsv1.3 --tls-max 1.3", "-tls1_3", "TLSv1.3"},
			} {
				args := append([]string{"-sS", "--cacert", ca, "--resolve", "localhost:" + port + ":127.0.0.1"}, strings.Fields(v.curl)...)
				out, err := exec.Command("curl", append(args, url)...).CombinedOutput()
				if err != nil || string(out) != tlskey.Page {
					t.Fatalf("curl %s: %v\n%s", v.want, err, out)
				}
				cmd := exec.Command("openssl", "s_client", "-connect", addr, "-servername", "localhost",
					"-CAfile", ca, "-verify_return_error", "-brief", "-ign_eof", v.openssl)
				cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
				out, err = cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("openssl s_client %s: %v\n%s", v.want, err, out)
				}
				if s := string(out); !strings.Contains(s, "Protocol version: "+v.want) ||
					!strings.Contains(s, "Verification: OK") || !strings.Contains(s, tlskey.Page) {
					t.Fatalf("openssl s_client %s: unexpected output:\n%s", v.want, s)
				}
			}
		})
	}
}

// TestSealedKeyVariant runs variant 2 (the PAL generates and seals the key) with a Go client.
func TestSealedKeyVariant(t *testing.T) {
	_, k := setup(t, tlskey.Options{Alg: tlskey.ECDSAP256, Variant: tlskey.SealedKey})
	addr, _ := serve(t, k)
	pool := x509.NewCertPool()
	pool.AddCert(k.Leaf)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, ServerName: "localhost", MinVersion: v, MaxVersion: v}}}
		resp, err := hc.Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tlskey.Page || resp.TLS.Version != v {
			t.Fatalf("got %q over %x", b, resp.TLS.Version)
		}
	}
}

// TestSignerRefuses sends the signing PAL requests that no TLS server signature has.
func TestSignerRefuses(t *testing.T) {
	c, k := setup(t, tlskey.Options{Alg: tlskey.ECDSAP256})
	h := k.Handles()[0]
	d := sha256.Sum256([]byte("x"))
	long := make([]byte, 64)
	for _, tt := range []struct {
		name string
		in   []byte
		want int32
	}{
		{"ECDSA with SHA-512", signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA512, Digest: long}.Marshal(), tlskey.StatusRefused},
		{"RSA scheme on an EC key", signreq.Request{Scheme: signreq.SchemeRSASSA, Hash: signreq.HashSHA256, Digest: d[:]}.Marshal(), tlskey.StatusRefused},
		{"short digest", signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d[:31]}.Marshal(), tlskey.StatusRefused},
		{"Ed25519 message", signreq.Request{Scheme: signreq.SchemeEdDSA, Digest: []byte("hello")}.Marshal(), tlskey.StatusRefused},
		{"garbage", []byte{1}, tlskey.StatusRefused},
		{"second install", []byte{0xFF, 0xFF, 'K', 1, 2, 3}, tlskey.StatusRefused},
	} {
		res, err := c.Call(context.Background(), h, tt.in)
		if err != nil || res.Status != tt.want {
			t.Errorf("%s: status %d (%s), err %v; want status %d", tt.name, res.Status, res.Output, err, tt.want)
		}
	}
	// And the one it accepts verifies under the public key.
	sig, err := k.Signer().Sign(nil, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(k.Leaf.PublicKey.(*ecdsa.PublicKey), d[:], sig) {
		t.Fatalf("valid request: %v", err)
	}
}

// TestKeyBoundToSigner shows that the key blob is useless to any other PAL: the key-generation
// PAL itself (another measurement) cannot sign with a blob made for the signing PAL, and a
// signing PAL without the blob refuses.
func TestKeyBoundToSigner(t *testing.T) {
	c, img := env(t)
	ctx := context.Background()
	info, err := c.Register(ctx, img.Signer, client.RegisterOptions{Name: "bare-signer"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Unregister(ctx, info.Handle)
	d := sha256.Sum256([]byte("x"))
	res, err := c.Call(ctx, info.Handle, signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d[:]}.Marshal())
	if err != nil || res.Status != tlskey.StatusNoKey {
		t.Fatalf("signer without a key: status %d, err %v", res.Status, err)
	}
	// A key made for a different measurement: installing succeeds (the PAL cannot check), but
	// KEY_SIGN fails with E_WRONGPAL.
	gen, err := c.Register(ctx, img.Keygen, client.RegisterOptions{Name: "keygen"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Unregister(ctx, gen.Handle)
	other := sha256.Sum256([]byte("some other PAL"))
	res, err = c.Call(ctx, gen.Handle, append([]byte{'K', 1}, other[:]...))
	if err != nil || res.Status != 0 {
		t.Fatalf("keygen: %d %s %v", res.Status, res.Output, err)
	}
	pl := int(res.Output[0]) | int(res.Output[1])<<8
	blob := res.Output[4+pl:]
	if res, err := c.Call(ctx, info.Handle, append([]byte{0xFF, 0xFF, 'K', 1}, blob...)); err != nil || res.Status != 0 {
		t.Fatalf("install: %d %s %v", res.Status, res.Output, err)
	}
	res, err = c.Call(ctx, info.Handle, signreq.Request{Scheme: signreq.SchemeECDSA, Hash: signreq.HashSHA256, Digest: d[:]}.Marshal())
	if err != nil || res.Status == 0 || !strings.Contains(string(res.Output), "WRONGPAL") {
		t.Fatalf("signing with a key bound to another PAL: status %d %q, err %v", res.Status, res.Output, err)
	}
}

// TestRSAPSS checks the RSA-PSS path (TLS 1.3 with an RSA key uses it) directly.
func TestRSAPSS(t *testing.T) {
	_, k := setup(t, tlskey.Options{Alg: tlskey.RSA2048})
	d := sha256.Sum256([]byte("y"))
	opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	sig, err := k.Signer().Sign(nil, d[:], opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(k.Leaf.PublicKey.(*rsa.PublicKey), crypto.SHA256, d[:], sig, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Signer().Sign(nil, d[:], crypto.SHA1); err == nil || errors.Is(err, client.ErrSignRefused) {
		t.Fatalf("SHA-1 request: %v (want the client to reject it before the PAL)", err)
	}
	_ = time.Second
}
