// Package conformance is the one test suite that every PAL engine runs: each µTPM call through
// the ABI (docs/abi.md), the error codes, the limits (timeout, memory, input and output caps),
// hostile hostcall arguments and instance resets.
//
// The test PAL is one freestanding C source, testdata/c/conformance.c, built per target, plus
// a Go PAL with the same command protocol (testdata/go). The first input byte selects a
// command; a failed µTPM call makes the PAL return the positive ABI error code as its status.
//
// An engine's tests call Run with a Target:
//
//	conformance.Run(t, conformance.Target{Name: "wasm-c", Engine: e, Build: conformance.BuildCWasm})
//
// Adding the native x86-64 build (engine "kvm"): put it in a file of this package named
// *_native*.go (the KVM helper owns those and testdata/native/), providing
//
//	func BuildCNative(t testing.TB, variant string) []byte
//
// that compiles CSource() with sdk/c/palisade.c, libc.c, sha256.c and the x86-64 entry stub
// (sdk/c/x86_64), with -D VariantDefine(variant), freestanding (gcc -ffreestanding
// -fno-builtin -nostdlib -static), returning the ELF image; cache it like BuildCWasm (per test
// binary). conformance.c includes only palisade.h and uses no libc header; its only
// target-specific code is the 'A' command (memory.grow on wasm, touching pages past the image
// natively). engine/kvm's tests then call Run with Build: conformance.BuildCNative and, if the
// engine reports exhaustion as a trap, OOMError: engine.ErrTrap.
package conformance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade-project/palisade/attest"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
	"github.com/palisade-project/palisade/pal"
)

// Target is one engine with one way of building the test PAL.
type Target struct {
	Name   string
	Engine engine.Engine
	// Build returns the test PAL's image for a variant: "a" and "b" differ only in their
	// measurement (and in what command 'v' returns).
	Build func(t testing.TB, variant string) []byte
	// OOMError is the error a PAL that allocates without bound must produce. Nil accepts
	// engine.ErrOutOfMemory or engine.ErrTrap.
	OOMError error
}

// Statuses of the test PAL besides ABI error codes.
const (
	StatusBadArgs = 254
	StatusUnknown = 255
)

// TestLimits are the limits of the suite's instances unless a test says otherwise. The timeout
// is generous because the kvm engine's tests also run under QEMU's emulation, where an
// RSA-3072 key generation (in the µTPM, emulated too) took over 10 s on a loaded machine.
var TestLimits = engine.Limits{Timeout: 60 * time.Second, MemoryMiB: 64, MaxInput: 256 << 10, MaxOutput: 256 << 10}

type suite struct {
	tgt  Target
	plat *utpm.Platform
}

// Run runs the whole suite against tgt.
func Run(t *testing.T, tgt Target) {
	s := &suite{tgt: tgt, plat: NewPlatform(t)}
	tests := []struct {
		name string
		f    func(*testing.T)
	}{
		{"Null", s.testNull},
		{"Variants", s.testVariants},
		{"ExtendRead", s.testExtendRead},
		{"SealOwn", s.testSealOwn},
		{"SealForOther", s.testSealForOther},
		{"SealToName", s.testSealToName},
		{"SealTampered", s.testTampered},
		{"SealPCRBound", s.testPCRBound},
		{"Quote", s.testQuote},
		{"Random", s.testRandom},
		{"IdentityPublic", s.testIdentity},
		{"Keys", s.testKeys},
		{"KeyBlobTypes", s.testKeyBlobTypes},
		{"Counters", s.testCounters},
		{"Log", s.testLog},
		{"SHA256", s.testSHA256},
		{"HostileHostcalls", s.testFaults},
		{"MemoryPersists", s.testMemoryPersists},
		{"Timeout", s.testTimeout},
		{"Sleep", s.testSleep},
		{"OutOfMemory", s.testOOM},
		{"Trap", s.testTrap},
		{"TrapAtMemoryCap", s.testTrapAtCap},
		{"OutputTooLarge", s.testOutputTooLarge},
		{"OutputHostcallLimit", s.testOutputHostcallLimit},
		{"InputTooLarge", s.testInputTooLarge},
		{"Parallel", s.testParallel},
		{"Closed", s.testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.f)
	}
}

// PAL is one registered test PAL.
type PAL struct {
	Inst engine.Instance
	Host *Host
	M    utpm.Digest
}

