package engine_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"testing"

	"github.com/palisade-project/palisade/internal/configtest"

	"github.com/palisade-project/palisade/internal/config"
	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/utpm"
)

var testSigner = utpm.Digest{0x5a, 0x1}

// namePolicy is the ABI encoding of target kind 2 written out by hand (docs/abi.md §3), so
// that EncodePolicy is checked against the document, not against itself.
func namePolicy(name string, signer utpm.Digest, tail ...byte) []byte {
	b := []byte{2, byte(len(name))}
	b = append(b, name...)
	b = append(b, signer[:]...)
	return append(b, tail...)
}

func TestDecodeNamePolicy(t *testing.T) {
	var pcr3 [utpm.NumPCRs]utpm.Digest
	pcr3[3] = utpm.Digest{3}
	for _, tc := range []struct {
		name string
		enc  []byte
		want utpm.Policy
	}{
		{"name, no PCRs", namePolicy("vault", testSigner, 0, 0),
			utpm.Policy{Name: "vault", Signer: testSigner}},
		{"name, current PCRs", namePolicy("a.b-c_1", testSigner, 0x81, 1),
			utpm.Policy{Name: "a.b-c_1", Signer: testSigner, PCRMask: 0x81, CurrentPCRs: true}},
		{"name, PCR 3 value", namePolicy("v", testSigner, append([]byte{1 << 3, 0}, pcr3[3][:]...)...),
			utpm.Policy{Name: "v", Signer: testSigner, PCRMask: 1 << 3, PCRValues: pcr3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rest, err := engine.DecodePolicy(append(tc.enc, "data"...))
			if err != nil || got != tc.want || string(rest) != "data" {
				t.Fatalf("decoded %+v rest %q err %v", got, rest, err)
			}
			if enc := engine.EncodePolicy(tc.want); !bytes.Equal(enc, tc.enc) {
				t.Fatalf("EncodePolicy = %x, want %x", enc, tc.enc)
			}
		})
	}
}

func TestDecodeNamePolicyRefuses(t *testing.T) {
	long := bytes.Repeat([]byte{'a'}, 129)
	for name, b := range map[string][]byte{
		"kind only":       {2},
		"empty name":      namePolicy("", testSigner, 0, 0),
		"bad first char":  namePolicy("-x", testSigner, 0, 0),
		"slash":           namePolicy("a/b", testSigner, 0, 0),
		"NUL":             namePolicy("a\x00", testSigner, 0, 0),
		"129 bytes":       namePolicy(string(long), testSigner, 0, 0),
		"zero signer":     namePolicy("vault", utpm.Digest{}, 0, 0),
		"short signer":    namePolicy("vault", testSigner)[:2+5+31],
		"name past end":   {2, 40, 'a', 'b'},
		"no mask":         namePolicy("vault", testSigner),
		"missing values":  namePolicy("vault", testSigner, 1, 0),
		"bad pcr source":  namePolicy("vault", testSigner, 0, 7),
		"kind 3 reserved": {3, 0, 0},
	} {
		if p, _, err := engine.DecodePolicy(b); err == nil {
			t.Errorf("%s: accepted as %+v", name, p)
		}
	}
}

// FuzzDecodeNamePolicy: whatever DecodePolicy accepts re-encodes to the same bytes, and a
// name policy it returns is one the µTPM accepts (valid name, non-zero signer, no target).
func FuzzDecodeNamePolicy(f *testing.F) {
	f.Add(namePolicy("vault", testSigner, 0, 0))
	f.Add(namePolicy("x", testSigner, 0xff, 1, 'd'))
	f.Add(namePolicy("v", testSigner, append([]byte{1, 0}, make([]byte, 32)...)...))
	f.Add([]byte{2, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, rest, err := engine.DecodePolicy(b)
		if err != nil {
			return
		}
		if enc := engine.EncodePolicy(p); !bytes.Equal(append(enc, rest...), b) {
			t.Fatalf("re-encoding %x gave %x", b, append(enc, rest...))
		}
		if p.Name != "" && (!utpm.ValidName(p.Name) || p.Signer == (utpm.Digest{}) || p.Target != (utpm.Digest{})) {
			t.Fatalf("accepted policy %+v", p)
		}
	})
}

