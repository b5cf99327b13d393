package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/palisade-project/palisade/sdk/go/pal"
)

// Outside wasip1 the SDK has no µTPM (every operation fails with E_UNSUPPORTED), which is
// enough to test that hostile input is refused without a crash.

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(encode(map[string]entry{"alice": {}, "bob": {salt: [16]byte{1}}}))
	f.Add([]byte{5, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		m2, err := decode(encode(m))
		if err != nil || len(m2) != len(m) {
			t.Fatalf("re-decoding %x: %v", b, err)
		}
		for u, e := range m {
			if m2[u] != e {
				t.Fatalf("entry %q changed", u)
			}
		}
	})
}

func FuzzHandle(f *testing.F) {
	req := func(op byte, db []byte, user, pw string) []byte {
		in := binary.LittleEndian.AppendUint32([]byte{op}, uint32(len(db)))
		in = append(append(in, db...), byte(len(user)))
		return append(append(in, user...), pw...)
	}
	f.Add(req('C', nil, "alice", "pw"))
	f.Add(req('E', nil, "alice", "pw"))
	f.Add(req('C', []byte("not a blob"), "alice", "pw"))
	f.Add([]byte{'C', 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		handle(bytes.Clone(in)) // must not panic
	})
}

// TestRateLimit drives the limiter with an empty database: no user exists, every check fails.
func TestRateLimit(t *testing.T) {
	in := binary.LittleEndian.AppendUint32([]byte{'C'}, 0)
	in = append(append(in, 3), "eve"...)
	for i := 1; i <= FreeFailures+2; i++ {
		_, err := handle(append(bytes.Clone(in), "guess"...))
		var f *pal.Failure
		if !errors.As(err, &f) {
			t.Fatalf("attempt %d: %v, want a *pal.Failure", i, err)
		}
		want := int32(statusWrong)
		if i > FreeFailures {
			want = statusRateLimited
		}
		if f.Status != want {
			t.Fatalf("attempt %d: status %d (%v), want %d", i, f.Status, err, want)
		}
	}
}