func (s *suite) register(t testing.TB, variant string, lim engine.Limits) *PAL {
	t.Helper()
	ctx := context.Background()
	img, err := pal.Parse(s.tgt.Build(t, variant))
	if err != nil {
		t.Fatalf("parse PAL: %v", err)
	}
	mod, err := s.tgt.Engine.Compile(ctx, img)
	if err != nil {
		t.Fatalf("compile PAL: %v", err)
	}
	t.Cleanup(func() { mod.Close(ctx) })
	h := &Host{T: s.plat.NewTPM(utpm.Digest(img.Measurement))}
	inst, err := mod.Instantiate(ctx, h, lim)
	if err != nil {
		t.Fatalf("instantiate PAL: %v", err)
	}
	t.Cleanup(func() { inst.Close(ctx) })
	return &PAL{Inst: inst, Host: h, M: utpm.Digest(img.Measurement)}
}

func input(cmd byte, args ...[]byte) []byte {
	in := []byte{cmd}
	for _, a := range args {
		in = append(in, a...)
	}
	return in
}

// Try runs one command.
func (p *PAL) Try(ctx context.Context, cmd byte, args ...[]byte) (engine.Result, error) {
	return p.Inst.Call(ctx, input(cmd, args...))
}

// status runs a command that must not fail at the platform level and returns its status.
func (p *PAL) status(t testing.TB, cmd byte, args ...[]byte) (int32, []byte) {
	t.Helper()
	r, err := p.Try(context.Background(), cmd, args...)
	if err != nil {
		t.Fatalf("command %q: %v", cmd, err)
	}
	return r.Status, r.Output
}

// ok runs a command that must succeed and returns its output.
func (p *PAL) ok(t testing.TB, cmd byte, args ...[]byte) []byte {
	t.Helper()
	st, out := p.status(t, cmd, args...)
	if st != 0 {
		t.Fatalf("command %q: status %d (%s)", cmd, st, codeName(st))
	}
	return out
}

// code runs a command that must fail with the ABI error code want.
func (p *PAL) code(t testing.TB, want int32, cmd byte, args ...[]byte) {
	t.Helper()
	if st, _ := p.status(t, cmd, args...); st != want {
		t.Fatalf("command %q: status %d (%s), want %d (%s)", cmd, st, codeName(st), want, codeName(want))
	}
}

var codeNames = map[int32]string{
	0: "ok", engine.EInval: "E_INVAL", engine.EFault: "E_FAULT", engine.EShort: "E_SHORT",
	engine.EPCR: "E_PCR", engine.ETampered: "E_TAMPERED", engine.EForeign: "E_FOREIGN",
	engine.EWrongPAL: "E_WRONGPAL", engine.EPCRMismatch: "E_PCRMISMATCH",
	engine.EWrongType: "E_WRONGTYPE", engine.EUnsupported: "E_UNSUPPORTED",
	engine.ETooLarge: "E_TOOLARGE", engine.EInternal: "E_INTERNAL", engine.EMalformed: "E_MALFORMED",
	engine.ENotAuthorized: "E_NOTAUTHORIZED", engine.EAudit: "E_AUDIT",
	StatusBadArgs: "bad arguments", StatusUnknown: "unknown command",
}

func codeName(c int32) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("status %d", c)
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func extendOf(old utpm.Digest, d []byte) utpm.Digest {
	return sha256.Sum256(append(old[:], d...))
}

func (s *suite) testNull(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	for i := 0; i < 3; i++ {
		if st, out := p.status(t, 'n'); st != 0 || len(out) != 0 {
			t.Fatalf("null call: status %d, %d output bytes", st, len(out))
		}
	}
	if st, _ := p.status(t, 0xee); st != StatusUnknown {
		t.Fatalf("unknown command: status %d, want %d", st, StatusUnknown)
	}
}

func (s *suite) testVariants(t *testing.T) {
	a, b := s.register(t, "a", TestLimits), s.register(t, "b", TestLimits)
	if a.M == b.M {
		t.Fatal("variants a and b have the same measurement")
	}
	if got := string(a.ok(t, 'v')); got != "a" {
		t.Fatalf("variant a says %q", got)
	}
	if got := string(b.ok(t, 'v')); got != "b" {
		t.Fatalf("variant b says %q", got)
	}
}