// TestDispatchNamePolicy runs SEAL, UNSEAL and KEY_SIGN with a name policy through the
// dispatcher against a real trusted configuration: the codes a PAL sees are the ABI's.
func TestDispatchNamePolicy(t *testing.T) {
	admin, st := configtest.NewState(t, "ed25519")
	_, kid := st.AdminKey()
	palA, palB, palC := utpm.Digest{0xa}, utpm.Digest{0xb}, utpm.Digest{0xc}
	visor := config.Measurement{0x71}
	raw, err := config.Sign(&config.Config{Version: 1, Visors: []config.Measurement{visor},
		PALs: map[string][]config.Measurement{"vault": {config.Measurement(palB)}}}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(raw); err != nil {
		t.Fatal(err)
	}
	id, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	master := make([]byte, 32)
	rand.Read(master)
	plat, err := utpm.NewPlatform(utpm.PlatformConfig{MasterSecret: master, Identity: id,
		Authorize: config.NewWatcher(st, visor).UTPMAuthorizer()})
	if err != nil {
		t.Fatal(err)
	}
	call := func(m utpm.Digest, op engine.Op, req []byte) ([]byte, int64) {
		resp := make([]byte, 4096)
		n := engine.Dispatch(host{plat.NewTPM(m)}, &engine.CallState{MaxOutput: 64}, op, req, resp)
		if n < 0 {
			return nil, n
		}
		return resp[:n], n
	}
	policy := namePolicy("vault", utpm.Digest(kid), 0, 0)
	blob, n := call(palA, engine.OpSeal, append(policy, "secret"...))
	if n < 0 {
		t.Fatalf("SEAL: %d", n)
	}
	if out, n := call(palB, engine.OpUnseal, blob); n < 0 || string(out[32:]) != "secret" || utpm.Digest(out[:32]) != palA {
		t.Fatalf("UNSEAL by B: %d %q", n, out)
	}
	if _, n := call(palC, engine.OpUnseal, blob); n != -engine.ENotAuthorized {
		t.Fatalf("UNSEAL by C: %d, want -E_NOTAUTHORIZED", n)
	}
	out, n := call(palA, engine.OpKeyCreate, append([]byte{byte(utpm.KeyEd25519)}, policy...))
	if n < 0 {
		t.Fatalf("KEY_CREATE: %d", n)
	}
	kb := out[4+binary.LittleEndian.Uint32(out):]
	sign := func(m utpm.Digest) int64 {
		req := binary.LittleEndian.AppendUint16(nil, uint16(utpm.SchemeEdDSA))
		req = binary.LittleEndian.AppendUint16(req, 0)
		req = binary.LittleEndian.AppendUint32(req, uint32(len(kb)))
		_, n := call(m, engine.OpKeySign, append(append(req, kb...), "msg"...))
		return n
	}
	if n := sign(palB); n != 64 {
		t.Fatalf("KEY_SIGN by B: %d", n)
	}
	if n := sign(palC); n != -engine.ENotAuthorized {
		t.Fatalf("KEY_SIGN by C: %d", n)
	}

	// Without a trusted configuration the platform cannot serve target kind 2.
	plat.SetAuthorizer(nil)
	if _, n := call(palB, engine.OpUnseal, blob); n != -engine.EUnsupported {
		t.Fatalf("UNSEAL without authorizer: %d", n)
	}
	if _, n := call(palA, engine.OpSeal, append(policy, "x"...)); n != -engine.EUnsupported {
		t.Fatalf("SEAL without authorizer: %d", n)
	}
}
