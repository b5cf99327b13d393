package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"ok", []byte{1, 2, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0}, nil},
		{"short", []byte{1, 2, 0, 0, 7, 0, 0, 0, 5, 0, 0}, ErrMalformed},
		{"version 0", []byte{0, 2, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0}, ErrVersion},
		{"version 2", []byte{2, 2, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0}, ErrVersion},
		{"max body", []byte{1, 2, 0, 0, 7, 0, 0, 0, 0, 0, 0x40, 0}, nil},
		{"max body + 1", []byte{1, 2, 0, 0, 7, 0, 0, 0, 1, 0, 0x40, 0}, ErrTooLarge},
		{"4 GiB", []byte{1, 2, 0, 0, 7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHeader(tc.b)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("ParseHeader = %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			var out [HeaderSize]byte
			PutHeader(out[:], h)
			if !bytes.Equal(out[:], tc.b) {
				t.Fatalf("round trip %x, want %x", out, tc.b)
			}
		})
	}
}

// TestDecodeRefuses checks that each rule of the body decoders is enforced: a truncated
// field, a length beyond the field's limit or beyond the body, bytes left over, a control
// character in a name.
func TestDecodeRefuses(t *testing.T) {
	le32 := func(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	name := func(s string) []byte { return cat(le32(uint32(len(s))), []byte(s)) }
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		b      []byte
		rule   string
	}{
		{"call: truncated handle", decodeCall, []byte{1, 2, 3}, "handle needs 8 bytes"},
		{"call: input beyond body", decodeCall, cat(make([]byte, 8), le32(10), []byte("abc")), "input needs 10 bytes, 3 left"},
		{"call: trailing", decodeCall, cat(make([]byte, 8), le32(0), []byte{0}), "1 bytes after the last field"},
		{"call: input over max body", decodeCall, cat(make([]byte, 8), le32(MaxBody+1)), "input of 4194305 bytes (max 4194304)"},
		{"sign: empty name", decodeSign, cat(name(""), make([]byte, 4), le32(0), le32(0)), "empty key name"},
		{"sign: name too long", decodeSign, cat(name(strings.Repeat("k", MaxName+1))), "key name of 257 bytes (max 256)"},
		{"sign: NUL in name", decodeSign, cat(name("a\x00b"), make([]byte, 4), le32(0), le32(0)), "control character 0x0"},
		{"sign: digest too long", decodeSign, cat(name("k"), make([]byte, 4), le32(MaxDigest+1)), "digest of 4097 bytes (max 4096)"},
		{"sign: pin too long", decodeSign, cat(name("k"), make([]byte, 4), le32(0), le32(MaxPIN+1)), "pin of 257 bytes (max 256)"},
		{"find: 4 GiB length", decodeName, le32(0xffffffff), "name of 4294967295 bytes"},
		{"key info: too many certs", decodeKeyInfo, cat(name("ed25519"), le32(0), le32(0), le32(MaxCerts+1)), "17 certificates (max 16)"},
		{"find resp: too many keys", decodeFind, le32(MaxFound + 1), "4097 keys (max 4096)"},
		{"find resp: count beyond body", decodeFind, cat(le32(2), name("a"), name("b")), "key name length needs 4 bytes, 0 left"},
		{"create: empty", decodeCreate, nil, "key name length needs 4 bytes, 0 left"},
		{"create: no algorithm", decodeCreate, name("k"), "algorithm length needs 4 bytes, 0 left"},
		{"create: empty name", decodeCreate, cat(name(""), name("ed25519")), "empty key name"},
		{"create: empty algorithm", decodeCreate, cat(name("k"), name("")), "empty algorithm"},
		{"create: name too long", decodeCreate, cat(name(strings.Repeat("k", MaxName+1)), name("ed25519")), "key name of 257 bytes (max 256)"},
		{"create: algorithm too long", decodeCreate, cat(name("k"), name(strings.Repeat("a", MaxAlg+1))), "algorithm of 33 bytes (max 32)"},
		{"create: 4 GiB algorithm", decodeCreate, cat(name("k"), le32(0xffffffff)), "algorithm of 4294967295 bytes"},
		{"create: algorithm beyond body", decodeCreate, cat(name("k"), le32(7), []byte("ed2")), "algorithm needs 7 bytes, 3 left"},
		{"create: newline in name", decodeCreate, cat(name("a\nb"), name("ed25519")), "control character 0x0a"},
		{"create: DEL in algorithm", decodeCreate, cat(name("k"), name("ed\x7f")), "control character 0x7f"},
		{"create: trailing", decodeCreate, cat(name("k"), name("ed25519"), []byte{0}), "1 bytes after the last field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode(tc.b)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.rule) {
				t.Fatalf("decode = %v, want ErrMalformed naming %q", err, tc.rule)
			}
		})
	}
}

