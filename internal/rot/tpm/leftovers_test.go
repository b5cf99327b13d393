package tpm

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/palisade-project/palisade/internal/swtpmtest"
)

// crashedClient loads objects and a session into sw over its own connection and goes away
// without flushing them, as a client killed with SIGKILL does. It returns how many it left.
func crashedClient(t *testing.T, sw *swtpmtest.TPM, objects int) int {
	t.Helper()
	c, err := OpenDevice(sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < objects; i++ {
		if _, err := (tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}).Execute(c); err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
	}
	startSession(t, c, tpm2.TPMSEHMAC)
	startSession(t, c, tpm2.TPMSEPolicy)
	return objects + 2
}

func startSession(t *testing.T, c transport.TPM, kind tpm2.TPMSE) {
	t.Helper()
	_, err := tpm2.StartAuthSession{
		TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull,
		NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
		SessionType: kind,
		Symmetric:   tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		AuthHash:    tpm2.TPMAlgSHA256,
	}.Execute(c)
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenFlushesLeftovers: on swtpm's socket (no resource manager), a client that died
// holding all three object slots and two sessions (HMAC, policy) does not stop Open, which flushes them; Close
// leaves nothing loaded.
func TestOpenFlushesLeftovers(t *testing.T) {
	sw := swtpmtest.Start(t)
	exe := visorFile(t, "visor")
	state := t.TempDir()
	r := mustOpen(t, sw, state, exe, nil)
	if r.LeftoversFlushed() != 0 {
		t.Fatalf("fresh TPM: %d leftovers flushed", r.LeftoversFlushed())
	}
	r.Close()

	left := crashedClient(t, sw, 3)
	r = mustOpen(t, sw, state, exe, nil)
	if got := r.LeftoversFlushed(); got != left {
		t.Fatalf("flushed %d leftovers, want %d", got, left)
	}
	if _, err := r.Endorse(t.Context(), []byte("n")); err != nil {
		t.Fatal(err)
	}
	r.Close()

	c, err := OpenDevice(sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		if hs, err := listHandles(c, ht); err != nil || len(hs) != 0 {
			t.Fatalf("after Close, type %#x: %v loaded (%v)", uint8(ht), hs, err)
		}
	}
}

// TestTPMFullNamed: a TPM out of object memory is reported as such (ErrTPMFull), not as a
// sealed object made by another TPM.
func TestTPMFullNamed(t *testing.T) {
	sw := swtpmtest.Start(t)
	c, err := OpenDevice(sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var last error
	for i := 0; i < 16 && last == nil; i++ {
		_, last = tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(c)
	}
	if !errors.Is(last, tpm2.TPMRCObjectMemory) {
		t.Fatalf("filling the TPM: %v", last)
	}
	err = tpmFailure("create SRK", last)
	if !errors.Is(err, ErrTPMFull) || !errors.Is(err, tpm2.TPMRCObjectMemory) || strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("error %v", err)
	}
	t.Log(err)
	if err := tpmFailure("quote", tpm2.TPMRCSignature); errors.Is(err, ErrTPMFull) {
		t.Fatalf("a signature failure named a full TPM: %v", err)
	}
}

func TestHasResourceManager(t *testing.T) {
	for dev, want := range map[string]bool{
		"/dev/tpmrm0": true, "/dev/tpmrm1": true, "/dev/tpm0": false, "swtpm:/tmp/tpmrm0": false,
	} {
		if got := hasResourceManager(dev); got != want {
			t.Errorf("%s: %v, want %v", dev, got, want)
		}
	}
}
