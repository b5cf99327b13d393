package lean_test

import (
	"strings"
	"testing"
	"time"

	"github.com/palisade-project/palisade/internal/lean"
	"github.com/palisade-project/palisade/internal/lean/wire"
)

// TestKeyCreateHostile: key-create bodies that do not decode are answered MALFORMED and close
// the connection, before the key service is consulted; a well-formed one on a daemon without
// keys is NO_KEYS and keeps it. (Creating keys is tested against a real palisaded in
// cmd/palisaded, TestLeanKeyCreate.)
func TestKeyCreateHostile(t *testing.T) {
	f := start(t, lean.Config{FrameTimeout: time.Second})
	str := func(s string) []byte { return wire.NameRequest{Name: s}.Append(nil) }
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		body      []byte
		code      wire.Code
		rule      string
		keepsOpen bool
	}{
		{"empty body", nil, wire.CodeMalformed, "key name length needs 4 bytes, 0 left", false},
		{"no algorithm", str("k"), wire.CodeMalformed, "algorithm length needs 4 bytes, 0 left", false},
		{"empty name", cat(str(""), str("ed25519")), wire.CodeMalformed, "empty key name", false},
		{"empty algorithm", cat(str("k"), str("")), wire.CodeMalformed, "empty algorithm", false},
		{"name over 256 bytes", cat(str(strings.Repeat("k", 257)), str("ed25519")), wire.CodeMalformed, "key name of 257 bytes (max 256)", false},
		{"algorithm over 32 bytes", cat(str("k"), str(strings.Repeat("a", 33))), wire.CodeMalformed, "algorithm of 33 bytes (max 32)", false},
		{"4 GiB algorithm length", cat(str("k"), []byte{0xff, 0xff, 0xff, 0xff}), wire.CodeMalformed, "algorithm of 4294967295 bytes", false},
		{"control character", cat(str("k\x1b"), str("ed25519")), wire.CodeMalformed, "control character 0x1b", false},
		{"trailing byte", cat(str("k"), str("ed25519"), []byte{0}), wire.CodeMalformed, "1 bytes after the last field", false},
		{"no key service", wire.KeyCreateRequest{Name: "k", Alg: "ed25519"}.Append(nil), wire.CodeNoKeys, "serves no keys", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t)
			if _, err := c.Write(frame(1, wire.OpKeyCreate, 0, 5, tc.body)); err != nil {
				t.Fatal(err)
			}
			h, body, err := readResponse(c)
			if err != nil {
				t.Fatal(err)
			}
			if h.Op != wire.OpKeyCreate|wire.RespBit || h.ID != 5 || h.Code != tc.code || !strings.Contains(errMessage(t, body), tc.rule) {
				t.Fatalf("response %v %v id %d %q, want %v naming %q", h.Op, h.Code, h.ID, errMessage(t, body), tc.code, tc.rule)
			}
			if got := !closed(c); got != tc.keepsOpen {
				t.Fatalf("connection open after the response: %v, want %v", got, tc.keepsOpen)
			}
		})
	}
}
