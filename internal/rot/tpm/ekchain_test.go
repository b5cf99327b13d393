package tpm

import (
	"context"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/internal/swtpmtest"
)

func pemDER(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

// TestEKChainChecked: Open accepts a chain that leads from the TPM's EK certificate upward
// (swtpm's local CA: intermediate, then root) and refuses, naming the link, one that does not.
func TestEKChainChecked(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.WithEKCert())
	issuer, root := pemDER(t, sw.IssuerPEM), pemDER(t, sw.RootCAPEM)
	exe := visorFile(t, "visor")
	state := t.TempDir() // one state: the NV counter anchors it
	for _, tc := range []struct {
		name  string
		chain [][]byte
		ok    bool
	}{
		{"none", nil, true},
		{"intermediate", [][]byte{issuer}, true},
		{"intermediate and root", [][]byte{issuer, root}, true},
		{"root only: did not issue the EK certificate", [][]byte{root}, false},
		{"wrong order", [][]byte{root, issuer}, false},
		{"not a certificate", [][]byte{[]byte("junk")}, false},
		{"too long", [][]byte{issuer, root, root, root, root, root, root, root, root}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Open(context.Background(), Config{Device: sw.Device(), StateDir: state,
				Visor: VisorInputs{Executable: exe}, EKChain: tc.chain})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				r.Close()
				return
			}
			if !errors.Is(err, ErrEKChain) {
				t.Fatalf("Open: %v, want ErrEKChain", err)
			}
			t.Log(err)
		})
	}

	// A TPM without an EK certificate cannot send a chain.
	bare := swtpmtest.Start(t)
	_, err := Open(context.Background(), Config{Device: bare.Device(), StateDir: t.TempDir(),
		Visor: VisorInputs{Executable: exe}, EKChain: [][]byte{issuer}})
	if !errors.Is(err, ErrEKChain) {
		t.Fatalf("Open without EK certificate: %v, want ErrEKChain", err)
	}
	t.Log(err)
}