func (s *suite) testExtendRead(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	// PCR0 holds the measurement from registration.
	want0 := extendOf(utpm.Digest{}, p.M[:])
	if got := p.ok(t, 'r', le32(0)); !bytes.Equal(got, want0[:]) {
		t.Fatalf("PCR0 = %x, want Extend(0, measurement) = %x", got, want0)
	}
	d := randBytes(t, 32)
	p.ok(t, 'e', le32(3), d)
	want := extendOf(utpm.Digest{}, d)
	if got := p.ok(t, 'r', le32(3)); !bytes.Equal(got, want[:]) {
		t.Fatalf("PCR3 = %x, want %x", got, want)
	}
	d2 := randBytes(t, 32)
	p.ok(t, 'e', le32(3), d2)
	want = extendOf(want, d2)
	if got, _ := p.Host.T.PCR(3); got != want {
		t.Fatalf("µTPM PCR3 = %x, want %x", got, want)
	}
	p.code(t, engine.EPCR, 'e', le32(0), d)
	p.code(t, engine.EPCR, 'e', le32(8), d)
	p.code(t, engine.EPCR, 'e', le32(0xffffffff), d)
	p.code(t, engine.EPCR, 'r', le32(8))
	if got := p.ok(t, 'r', le32(0)); !bytes.Equal(got, want0[:]) {
		t.Fatal("PCR0 changed after a refused extend")
	}
}

func policy(p utpm.Policy) []byte { return engine.EncodePolicy(p) }

func (s *suite) testSealOwn(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	data := randBytes(t, 1000)
	blob := p.ok(t, 's', policy(utpm.Policy{}), data)
	out := p.ok(t, 'u', blob)
	if len(out) < 32 || !bytes.Equal(out[:32], p.M[:]) || !bytes.Equal(out[32:], data) {
		t.Fatalf("unseal: creator %x, %d bytes; want %x, %d bytes", out[:min(32, len(out))], len(out)-32, p.M, len(data))
	}
	// Empty data round-trips too.
	if out := p.ok(t, 'u', p.ok(t, 's', policy(utpm.Policy{}))); len(out) != 32 {
		t.Fatalf("unseal of empty data: %d bytes", len(out))
	}
	// Explicit PCR values: the current value of PCR2 unseals, another does not.
	pcr2, _ := p.Host.T.PCR(2)
	var pol utpm.Policy
	pol.PCRMask = 1 << 2
	pol.PCRValues[2] = pcr2
	p.ok(t, 'u', p.ok(t, 's', policy(pol), data))
	pol.PCRValues[2][0] ^= 1
	p.code(t, engine.EPCRMismatch, 'u', p.ok(t, 's', policy(pol), data))
}

func (s *suite) testSealForOther(t *testing.T) {
	a, b := s.register(t, "a", TestLimits), s.register(t, "b", TestLimits)
	data := []byte("a secret from A to B")
	blob := a.ok(t, 's', policy(utpm.Policy{Target: b.M}), data)
	out := b.ok(t, 'u', blob)
	if !bytes.Equal(out[:32], a.M[:]) {
		t.Fatalf("creator reported to B = %x, want A's measurement %x", out[:32], a.M)
	}
	if !bytes.Equal(out[32:], data) {
		t.Fatalf("B unsealed %q", out[32:])
	}
	a.code(t, engine.EWrongPAL, 'u', blob)
	// B's own blobs are not A's either.
	a.code(t, engine.EWrongPAL, 'u', b.ok(t, 's', policy(utpm.Policy{}), data))
}

