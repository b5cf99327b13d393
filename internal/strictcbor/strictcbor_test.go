package strictcbor

import (
	"bytes"
	"testing"
)

type pair struct {
	A int `cbor:"1,keyasint"`
	B int `cbor:"2,keyasint"`
}

// TestDecModeRefuses holds DecMode to its contract: each input breaks one rule and is
// refused, and the canonical encoding of the same value is accepted.
func TestDecModeRefuses(t *testing.T) {
	dm := DecMode(Limits{MaxNestedLevels: 4, MaxMapPairs: 16})
	good, err := EncMode().Marshal(pair{A: 1, B: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0xa2, 0x01, 0x01, 0x02, 0x02}; !bytes.Equal(good, want) {
		t.Fatalf("EncMode: % x, want % x (core deterministic)", good, want)
	}
	var p pair
	if err := dm.Unmarshal(good, &p); err != nil || p != (pair{1, 2}) {
		t.Fatalf("canonical input: %+v, %v", p, err)
	}
	// Just within the limits: the refusals below are the limits', not something else's.
	if err := dm.Unmarshal(bigMap(16), &map[int]int{}); err != nil {
		t.Fatalf("16 map pairs: %v", err)
	}
	if err := dm.Unmarshal([]byte{0x81, 0x81, 0x81, 0x81, 0x01}, new(any)); err != nil {
		t.Fatalf("nesting 4: %v", err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		into any // where to decode: each input is valid for it but for the one rule
	}{
		{"duplicate key", []byte{0xa2, 0x01, 0x01, 0x01, 0x02}, &pair{}},
		{"unknown field", []byte{0xa1, 0x03, 0x01}, &pair{}},
		{"indefinite length", []byte{0xbf, 0x01, 0x01, 0xff}, &pair{}},
		{"tag", []byte{0xc1, 0xa1, 0x01, 0x01}, &pair{}},
		{"more map pairs than the limit", bigMap(17), &map[int]int{}},
		{"deeper than the limit", []byte{0x81, 0x81, 0x81, 0x81, 0x81, 0x01}, new(any)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := dm.Unmarshal(tc.in, tc.into); err == nil {
				t.Fatalf("% x accepted", tc.in)
			}
		})
	}
}

// bigMap encodes {0: 0, 1: 1, …, n-1: n-1} (n < 24), canonically.
func bigMap(n int) []byte {
	b := []byte{0xa0 | byte(n)}
	for i := range n {
		b = append(b, byte(i), byte(i))
	}
	return b
}
