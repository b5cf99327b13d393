package attest_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/palisade-project/palisade/attest"
)

// FuzzParse: hostile bytes never crash the decoder, and whatever it accepts re-encodes to the
// same bytes (one evidence, one encoding).
func FuzzParse(f *testing.F) {
	if ev, err := os.ReadFile(goldenEvidence); err == nil {
		f.Add(ev)
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa4, 0x01, 0x01, 0x02, 0x41, 0x00, 0x03, 0x41, 0x00, 0x04, 0x64, 'n', 'o', 'n', 'e'})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := attest.Parse(b)
		if err != nil {
			return
		}
		out, err := e.Marshal()
		if err != nil || string(out) != string(b) {
			t.Fatalf("accepted evidence does not re-encode to itself: %v", err)
		}
	})
}

// FuzzVerify: Verify never crashes, and never accepts anything but the golden evidence
// unchanged (every byte of it is signed, or checked against the reference values).
func FuzzVerify(f *testing.F) {
	ev, r := readGolden(f)
	o := r.options(f)
	f.Add(ev)
	for _, i := range []int{0, 10, 100, len(ev) / 2, len(ev) - 1} {
		m := append([]byte(nil), ev...)
		m[i] ^= 0x40
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := attest.Verify(b, o)
		if err != nil {
			if _, ok := err.(*attest.CheckError); !ok {
				t.Fatalf("error is not a *CheckError: %v", err)
			}
			return
		}
		if string(b) != string(ev) {
			// Signatures cover everything but the ECDSA signature encodings themselves;
			// a different yet valid evidence must at least say the same things.
			if !res.Rooted || res.Claims.PAL != o.PAL || string(res.Claims.Nonce) != string(o.Nonce) {
				t.Fatalf("accepted altered evidence: %+v", res)
			}
		}
	})
}

// TestParseNamesEmptyAndTruncated: an empty or cut evidence file is named as such (it said
// only "EOF" or "unexpected EOF").
func TestParseNamesEmptyAndTruncated(t *testing.T) {
	ev, err := os.ReadFile(goldenEvidence)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "malformed evidence: empty (0 bytes)"},
		{"one byte", ev[:1], "malformed evidence: truncated at 1 bytes"},
		{"half", ev[:len(ev)/2], fmt.Sprintf("malformed evidence: truncated at %d bytes", len(ev)/2)},
		{"all but one", ev[:len(ev)-1], fmt.Sprintf("malformed evidence: truncated at %d bytes", len(ev)-1)},
		// Another file given by mistake (a JSON document, a signed configuration) is not
		// called truncated evidence.
		{"json", []byte(`{"version": 1}`), "not evidence: a CBOR map is expected, the input starts with byte 0x7b"},
		{"cose", []byte{0xd2, 0x84, 0x43}, "not evidence: a CBOR map is expected, the input starts with byte 0xd2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := attest.Parse(tc.b)
			if !errors.Is(err, attest.ErrEvidence) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want ErrEvidence with %q", err, tc.want)
			}
		})
	}
}