// testSealToName seals to "a name under a signer" (docs/abi.md §3): the platform's
// authorizer, a small stand-in for a trusted configuration that lists only B under the name,
// decides at every UNSEAL and KEY_SIGN.
func (s *suite) testSealToName(t *testing.T) {
	a, b := s.register(t, "a", TestLimits), s.register(t, "b", TestLimits)
	signer := utpm.Digest(sha256.Sum256([]byte("administrator key")))
	const name = "vault.v1"
	var asked int
	s.plat.SetAuthorizer(func(sg utpm.Digest, n string, caller utpm.Digest) error {
		asked++
		if sg == signer && n == name && caller == b.M {
			return nil
		}
		return fmt.Errorf("%q under %x does not list %x", n, sg[:4], caller[:4])
	})
	t.Cleanup(func() { s.plat.SetAuthorizer(nil) })

	pol := policy(utpm.Policy{Name: name, Signer: signer})
	data := []byte("for whatever the configuration calls " + name)
	blob := a.ok(t, 's', pol, data)
	out := b.ok(t, 'u', blob)
	if !bytes.Equal(out[:32], a.M[:]) || !bytes.Equal(out[32:], data) {
		t.Fatalf("B unsealed creator %x, %q", out[:32], out[32:])
	}
	a.code(t, engine.ENotAuthorized, 'u', blob)
	// Another signer's configuration does not speak for this one.
	other := utpm.Digest(sha256.Sum256([]byte("another administrator")))
	b.code(t, engine.ENotAuthorized, 'u', a.ok(t, 's', policy(utpm.Policy{Name: name, Signer: other}), data))

	// Key objects follow the same rule.
	msg := []byte("signed as " + name)
	pub, kb := keyCreate(t, a, utpm.KeyEd25519, utpm.Policy{Name: name, Signer: signer})
	if !ed25519.Verify(pub.(ed25519.PublicKey), msg, sign(t, b, kb, utpm.SchemeEdDSA, utpm.HashNone, msg)) {
		t.Fatal("B's signature does not verify")
	}
	a.code(t, engine.ENotAuthorized, 'g', le16(uint16(utpm.SchemeEdDSA)), le16(0), le32(uint32(len(kb))), kb, msg)
	if asked < 5 {
		t.Fatalf("authorizer asked %d times, want one per UNSEAL and KEY_SIGN", asked)
	}

	// A bad name or a zero signer is a malformed request.
	bad := []byte{2, 4, '-', 'b', 'a', 'd'}
	a.code(t, engine.EInval, 's', append(append(bad, signer[:]...), 0, 0), data)
	a.code(t, engine.EInval, 's', append([]byte{2, 3, 'w', 'e', 'b'}, make([]byte, 34)...), data)
	// The SDKs refuse a name longer than 128 bytes themselves (its length byte still fits the
	// test PAL's input here, but must not reach the visor).
	long := append([]byte{2, 200}, strings.Repeat("n", 200)...)
	a.code(t, engine.EInval, 's', append(append(long, signer[:]...), 0, 0), data)
	a.code(t, engine.EInval, 'k', []byte{byte(utpm.KeyEd25519)}, append(append(long, signer[:]...), 0, 0))

	// Without a trusted configuration the visor cannot serve the name.
	s.plat.SetAuthorizer(nil)
	b.code(t, engine.EUnsupported, 'u', blob)
	a.code(t, engine.EUnsupported, 's', pol, data)
}

