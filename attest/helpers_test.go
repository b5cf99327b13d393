package attest_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/palisade-project/palisade/internal/swtpmtest"
)

func pemCert(t testing.TB, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func swtpmStartEK(t testing.TB) *swtpmtest.TPM {
	return swtpmtest.Start(t, swtpmtest.WithEKCert())
}
