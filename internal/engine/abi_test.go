package engine_test

import (
	"bytes"
	"testing"

	"github.com/palisade-project/palisade/internal/engine"
	"github.com/palisade-project/palisade/internal/engine/conformance"
	"github.com/palisade-project/palisade/internal/utpm"
)

func TestPolicyRoundTrip(t *testing.T) {
	var vals [utpm.NumPCRs]utpm.Digest
	for i := range vals {
		vals[i][0] = byte(i + 1)
	}
	tests := []utpm.Policy{
		{},
		{Target: utpm.Digest{9}},
		{PCRMask: 0xff, CurrentPCRs: true},
		{Target: utpm.Digest{9}, PCRMask: 1<<1 | 1<<6, PCRValues: [utpm.NumPCRs]utpm.Digest{1: vals[1], 6: vals[6]}},
		{PCRMask: 0xff, PCRValues: vals},
	}
	for _, p := range tests {
		b := engine.EncodePolicy(p)
		got, rest, err := engine.DecodePolicy(append(b, "tail"...))
		if err != nil || got != p || string(rest) != "tail" {
			t.Errorf("policy %+v: decoded %+v rest %q err %v", p, got, rest, err)
		}
	}
}

func TestDecodePolicyRefuses(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":          nil,
		"kind 2":         {2, 0, 0},
		"short target":   append([]byte{1}, make([]byte, 10)...),
		"zero target":    append(append([]byte{1}, make([]byte, 32)...), 0, 0),
		"no mask":        {0},
		"source 2":       {0, 0, 2},
		"missing values": append([]byte{0, 3, 0}, make([]byte, 40)...),
	} {
		if _, _, err := engine.DecodePolicy(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodePolicy(f *testing.F) {
	f.Add(engine.EncodePolicy(utpm.Policy{Target: utpm.Digest{1}, PCRMask: 5}))
	f.Add(engine.EncodePolicy(utpm.Policy{PCRMask: 0xff, CurrentPCRs: true}))
	f.Add([]byte{0, 0xff, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, rest, err := engine.DecodePolicy(b)
		if err != nil {
			return
		}
		enc := engine.EncodePolicy(p)
		if !bytes.Equal(append(enc, rest...), b) {
			// Only the value bytes of unselected PCRs cannot appear; everything else round-trips.
			t.Fatalf("re-encoding %x gave %x", b, append(enc, rest...))
		}
	})
}

type host struct{ t *utpm.TPM }

func (h host) TPM() *utpm.TPM { return h.t }
func (h host) Log([]byte)     {}

// FuzzDispatch feeds arbitrary requests to every op of a real µTPM: Dispatch never panics,
// never reports more bytes than the response buffer holds, and returns known codes only.
func FuzzDispatch(f *testing.F) {
	tpm := conformance.NewPlatform(f).NewTPM(utpm.Digest{7})
	blob, err := tpm.Seal([]byte("seed"), utpm.Policy{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(engine.OpExtend), append([]byte{3, 0, 0, 0}, make([]byte, 32)...), uint16(0))
	f.Add(uint32(engine.OpSeal), append(engine.EncodePolicy(utpm.Policy{}), "data"...), uint16(512))
	f.Add(uint32(engine.OpUnseal), blob, uint16(512))
	f.Add(uint32(engine.OpQuote), []byte{1, 2, 0, 0, 0, 'n', 'o'}, uint16(2048))
	f.Add(uint32(engine.OpKeySign), make([]byte, 40), uint16(512))
	f.Add(uint32(engine.OpKeyCreate), []byte{2, 0, 0, 0}, uint16(1024))
	f.Add(uint32(engine.OpCounterIncrement), []byte{1, 0, 0, 0}, uint16(8))
	f.Add(uint32(engine.OpRandom), []byte{}, uint16(100))
	f.Add(uint32(99), []byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, op uint32, req []byte, respCap uint16) {
		if op == uint32(engine.OpKeyCreate) && len(req) > 0 && req[0] >= 3 {
			return // RSA key generation is too slow for fuzzing
		}
		cs := &engine.CallState{MaxOutput: 64}
		resp := make([]byte, respCap)
		n := engine.Dispatch(host{tpm}, cs, engine.Op(op), req, resp)
		if n > int64(len(resp)) {
			t.Fatalf("op %d: result %d > resp_cap %d", op, n, len(resp))
		}
		if n < 0 && (-n < engine.EInval || -n > engine.EAudit) {
			t.Fatalf("op %d: unknown error code %d", op, -n)
		}
	})
}

// TestDispatchCodes checks the dispatcher's own error codes.
func TestDispatchCodes(t *testing.T) {
	tpm := conformance.NewPlatform(t).NewTPM(utpm.Digest{7})
	h := host{tpm}
	cs := &engine.CallState{MaxOutput: 4}
	tests := []struct {
		name string
		op   engine.Op
		req  []byte
		cap  int
		want int64
	}{
		{"unknown op", 42, nil, 0, -engine.EUnsupported},
		{"output over cap", engine.OpOutput, []byte("12345"), 0, -engine.ETooLarge},
		{"extend short", engine.OpExtend, []byte{1}, 0, -engine.EInval},
		{"pcr read short resp", engine.OpPCRRead, []byte{1, 0, 0, 0}, 31, -engine.EShort},
		{"pcr0 extend", engine.OpExtend, make([]byte, 36), 0, -engine.EPCR},
		{"random too large", engine.OpRandom, nil, utpm.MaxRandom + 1, -engine.ETooLarge},
		{"quote nonce past end", engine.OpQuote, []byte{0, 9, 0, 0, 0}, 100, -engine.EInval},
		{"counter short resp", engine.OpCounterRead, []byte{1, 0, 0, 0}, 7, -engine.EShort},
		{"pcr read", engine.OpPCRRead, []byte{1, 0, 0, 0}, 32, 32},
	}
	for _, tt := range tests {
		if got := engine.Dispatch(h, cs, tt.op, tt.req, make([]byte, tt.cap)); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	if !cs.OutputTooLarge {
		t.Error("OUTPUT over the cap did not mark the call")
	}
}

// flatMem is the simplest engine.Memory: size bytes at address base, all writable; it counts
// translations, so the test sees which checks come before them.
type flatMem struct {
	base  uint64
	mem   []byte
	calls int
}

func (m *flatMem) Buffer(ptr uint64, n uint32, _ bool) ([]byte, bool) {
	m.calls++
	if ptr < m.base || ptr-m.base+uint64(n) > uint64(len(m.mem)) {
		return nil, false
	}
	off := ptr - m.base
	return m.mem[off : off+uint64(n) : off+uint64(n)], true
}

// TestHostcall checks the rules on buffers that engine.Hostcall applies for every engine
// (docs/abi.md §2): sizes before bounds, empty buffers whatever their pointer, and an OUTPUT
// above the hostcall limit failing the call.
func TestHostcall(t *testing.T) {
	tpm := conformance.NewPlatform(t).NewTPM(utpm.Digest{7})
	const base, size = 0x1000, 0x100
	const in, out = base, base + size + 1 // inside and outside memory
	huge := uint32(engine.MaxHostcallIO + 1)
	tests := []struct {
		name           string
		op             engine.Op
		reqPtr         uint64
		reqLen         uint32
		respPtr        uint64
		respCap        uint32
		want           int64
		translations   int
		outputTooLarge bool
	}{
		{"pcr read", engine.OpPCRRead, in, 4, in + 4, 32, 32, 2, false},
		{"request outside", engine.OpPCRRead, out, 4, in, 32, -engine.EFault, 1, false},
		{"response outside", engine.OpPCRRead, in, 4, out, 32, -engine.EFault, 2, false},
		{"response straddles the end", engine.OpPCRRead, in, 4, base + size - 16, 32, -engine.EFault, 2, false},
		{"empty request outside", engine.OpLog, out, 0, 0, 0, 0, 0, false},
		{"empty response outside", engine.OpRandom, 0, 0, out, 0, 0, 0, false},
		{"request outside, response huge", engine.OpPCRRead, out, 4, in, huge, -engine.ETooLarge, 0, false},
		{"request huge, response outside", engine.OpLog, in, huge, out, 32, -engine.ETooLarge, 0, false},
		{"largest sizes", engine.OpLog, out, engine.MaxHostcallIO, out, engine.MaxHostcallIO, -engine.EFault, 1, false},
		{"output huge", engine.OpOutput, in, huge, 0, 0, -engine.ETooLarge, 0, true},
		{"output huge, outside memory", engine.OpOutput, out, ^uint32(0), 0, 0, -engine.ETooLarge, 0, true},
		{"output, response huge", engine.OpOutput, in, 4, in, huge, -engine.ETooLarge, 0, false},
		{"output", engine.OpOutput, in, 4, 0, 0, 0, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &flatMem{base: base, mem: make([]byte, size)}
			cs := &engine.CallState{MaxOutput: engine.MaxHostcallIO}
			got := engine.Hostcall(host{tpm}, cs, m, uint32(tt.op), tt.reqPtr, tt.reqLen, tt.respPtr, tt.respCap)
			if got != tt.want {
				t.Errorf("result %d, want %d", got, tt.want)
			}
			if m.calls != tt.translations {
				t.Errorf("%d buffer translations, want %d", m.calls, tt.translations)
			}
			if cs.OutputTooLarge != tt.outputTooLarge {
				t.Errorf("output too large %v, want %v", cs.OutputTooLarge, tt.outputTooLarge)
			}
		})
	}
}

// FuzzHostcall: whatever the PAL passes, Hostcall never panics, returns a length within
// resp_cap or a known error code, and marks the output too large only for an OUTPUT.
func FuzzHostcall(f *testing.F) {
	tpm := conformance.NewPlatform(f).NewTPM(utpm.Digest{7})
	f.Add(uint32(engine.OpPCRRead), uint64(0x1000), uint32(4), uint64(0x1004), uint32(32), []byte{1, 0, 0, 0})
	f.Add(uint32(engine.OpOutput), uint64(0xffffffff), uint32(engine.MaxHostcallIO+1), uint64(0), uint32(0), []byte{})
	f.Add(uint32(engine.OpLog), uint64(0), uint32(0), ^uint64(0), uint32(0), []byte("x"))
	f.Fuzz(func(t *testing.T, op uint32, reqPtr uint64, reqLen uint32, respPtr uint64, respCap uint32, mem []byte) {
		if op == uint32(engine.OpKeyCreate) {
			return // key generation is too slow for fuzzing; FuzzDispatch covers its decoding
		}
		m := &flatMem{base: 0x1000, mem: append(mem, make([]byte, 256)...)}
		cs := &engine.CallState{MaxOutput: 64}
		n := engine.Hostcall(host{tpm}, cs, m, op, reqPtr, reqLen, respPtr, respCap)
		if n > int64(respCap) {
			t.Fatalf("result %d > resp_cap %d", n, respCap)
		}
		if n < 0 && (-n < engine.EInval || -n > engine.EAudit) {
			t.Fatalf("unknown error code %d", -n)
		}
		if cs.OutputTooLarge && engine.Op(op) != engine.OpOutput {
			t.Fatalf("op %d marked the output too large", op)
		}
	})
}
