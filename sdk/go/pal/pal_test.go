package pal

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
)

// The SDK encodes policies exactly as the visor decodes them.
func TestPolicyEncoding(t *testing.T) {
	var v [NumPCRs]Digest
	for i := range v {
		v[i] = Digest{byte(i), 0xaa}
	}
	for _, p := range []Policy{
		{},
		{Target: Digest{1, 2, 3}},
		{PCRMask: 0x81, CurrentPCRs: true},
		{Target: Digest{4}, PCRMask: 0x26, PCRValues: v},
		{PCRMask: 0xff, PCRValues: v},
		{Name: "web", Signer: Digest{9}},
		{Name: strings.Repeat("n", MaxName), Signer: Digest{0xff, 1}, PCRMask: 0x02, PCRValues: v},
		{Name: "db.primary-1", Signer: Digest{7}, PCRMask: 0x04, CurrentPCRs: true},
	} {
		want := utpm.Policy{PCRMask: p.PCRMask, CurrentPCRs: p.CurrentPCRs}
		if p.Name != "" {
			want.Name, want.Signer = p.Name, utpm.Digest(p.Signer)
		} else {
			want.Target = utpm.Digest(p.Target)
		}
		for i := range v {
			if p.PCRMask&(1<<i) != 0 && !p.CurrentPCRs {
				want.PCRValues[i] = utpm.Digest(p.PCRValues[i])
			}
		}
		enc, err := p.encode(nil)
		if err != nil {
			t.Fatalf("policy %+v: %v", p, err)
		}
		if !bytes.Equal(enc, engine.EncodePolicy(want)) {
			t.Errorf("policy %+v: SDK %x, engine %x", p, enc, engine.EncodePolicy(want))
		}
		got, rest, err := engine.DecodePolicy(enc)
		if err != nil || len(rest) != 0 || got != want {
			t.Errorf("policy %+v: engine decoded %+v, %v", p, got, err)
		}
	}
}

// A name the length byte cannot carry, or a name without a signer, never reaches the visor.
func TestPolicyNameInvalid(t *testing.T) {
	for _, p := range []Policy{
		{Name: strings.Repeat("n", MaxName+1), Signer: Digest{1}},
		{Name: strings.Repeat("n", 256+3), Signer: Digest{1}}, // would wrap to 3
		{Name: "web"},
	} {
		if _, err := p.encode(nil); err != EInval {
			t.Errorf("name of %d bytes, signer %x: %v, want EInval", len(p.Name), p.Signer[:2], err)
		}
		if _, err := Seal([]byte("x"), p); err != EInval {
			t.Errorf("Seal: %v, want EInval", err)
		}
		if _, _, err := KeyCreate(KeyECDSAP256, p); err != EInval {
			t.Errorf("KeyCreate: %v, want EInval", err)
		}
	}
}

func TestErrnoNames(t *testing.T) {
	for e := EInval; e <= EAudit; e++ {
		if !strings.Contains(e.Error(), "E_") {
			t.Errorf("errno %d: %q has no name", int32(e), e.Error())
		}
	}
	if int(ENotAuthorized) != int(engine.ENotAuthorized) || int(EAudit) != int(engine.EAudit) {
		t.Errorf("ENotAuthorized, EAudit = %d, %d; engine says %d, %d", ENotAuthorized, EAudit, engine.ENotAuthorized, engine.EAudit)
	}
	if got := Errno(77).Error(); got != "utpm: error 77" {
		t.Errorf("unknown errno: %q", got)
	}
	err := fmt.Errorf("unseal: %w", EWrongPAL)
	var e Errno
	if !errors.As(err, &e) || e != EWrongPAL || !errors.Is(err, EWrongPAL) {
		t.Error("wrapped Errno is not recognised")
	}
}

func TestEntryStatus(t *testing.T) {
	defer Handle(nil)
	for _, tt := range []struct {
		name string
		h    Handler
		want int32
	}{
		{"no handler", nil, 1},
		{"ok", func([]byte) ([]byte, error) { return []byte("x"), nil }, 0},
		{"error", func([]byte) ([]byte, error) { return nil, errors.New("no") }, 1},
		{"failure", func([]byte) ([]byte, error) { return nil, fmt.Errorf("w: %w", &Failure{Status: 42}) }, 42},
		{"failure zero", func([]byte) ([]byte, error) { return nil, &Failure{} }, 1},
	} {
		Handle(tt.h)
		if got := entry([]byte("in")); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
}

// Outside a PAL there is no µTPM: every operation says so.
func TestHostcallOutsidePAL(t *testing.T) {
	if _, err := PCRRead(1); !errors.Is(err, EUnsupported) {
		t.Fatalf("PCRRead outside a PAL: %v", err)
	}
}