func (s *suite) testTampered(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	blob := p.ok(t, 's', policy(utpm.Policy{}), []byte("integrity"))
	bad := append([]byte(nil), blob...)
	bad[len(bad)-1] ^= 0x80
	p.code(t, engine.ETampered, 'u', bad)
	bad = append([]byte(nil), blob...)
	bad[len(bad)/2] ^= 0x01
	p.code(t, engine.ETampered, 'u', bad)
	p.code(t, engine.EMalformed, 'u', blob[:3])
	// A blob of another platform (other master secret).
	other := NewPlatform(t).NewTPM(p.M)
	foreign, err := other.Seal([]byte("x"), utpm.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	p.code(t, engine.EForeign, 'u', foreign)
}

func (s *suite) testPCRBound(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	p.ok(t, 'e', le32(5), randBytes(t, 32))
	blob := p.ok(t, 's', policy(utpm.Policy{PCRMask: 1<<5 | 1, CurrentPCRs: true}), []byte("bound"))
	if out := p.ok(t, 'u', blob); string(out[32:]) != "bound" {
		t.Fatalf("unseal: %q", out[32:])
	}
	p.ok(t, 'e', le32(5), randBytes(t, 32))
	p.code(t, engine.EPCRMismatch, 'u', blob)
}

func (s *suite) testQuote(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	p.ok(t, 'e', le32(3), randBytes(t, 32))
	nonce, user := randBytes(t, 20), []byte("user data")
	const mask = 1<<0 | 1<<3
	ev := p.ok(t, 'q', []byte{mask}, le32(uint32(len(nonce))), nonce, user)
	pub, err := x509.ParsePKIXPublicKey(s.plat.IdentityPublic())
	if err != nil {
		t.Fatal(err)
	}
	c, err := attest.VerifyQuote(ev, pub.(*ecdsa.PublicKey))
	if err != nil {
		t.Fatalf("quote does not verify: %v", err)
	}
	if c.PAL != p.M {
		t.Fatalf("quote names PAL %x, want %x", c.PAL, p.M)
	}
	if !bytes.Equal(c.Nonce, nonce) || !bytes.Equal(c.UserData, user) {
		t.Fatalf("quote nonce %x / user %q, want %x / %q", c.Nonce, c.UserData, nonce, user)
	}
	all := p.Host.T.PCRs()
	if len(c.PCRs) != 2 || c.PCRs[0] != all[0] || c.PCRs[3] != all[3] {
		t.Fatalf("quote PCRs %x, want PCR0 %x and PCR3 %x", c.PCRs, all[0], all[3])
	}
	// Another identity does not verify it.
	other, _ := x509.ParsePKIXPublicKey(NewPlatform(t).IdentityPublic())
	if _, err := attest.VerifyQuote(ev, other.(*ecdsa.PublicKey)); err == nil {
		t.Fatal("quote verifies under another identity key")
	}
	p.code(t, engine.ETooLarge, 'q', []byte{mask}, le32(2000), make([]byte, 2000))
}

func (s *suite) testRandom(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	r1, r2 := p.ok(t, 'R', le32(64)), p.ok(t, 'R', le32(64))
	if len(r1) != 64 || bytes.Equal(r1, r2) || bytes.Equal(r1, make([]byte, 64)) {
		t.Fatalf("random: %x then %x", r1, r2)
	}
	if big := p.ok(t, 'R', le32(64<<10)); len(big) != 64<<10 {
		t.Fatalf("random 64 KiB: %d bytes", len(big))
	}
}

func (s *suite) testIdentity(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	if got := p.ok(t, 'i'); !bytes.Equal(got, s.plat.IdentityPublic()) {
		t.Fatalf("identity public %x, want %x", got, s.plat.IdentityPublic())
	}
}

// keyCreate creates a key in p and returns (public key, blob).
func keyCreate(t testing.TB, p *PAL, alg utpm.KeyAlg, pol utpm.Policy) (crypto.PublicKey, []byte) {
	t.Helper()
	out := p.ok(t, 'k', []byte{byte(alg)}, policy(pol))
	n := 4 + int(binary.LittleEndian.Uint32(out))
	pub, err := x509.ParsePKIXPublicKey(out[4:n])
	if err != nil {
		t.Fatalf("key alg %d: public key: %v", alg, err)
	}
	return pub, out[n:]
}

func sign(t testing.TB, p *PAL, blob []byte, s utpm.Scheme, h utpm.Hash, digest []byte) []byte {
	t.Helper()
	return p.ok(t, 'g', le16(uint16(s)), le16(uint16(h)), le32(uint32(len(blob))), blob, digest)
}

func (s *suite) testKeys(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	msg := []byte("signed by a PAL-held key")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	t.Run("ECDSA-P256", func(t *testing.T) {
		pub, blob := keyCreate(t, p, utpm.KeyECDSAP256, utpm.Policy{})
		sig := sign(t, p, blob, utpm.SchemeECDSA, utpm.HashSHA256, d256[:])
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d256[:], sig) {
			t.Fatal("signature does not verify")
		}
		p.code(t, engine.EUnsupported, 'g', le16(uint16(utpm.SchemeRSASSA)), le16(uint16(utpm.HashSHA256)), le32(uint32(len(blob))), blob, d256[:])
		p.code(t, engine.EInval, 'g', le16(uint16(utpm.SchemeECDSA)), le16(uint16(utpm.HashSHA256)), le32(uint32(len(blob))), blob, d256[:20])
	})
	t.Run("Ed25519", func(t *testing.T) {
		pub, blob := keyCreate(t, p, utpm.KeyEd25519, utpm.Policy{})
		sig := sign(t, p, blob, utpm.SchemeEdDSA, utpm.HashNone, msg)
		if !ed25519.Verify(pub.(ed25519.PublicKey), msg, sig) {
			t.Fatal("signature does not verify")
		}
	})
	t.Run("RSA-2048", func(t *testing.T) {
		pub, blob := keyCreate(t, p, utpm.KeyRSA2048, utpm.Policy{})
		k := pub.(*rsa.PublicKey)
		if k.N.BitLen() != 2048 {
			t.Fatalf("%d-bit key", k.N.BitLen())
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, d256[:], sign(t, p, blob, utpm.SchemeRSASSA, utpm.HashSHA256, d256[:])); err != nil {
			t.Fatal(err)
		}
		sig := sign(t, p, blob, utpm.SchemeRSAPSS, utpm.HashSHA256, d256[:])
		if err := rsa.VerifyPSS(k, crypto.SHA256, d256[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("RSA-3072", func(t *testing.T) {
		pub, blob := keyCreate(t, p, utpm.KeyRSA3072, utpm.Policy{})
		k := pub.(*rsa.PublicKey)
		if k.N.BitLen() != 3072 {
			t.Fatalf("%d-bit key", k.N.BitLen())
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA384, d384[:], sign(t, p, blob, utpm.SchemeRSASSA, utpm.HashSHA384, d384[:])); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("UnknownAlg", func(t *testing.T) {
		p.code(t, engine.EUnsupported, 'k', []byte{99}, policy(utpm.Policy{}))
	})
	t.Run("ForOtherPAL", func(t *testing.T) {
		b := s.register(t, "b", TestLimits)
		pub, blob := keyCreate(t, p, utpm.KeyECDSAP256, utpm.Policy{Target: b.M})
		sig := sign(t, b, blob, utpm.SchemeECDSA, utpm.HashSHA256, d256[:])
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d256[:], sig) {
			t.Fatal("B's signature does not verify")
		}
		p.code(t, engine.EWrongPAL, 'g', le16(uint16(utpm.SchemeECDSA)), le16(uint16(utpm.HashSHA256)), le32(uint32(len(blob))), blob, d256[:])
	})
}

func (s *suite) testKeyBlobTypes(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	_, key := keyCreate(t, p, utpm.KeyEd25519, utpm.Policy{})
	p.code(t, engine.EWrongType, 'u', key)
	data := p.ok(t, 's', policy(utpm.Policy{}), []byte("not a key"))
	p.code(t, engine.EWrongType, 'g', le16(uint16(utpm.SchemeEdDSA)), le16(0), le32(uint32(len(data))), data, []byte("m"))
}

func (s *suite) testCounters(t *testing.T) {
	a, b := s.register(t, "a", TestLimits), s.register(t, "b", TestLimits)
	const id = 7
	v0 := binary.LittleEndian.Uint64(a.ok(t, 'c', le32(id)))
	for i := uint64(1); i <= 3; i++ {
		if v := binary.LittleEndian.Uint64(a.ok(t, 'C', le32(id))); v != v0+i {
			t.Fatalf("increment %d: %d, want %d", i, v, v0+i)
		}
	}
	if v := binary.LittleEndian.Uint64(a.ok(t, 'c', le32(id))); v != v0+3 {
		t.Fatalf("read after increments: %d, want %d", v, v0+3)
	}
	// Counters belong to a measurement: B's counter 7 is not A's.
	vb := binary.LittleEndian.Uint64(b.ok(t, 'c', le32(id)))
	b.ok(t, 'C', le32(id))
	if v := binary.LittleEndian.Uint64(a.ok(t, 'c', le32(id))); v != v0+3 {
		t.Fatalf("B's increment changed A's counter to %d", v)
	}
	if v := binary.LittleEndian.Uint64(b.ok(t, 'c', le32(id))); v != vb+1 {
		t.Fatalf("B's counter %d, want %d", v, vb+1)
	}
}

func (s *suite) testLog(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	p.ok(t, 'l', []byte("hello from the conformance PAL"))
	for _, l := range p.Host.Logs() {
		if strings.Contains(l, "hello from the conformance PAL") {
			return
		}
	}
	t.Fatalf("log message not received; logs: %q", p.Host.Logs())
}

func (s *suite) testSHA256(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	for _, n := range []int{0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 100000} {
		data := randBytes(t, n)
		want := sha256.Sum256(data)
		if got := p.ok(t, 'h', data); !bytes.Equal(got, want[:]) {
			t.Fatalf("SHA-256 of %d bytes: %x, want %x", n, got, want)
		}
	}
}

func (s *suite) testFaults(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	got := p.ok(t, 'F')
	want := []byte{engine.EFault, engine.EFault, engine.ETooLarge, engine.ETooLarge,
		engine.EUnsupported, engine.EShort, engine.EInval, engine.ETooLarge,
		0, 0, engine.ETooLarge, engine.ETooLarge}
	cases := []string{"request outside memory", "response outside memory", "huge req_len",
		"huge resp_cap", "unknown op", "short response", "malformed extend", "random over 64 KiB",
		"empty request outside memory", "empty response outside memory",
		"request outside memory, huge resp_cap", "huge req_len, response outside memory"}
	if len(got) != len(want) {
		t.Fatalf("fault codes %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s: code %d (%s), want %d (%s)", cases[i], got[i], codeName(int32(got[i])), want[i], codeName(int32(want[i])))
		}
	}
	// The visor and the instance are unharmed.
	p.ok(t, 'n')
	p.ok(t, 'r', le32(1))
}

func (s *suite) testMemoryPersists(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	for i := uint64(1); i <= 3; i++ {
		if v := binary.LittleEndian.Uint64(p.ok(t, 'm')); v != i {
			t.Fatalf("call %d: PAL counted %d", i, v)
		}
	}
}

// expectReset checks that an instance works after a failed call, with fresh memory but the
// same µTPM (PCRs are not reset).
func expectReset(t *testing.T, p *PAL, pcr4 utpm.Digest) {
	t.Helper()
	if v := binary.LittleEndian.Uint64(p.ok(t, 'm')); v != 1 {
		t.Fatalf("after reset the PAL counted %d, want 1 (fresh memory)", v)
	}
	if got := p.ok(t, 'r', le32(4)); !bytes.Equal(got, pcr4[:]) {
		t.Fatal("PCR4 changed across an instance reset")
	}
}

// dirty puts state in an instance that a reset clears (a counter) and one it keeps (PCR4).
func dirty(t *testing.T, p *PAL) utpm.Digest {
	t.Helper()
	p.ok(t, 'm')
	p.ok(t, 'm')
	d := randBytes(t, 32)
	p.ok(t, 'e', le32(4), d)
	return extendOf(utpm.Digest{}, d)
}

func (s *suite) testTimeout(t *testing.T) {
	lim := TestLimits
	lim.Timeout = 300 * time.Millisecond
	p := s.register(t, "a", lim)
	pcr4 := dirty(t, p)
	start := time.Now()
	_, err := p.Try(context.Background(), 'L')
	if !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("endless loop: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > lim.Timeout+2*time.Second {
		t.Fatalf("endless loop stopped after %v, limit %v", d, lim.Timeout)
	}
	expectReset(t, p, pcr4)

	// The caller's deadline, when earlier, wins.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := p.Try(ctx, 'L'); !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("endless loop under a 50 ms context: %v", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond+time.Second {
		t.Fatalf("context deadline 50 ms, stopped after %v", d)
	}
	p.ok(t, 'n')

	// Cancelling the caller's context stops the PAL too.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(30 * time.Millisecond); cancel() }()
	if _, err := p.Try(ctx, 'L'); !errors.Is(err, engine.ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("endless loop, context cancelled: %v", err)
	}
	p.ok(t, 'n')
}

func (s *suite) testSleep(t *testing.T) {
	lim := TestLimits
	lim.Timeout = 300 * time.Millisecond
	p := s.register(t, "a", lim)
	st, out := p.status(t, 'z', le32(20))
	if st == StatusUnknown {
		t.Skip("this PAL cannot sleep (no clock in the C SDK)")
	}
	if st != 0 || time.Duration(binary.LittleEndian.Uint64(out)) < 20*time.Millisecond {
		t.Fatalf("sleep 20 ms: status %d, slept %v", st, time.Duration(binary.LittleEndian.Uint64(out)))
	}
	start := time.Now()
	if _, err := p.Try(context.Background(), 'z', le32(60000)); !errors.Is(err, engine.ErrTimeout) {
		t.Fatalf("sleep past the timeout: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("sleep stopped after %v", d)
	}
	p.ok(t, 'n')
}

func (s *suite) testOOM(t *testing.T) {
	lim := TestLimits
	lim.MemoryMiB = 32
	p := s.register(t, "a", lim)
	pcr4 := dirty(t, p)
	_, err := p.Try(context.Background(), 'A')
	switch {
	case s.tgt.OOMError != nil && !errors.Is(err, s.tgt.OOMError):
		t.Fatalf("unbounded allocation: %v, want %v", err, s.tgt.OOMError)
	case !errors.Is(err, engine.ErrOutOfMemory) && !errors.Is(err, engine.ErrTrap):
		t.Fatalf("unbounded allocation: %v, want ErrOutOfMemory or ErrTrap", err)
	}
	t.Logf("unbounded allocation: %v", err)
	expectReset(t, p, pcr4)
}

// testTrapAtCap: memory.grow past the cap returns -1 and the PAL goes on; a trap after that,
// in a later call, is a trap, not exhaustion of the memory cap.
func (s *suite) testTrapAtCap(t *testing.T) {
	lim := TestLimits
	lim.MemoryMiB = 32
	p := s.register(t, "a", lim)
	st, out := p.status(t, 'G')
	if st == StatusUnknown {
		t.Skip("this PAL cannot grow its memory itself")
	}
	if st != 0 || len(out) != 4 {
		t.Fatalf("grow to the cap: status %d (%s), %d bytes", st, codeName(st), len(out))
	}
	if pages := binary.LittleEndian.Uint32(out); pages != lim.MemoryMiB<<20/(64<<10) {
		t.Fatalf("memory grew to %d pages, cap %d MiB", pages, lim.MemoryMiB)
	}
	p.ok(t, 'n') // the refused grow did not harm the instance
	_, err := p.Try(context.Background(), 'T')
	if !errors.Is(err, engine.ErrTrap) || errors.Is(err, engine.ErrOutOfMemory) {
		t.Fatalf("trap with the memory at its cap: %v, want ErrTrap", err)
	}
}

func (s *suite) testTrap(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	pcr4 := dirty(t, p)
	if _, err := p.Try(context.Background(), 'T'); !errors.Is(err, engine.ErrTrap) {
		t.Fatalf("trap: %v, want ErrTrap", err)
	}
	expectReset(t, p, pcr4)
}

func (s *suite) testOutputTooLarge(t *testing.T) {
	lim := TestLimits
	lim.MaxOutput = 4096
	p := s.register(t, "a", lim)
	out := p.ok(t, 'O', le32(4096))
	if len(out) != 4096 || out[4095] != 4095%256 {
		t.Fatalf("4096-byte output: %d bytes", len(out))
	}
	if _, err := p.Try(context.Background(), 'O', le32(4097)); !errors.Is(err, engine.ErrOutputTooLarge) {
		t.Fatalf("4097-byte output: %v, want ErrOutputTooLarge", err)
	}
	p.ok(t, 'n')
}

// testOutputHostcallLimit: the largest output cap a registration may ask for is the most one
// OUTPUT hostcall carries (engine.MaxHostcallIO); an OUTPUT above that fails the whole call
// like any output over the cap, even if the PAL ignores the E_TOOLARGE it gets.
func (s *suite) testOutputHostcallLimit(t *testing.T) {
	lim := TestLimits
	lim.MaxOutput = engine.MaxHostcallIO
	lim.MaxInput = engine.MaxHostcallIO + 2
	if err := lim.Validate(); err != nil {
		t.Fatalf("limits at the hostcall limit: %v", err)
	}
	p := s.register(t, "a", lim)
	data := randBytes(t, engine.MaxHostcallIO)
	if out := p.ok(t, 'E', data); !bytes.Equal(out, data) {
		t.Fatalf("echo of %d bytes: %d bytes back", len(data), len(out))
	}
	if r, err := p.Try(context.Background(), 'E', data, []byte{0}); !errors.Is(err, engine.ErrOutputTooLarge) {
		t.Fatalf("echo of %d bytes: status %d, %d bytes, %v; want ErrOutputTooLarge", len(data)+1, r.Status, len(r.Output), err)
	}
	if r, err := p.Try(context.Background(), 'X'); !errors.Is(err, engine.ErrOutputTooLarge) {
		t.Fatalf("OUTPUT above the hostcall limit, E_TOOLARGE ignored: status %d, %v; want ErrOutputTooLarge", r.Status, err)
	}
	p.ok(t, 'n')
}

func (s *suite) testInputTooLarge(t *testing.T) {
	lim := TestLimits
	lim.MaxInput = 1024
	p := s.register(t, "a", lim)
	pcr4 := dirty(t, p)
	data := randBytes(t, 1023)
	want := sha256.Sum256(data)
	if got := p.ok(t, 'h', data); !bytes.Equal(got, want[:]) {
		t.Fatal("1024-byte input hashed wrong")
	}
	if _, err := p.Try(context.Background(), 'h', data, []byte{0}); !errors.Is(err, engine.ErrInputTooLarge) {
		t.Fatalf("1025-byte input: %v, want ErrInputTooLarge", err)
	}
	// Refused before running: the instance was not reset.
	if v := binary.LittleEndian.Uint64(p.ok(t, 'm')); v != 3 {
		t.Fatalf("PAL counted %d after a refused input, want 3", v)
	}
	_ = pcr4
}

// testParallel runs instances of one module from several goroutines at once.
func (s *suite) testParallel(t *testing.T) {
	const n, calls = 4, 50
	pals := make([]*PAL, n)
	for i := range pals {
		pals[i] = s.register(t, "a", TestLimits)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, p := range pals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := utpm.Digest{}
			for c := 0; c < calls; c++ {
				d := []byte(fmt.Sprintf("goroutine %d call %02d ....................", i, c))
				if r, err := p.Try(context.Background(), 'e', le32(6), d[:32]); err != nil || r.Status != 0 {
					errs <- fmt.Errorf("instance %d call %d: %v status %d", i, c, err, r.Status)
					return
				}
				want = extendOf(want, d[:32])
			}
			if got, _ := p.Host.T.PCR(6); got != want {
				errs <- fmt.Errorf("instance %d: PCR6 %x, want %x", i, got, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func (s *suite) testClosed(t *testing.T) {
	p := s.register(t, "a", TestLimits)
	if err := p.Inst.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Try(context.Background(), 'n'); !errors.Is(err, engine.ErrInstanceClosed) {
		t.Fatalf("call after close: %v, want ErrInstanceClosed", err)
	}
}