func decodeCall(b []byte) error    { _, err := DecodeCallRequest(b); return err }
func decodeSign(b []byte) error    { _, err := DecodeSignRequest(b); return err }
func decodeName(b []byte) error    { _, err := DecodeNameRequest(b); return err }
func decodeKeyInfo(b []byte) error { _, err := DecodeKeyInfoResponse(b); return err }
func decodeFind(b []byte) error    { _, err := DecodeFindResponse(b); return err }
func decodeCreate(b []byte) error  { _, err := DecodeKeyCreateRequest(b); return err }

type appender interface{ Append([]byte) []byte }

// decoders re-encode what they decode: the encoding is canonical, so a body that decodes is
// exactly the encoding of its value.
var decoders = []func([]byte) (appender, error){
	func(b []byte) (appender, error) { return DecodeHelloResponse(b) },
	func(b []byte) (appender, error) { return DecodeCallRequest(b) },
	func(b []byte) (appender, error) { return DecodeCallResponse(b) },
	func(b []byte) (appender, error) { return DecodeSignRequest(b) },
	func(b []byte) (appender, error) { return DecodeSignResponse(b) },
	func(b []byte) (appender, error) { return DecodeNameRequest(b) },
	func(b []byte) (appender, error) { return DecodeKeyInfoResponse(b) },
	func(b []byte) (appender, error) { return DecodeFindResponse(b) },
	func(b []byte) (appender, error) { return DecodeErrorResponse(b) },
	func(b []byte) (appender, error) { return DecodeKeyCreateRequest(b) },
}

func TestRoundTrip(t *testing.T) {
	for i, m := range []appender{
		HelloResponse{MinVersion: 1, MaxVersion: 1, MaxBody: MaxBody, UID: 1000, GID: 100, Daemon: "0.1.0"},
		CallRequest{Handle: 0x0123456789abcdef, Input: []byte("input")},
		CallResponse{Status: -7, Output: []byte("out")},
		SignRequest{Name: "web", Scheme: 0x18, Hash: 0x0b, Digest: make([]byte, 32), PIN: []byte("1234")},
		SignResponse{Signature: []byte{0x30, 0x06}},
		NameRequest{Name: "web-"},
		KeyInfoResponse{Alg: "ecdsa-p256", Flags: KeyHasPIN, PublicDER: []byte{1, 2}, CertChain: [][]byte{{3}, {4, 5}}},
		FindResponse{Keys: []FoundKey{{"a", "ed25519"}, {"b", "rsa-2048"}}},
		ErrorResponse{Message: "no such PAL"},
		KeyCreateRequest{Name: "web", Alg: "rsa-3072"},
	} {
		b := m.Append(nil)
		got, err := decoders[i](b)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if again := got.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("%T: %x re-encodes as %x", m, b, again)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(append([]byte{3}, SignRequest{Name: "k", Scheme: 0x18, Hash: 0xb, Digest: make([]byte, 32)}.Append(nil)...))
	f.Add(append([]byte{6}, KeyInfoResponse{Alg: "ed25519", PublicDER: []byte{1}, CertChain: [][]byte{{2}}}.Append(nil)...))
	f.Add(append([]byte{7}, FindResponse{Keys: []FoundKey{{"a", "b"}}}.Append(nil)...))
	f.Add([]byte{1, 2, 0, 0, 1, 0, 0, 0, 12, 0, 0, 0})
	f.Add(append([]byte{9}, KeyCreateRequest{Name: "web", Alg: "ecdsa-p256"}.Append(nil)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		if _, err := ParseHeader(b[1:]); err == nil && len(b) < 1+HeaderSize {
			t.Fatal("short header accepted")
		}
		got, err := decoders[int(b[0])%len(decoders)](b[1:])
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if again := got.Append(nil); !bytes.Equal(again, b[1:]) {
			t.Fatalf("%x decodes to %+v, which encodes as %x", b[1:], got, again)
		}
	})
}
