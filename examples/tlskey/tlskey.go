// Package tlskey is the paper's HTTPS application (TrustVisor §6.3): a web server whose TLS
// private key is created and used only inside PALs, reached through palisaded.
//
//   - The key-generation PAL (keygen/) creates the key bound to the signing PAL's measurement
//     and returns only the public key and an opaque blob.
//   - The signing PAL (signer/) is given the blob once and then answers TLS handshake
//     signature requests (client/signreq), refusing any request of another shape.
//   - The server is plain crypto/tls whose certificate's PrivateKey is a crypto.Signer built
//     from client.NewSigner; the self-signed certificate itself is signed by the PAL too.
//
// As each child of the paper's prefork Apache had its own PAL, Setup registers several signing
// PALs (one per core by default) and Key spreads handshakes over them: one PAL instance runs
// one call at a time.
package tlskey

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/palisade-project/palisade/client"
)

// Alg is a server key type.
type Alg string

const (
	RSA2048   Alg = "rsa2048"
	RSA3072   Alg = "rsa3072"
	ECDSAP256 Alg = "ecdsa-p256"
)

// abiAlg maps to the µTPM's KEY_CREATE algorithm ids (docs/abi.md §3).
var abiAlg = map[Alg]byte{ECDSAP256: 1, RSA2048: 3, RSA3072: 4}

// Variant says who generates the key.
type Variant int

const (
	// KeyObject: a µTPM key object; the private key never enters PAL memory (default).
	KeyObject Variant = iota
	// SealedKey: the keygen PAL generates an ECDSA P-256 key with its own crypto and seals it
	// for the signing PAL, which unseals it into its memory and signs in the PAL (the paper's
	// design). ECDSA P-256 only.
	SealedKey
)

// Images are the two PAL images (build them with apps.BuildGoPAL or scripts/demo.sh).
type Images struct{ Keygen, Signer []byte }

// Options configure Setup.
type Options struct {
	Alg     Alg
	Variant Variant
	Signers int    // signing PALs to register; 0 means runtime.NumCPU()
	Engine  string // "" picks by image kind
	Hosts   []string
	// Logger receives what an operator must see: a signing PAL that lost its key or its
	// registration (palisaded restarted) and was set up again, and signing failures, which
	// the TLS server itself does not log. nil means slog.Default().
	Logger *slog.Logger
}

// Key is a TLS server key held by signing PALs.
type Key struct {
	c                 *client.Client
	pool              *pool
	handles           []string
	Cert              tls.Certificate
	Leaf              *x509.Certificate
	SignerMeasurement [32]byte
	Creation          time.Duration
}

// Status codes of the signing PAL (signer/main.go).
const (
	StatusRefused = 2
	StatusNoKey   = 3
)

// Setup registers the PALs, creates the key, installs it in every signing PAL and issues a
// self-signed certificate signed through the PALs.
func Setup(ctx context.Context, c *client.Client, img Images, o Options) (k *Key, err error) {
	a, ok := abiAlg[o.Alg]
	if !ok {
		return nil, fmt.Errorf("tlskey: unknown key algorithm %q", o.Alg)
	}
	if o.Variant == SealedKey && o.Alg != ECDSAP256 {
		return nil, errors.New("tlskey: the sealed-key variant generates ECDSA P-256 keys only")
	}
	n := o.Signers
	if n <= 0 {
		n = runtime.NumCPU()
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	k = &Key{c: c}
	defer func() {
		if err != nil {
			k.Close(context.Background())
		}
	}()
	reg := client.RegisterOptions{Name: "tlskey-signer", Engine: o.Engine}
	for i := 0; i < n; i++ {
		info, err := c.Register(ctx, img.Signer, reg)
		if err != nil {
			return k, fmt.Errorf("register signing PAL: %w", err)
		}
		k.handles = append(k.handles, info.Handle)
		k.SignerMeasurement = info.Measurement
	}
	gen, err := c.Register(ctx, img.Keygen, client.RegisterOptions{Name: "tlskey-keygen", Engine: o.Engine})
	if err != nil {
		return k, fmt.Errorf("register key-generation PAL: %w", err)
	}
	// The key-generation PAL runs once; unregistering it destroys its µTPM and memory.
	defer c.Unregister(context.Background(), gen.Handle)

	t0 := time.Now()
	var in, install []byte
	if o.Variant == SealedKey {
		in = append([]byte{'S'}, k.SignerMeasurement[:]...)
	} else {
		in = append([]byte{'K', a}, k.SignerMeasurement[:]...)
	}
	out, err := call(ctx, c, gen.Handle, in)
	if err != nil {
		return k, fmt.Errorf("key generation: %w", err)
	}
	k.Creation = time.Since(t0)
	if len(out) < 4 || uint64(binary.LittleEndian.Uint32(out)) > uint64(len(out)-4) {
		return k, fmt.Errorf("key generation: malformed output (%d bytes)", len(out))
	}
	pl := binary.LittleEndian.Uint32(out)
	pubRaw, blob := out[4:4+pl], out[4+pl:]
	var pub crypto.PublicKey
	if o.Variant == SealedKey {
		pub, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pubRaw)
		install = append([]byte{0xFF, 0xFF, 'S'}, blob...)
	} else {
		pub, err = x509.ParsePKIXPublicKey(pubRaw)
		install = append([]byte{0xFF, 0xFF, 'K', a}, blob...)
	}
	if err != nil {
		return k, fmt.Errorf("key generation: public key: %w", err)
	}
	free := make(chan *slot, len(k.handles))
	for _, h := range k.handles {
		if _, err := call(ctx, c, h, install); err != nil {
			return k, fmt.Errorf("install key in %s: %w", h, err)
		}
		s, err := client.NewSigner(c, h, pub)
		if err != nil {
			return k, err
		}
		free <- &slot{handle: h, s: s}
	}
	// Only a complete pool is set: Close drains every slot of it.
	k.pool = &pool{pub: pub, c: c, image: img.Signer, reg: reg, install: install, log: log, free: free}
	if err := k.selfSign(o.Hosts); err != nil {
		return k, err
	}
	return k, nil
}

