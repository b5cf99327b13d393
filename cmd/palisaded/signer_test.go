package main

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/palisade-project/palisade/client"
)

var cryptoSHA256 = crypto.SHA256

// tlsRoundTrip serves TLS 1.3 with signer's key (the certificate itself is signed by it too)
// and checks that a client that trusts the certificate completes a handshake and an exchange,
// then signs and verifies through x/crypto/ssh.
func tlsRoundTrip(t *testing.T, signer *client.Signer) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pal.test"}, DNSNames: []string{"pal.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		t.Fatalf("self-signing through the PAL: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)

	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: signer}},
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "pal.test"})
	if err != nil {
		t.Fatalf("TLS handshake with a PAL-held key: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo over TLS: %q %v", buf, err)
	}

	ss, err := ssh.NewSignerFromSigner(signer)
	if err != nil {
		t.Fatal(err)
	}
	// ssh-rsa means SHA-1, which the µTPM does not sign; SSH servers negotiate rsa-sha2-256.
	alg := ss.PublicKey().Type()
	if alg == ssh.KeyAlgoRSA {
		alg = ssh.KeyAlgoRSASHA256
	}
	sig, err := ss.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, []byte("ssh session data"), alg)
	if err != nil {
		t.Fatalf("ssh sign through the PAL: %v", err)
	}
	if err := ss.PublicKey().Verify([]byte("ssh session data"), sig); err != nil {
		t.Fatalf("ssh signature: %v", err)
	}
}
