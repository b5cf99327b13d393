package pal

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"palisade/engine"
	"palisade/utpm"
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
	} {
		want := utpm.Policy{Target: utpm.Digest(p.Target), PCRMask: p.PCRMask, CurrentPCRs: p.CurrentPCRs}
		for i := range v {
			if p.PCRMask&(1<<i) != 0 && !p.CurrentPCRs {
				want.PCRValues[i] = utpm.Digest(p.PCRValues[i])
			}
		}
		if got := p.encode(nil); !bytes.Equal(got, engine.EncodePolicy(want)) {
			t.Errorf("policy %+v: SDK %x, engine %x", p, got, engine.EncodePolicy(want))
		}
		got, rest, err := engine.DecodePolicy(p.encode(nil))
		if err != nil || len(rest) != 0 || got != want {
			t.Errorf("policy %+v: engine decoded %+v, %v", p, got, err)
		}
	}
}

func TestErrnoNames(t *testing.T) {
	for e := EInval; e <= EMalformed; e++ {
		if !strings.Contains(e.Error(), "E_") {
			t.Errorf("errno %d: %q has no name", int32(e), e.Error())
		}
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