func call(ctx context.Context, c *client.Client, h string, in []byte) ([]byte, error) {
	res, err := c.Call(ctx, h, in)
	if err != nil {
		return nil, err
	}
	if res.Status != 0 {
		return nil, fmt.Errorf("PAL status %d: %s", res.Status, res.Output)
	}
	return res.Output, nil
}

// selfSign issues the server certificate; its signature is made by the signing PAL, and
// checked here against the PAL's public key.
func (k *Key) selfSign(hosts []string) error {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"Palisade tlskey example"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if _, ok := k.pool.pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.pool.pub, k.pool)
	if err != nil {
		return fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	if err := leaf.CheckSignatureFrom(leaf); err != nil {
		return fmt.Errorf("self-signed certificate made by the PAL does not verify: %w", err)
	}
	k.Leaf = leaf
	k.Cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k.pool, Leaf: leaf}
	return nil
}

// Signer is the crypto.Signer that spreads requests over the signing PALs.
func (k *Key) Signer() crypto.Signer { return k.pool }

// Handles are the signing PALs' handles at Setup (a PAL registered again after a daemon
// restart that lost it gets a new handle; Close unregisters those too).
func (k *Key) Handles() []string { return k.handles }

// Close unregisters the signing PALs. The key blob stays usable by any PAL with the signing
// PAL's measurement; a server that keeps it can register the signer again later.
func (k *Key) Close(ctx context.Context) error {
	var errs []error
	if k.pool != nil {
		// Waits for signatures in flight; a PAL registered again has a new handle.
		for range cap(k.pool.free) {
			errs = append(errs, k.c.Unregister(ctx, (<-k.pool.free).handle))
		}
		k.pool = nil
	} else {
		for _, h := range k.handles {
			errs = append(errs, k.c.Unregister(ctx, h))
		}
	}
	k.handles = nil
	return errors.Join(errs...)
}

// pool is a crypto.Signer over several signing PALs: each request takes an idle one.
//
// A signing PAL keeps its key only in its memory. When palisaded restarts it restores the
// registration but not that memory, and the PAL answers StatusNoKey: the pool installs the
// key blob again (it is useless to anyone but a PAL of the signer's measurement) and retries.
// A daemon that lost the registration itself (its state was wiped) gets the signing PAL
// registered again. Both are logged, as is any signing failure.
type pool struct {
	pub     crypto.PublicKey
	c       *client.Client
	image   []byte
	reg     client.RegisterOptions
	install []byte
	log     *slog.Logger
	free    chan *slot
}

type slot struct {
	handle string
	s      *client.Signer
}

func (p *pool) Public() crypto.PublicKey { return p.pub }

func (p *pool) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sl := <-p.free
	defer func() { p.free <- sl }()
	sig, err := sl.s.Sign(r, digest, opts)
	if err == nil {
		return sig, nil
	}
	var refused *client.RefusedError
	switch {
	case errors.As(err, &refused) && refused.Status == StatusNoKey:
		p.log.Warn("tlskey: signing PAL has no key (palisaded restarted?): installing it again", "handle", sl.handle)
	case errors.Is(err, client.ErrNotFound):
		p.log.Warn("tlskey: signing PAL is gone (palisaded lost its state?): registering it again", "handle", sl.handle)
		if err := p.reregister(sl); err != nil {
			p.log.Error("tlskey: cannot register the signing PAL again", "err", err)
			return nil, err
		}
	default:
		p.log.Error("tlskey: signing failed", "handle", sl.handle, "err", err)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := call(ctx, p.c, sl.handle, p.install); err != nil {
		p.log.Error("tlskey: cannot install the key again", "handle", sl.handle, "err", err)
		return nil, fmt.Errorf("install key in %s: %w", sl.handle, err)
	}
	if sig, err = sl.s.Sign(r, digest, opts); err != nil {
		p.log.Error("tlskey: signing failed after reinstalling the key", "handle", sl.handle, "err", err)
	}
	return sig, err
}

func (p *pool) reregister(sl *slot) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := p.c.Register(ctx, p.image, p.reg)
	if err != nil {
		return fmt.Errorf("register signing PAL: %w", err)
	}
	s, err := client.NewSigner(p.c, info.Handle, p.pub)
	if err != nil {
		return err
	}
	sl.handle, sl.s = info.Handle, s
	return nil
}

// ServerConfig is the TLS configuration of a server with certificate cert: TLS 1.2 and 1.3,
// no session tickets (every connection makes a full handshake, so every one uses the key).
func ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates:           []tls.Certificate{cert},
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
	}
}

// Page is what the example server serves: small, as in the paper's measurement.
const Page = "hello from palisade: this TLS handshake was signed inside a PAL\n"

// Handler serves Page.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, Page)
	})
}

// Serve serves HTTPS on l with cfg until the returned server is shut down.
func Serve(l net.Listener, cfg *tls.Config, h http.Handler) *http.Server {
	// Handshake errors of clients that hang up are routine under load: not logged.
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(l, cfg))
	return srv
}
