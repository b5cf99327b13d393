package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const docA = `{
  "version": 7,
  "visors": ["` + "%V2" + `", "` + "%V1" + `", "` + "%V1" + `"],
  "pals": {"signer": ["%S1"]},
  "apps": {"web": ["%W1"], "db": []},
  "secrets": {"tls-key": ["web", "signer", "web"]}
}`

const docB = `{"secrets": {"tls-key": ["signer", "web"]}, "apps": {"db": [], "web": ["%W1"]},
  "pals": {"signer": ["%S1"]}, "visors": ["%V1", "%V2"], "version": 7}`

func fill(doc string) string {
	return strings.NewReplacer("%V1", meas("v1").String(), "%V2", meas("v2").String(),
		"%S1", meas("s1").String(), "%W1", meas("w1").String()).Replace(doc)
}

func TestParseJSONCanonical(t *testing.T) {
	a, err := ParseJSON([]byte(fill(docA)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseJSON([]byte(fill(docB)))
	if err != nil {
		t.Fatal(err)
	}
	ea, _ := a.Encode()
	eb, _ := b.Encode()
	if !bytes.Equal(ea, eb) {
		t.Fatalf("same content, different encodings:\n%x\n%x", ea, eb)
	}
	if len(a.Visors) != 2 || len(a.Secrets["tls-key"]) != 2 {
		t.Fatalf("duplicates not removed: %+v", a)
	}
	// The canonical bytes are part of the format: another implementation must produce them.
	golden(t, "canonical.hex", []byte(hex.EncodeToString(ea)+"\n"))
	back, err := DecodeCBOR(ea)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := back.Encode(); !bytes.Equal(again, ea) {
		t.Fatal("decode/encode is not the identity")
	}
	// JSON written by show/init parses back to the same content.
	j, err := a.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	if ec, _ := c.Encode(); !bytes.Equal(ec, ea) {
		t.Fatal("JSON round trip changed the content")
	}
}

func TestParseJSONRefuses(t *testing.T) {
	h := meas("x").String()
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", `{"version":1,"palz":{}}`, "unknown field"},
		{"version zero", `{"version":0}`, "version must be at least 1"},
		{"bad hex", `{"version":1,"pals":{"p":["zz"]}}`, "64 hex digits"},
		{"short hex", `{"version":1,"visors":["abcd"]}`, "64 hex digits"},
		{"bad name", `{"version":1,"pals":{"a/b":["` + h + `"]}}`, "name must match"},
		{"both kinds", `{"version":1,"pals":{"x":[]},"apps":{"x":[]}}`, "both a pal and an app"},
		{"secret to nobody", `{"version":1,"secrets":{"s":["ghost"]}}`, "neither a pal nor an app"},
		{"trailing", `{"version":1} {"version":2}`, "trailing data"},
		{"negative", `{"version":-1}`, "cannot unmarshal"},
		{"not json", `version: 1`, "invalid"},
		// A repeated key would silently replace (or, for an object, merge into) the first:
		// a duplicate is refused at every level, after JSON unescaping.
		{"duplicate pal", `{"version":3,"pals":{"vault":["` + h + `"],"vault":[]}}`, `duplicate key "vault" in pals`},
		{"duplicate pals", `{"version":3,"pals":{"a":[]},"pals":{"b":[]}}`, `duplicate key "pals"`},
		{"duplicate version", `{"version":3,"version":4}`, `duplicate key "version"`},
		{"duplicate app", `{"version":1,"apps":{"w":[],"w":["` + h + `"]}}`, `duplicate key "w" in apps`},
		{"duplicate secret", `{"version":1,"apps":{"w":[]},"secrets":{"s":["w"],"s":[]}}`, `duplicate key "s" in secrets`},
		{"escaped duplicate", `{"version":1,"pals":{"vault":[],"vau\u006ct":[]}}`, `duplicate key "vault" in pals`},
		// encoding/json matches field names case-insensitively; the documented names are exact.
		{"case variant", `{"version":1,"Version":2}`, `unknown field "Version"`},
		{"case only", `{"VERSION":1}`, `unknown field "VERSION"`},
		{"not an object", `[1]`, "must be a JSON object"},
		{"too deep", `{"version":1,"pals":{"a":[[[[[[[["x"]]]]]]]]}}`, "nested more than 8 levels"},
		// An empty or cut file said only "EOF" or "unexpected EOF".
		{"empty", ``, "empty document"},
		{"blank", " \n\t", "empty document"},
		{"truncated", `{"version":1,"pals":{"p"`, "document ends early (truncated?)"},
		{"truncated in key", `{"versi`, "document ends early (truncated?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseJSON([]byte(tc.doc))
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestDecodeCBORRefusesNonCanonical(t *testing.T) {
	c := baseConfig(3)
	enc, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Same content with the visor list unsorted, encoded without normalising.
	bad := c.clone()
	bad.Visors = []Measurement{meas("b"), meas("a")}
	if bytes.Compare(bad.Visors[0][:], bad.Visors[1][:]) < 0 {
		bad.Visors[0], bad.Visors[1] = bad.Visors[1], bad.Visors[0]
	}
	raw, _ := encMode.Marshal(bad)
	if _, err := DecodeCBOR(raw); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unsorted list: got %v", err)
	}
	// An indefinite-length or extra-field payload is refused too.
	if _, err := DecodeCBOR(append(enc, 0x00)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: got %v", err)
	}
	withExtra, _ := encMode.Marshal(map[int]any{1: 3, 9: "x"})
	if _, err := DecodeCBOR(withExtra); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown key: got %v", err)
	}
}

// FuzzParseJSON: whatever ParseJSON accepts re-encodes to JSON that parses to the same
// canonical content, and no input makes it panic.
func FuzzParseJSON(f *testing.F) {
	h := meas("x").String()
	for _, s := range []string{
		fill(docA), `{"version":1}`, `{"version":3,"pals":{"vault":["` + h + `"],"vault":[]}}`,
		`{"version":1,"pals":{"vault":[],"vau\u006ct":[]}}`, `{"VERSION":1}`, `[[[`, `{"version":1,"apps":{"w":[]},"secrets":{"s":["w"]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseJSON(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		enc, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		j, err := c.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseJSON(j)
		if err != nil {
			t.Fatalf("re-encoded JSON refused: %v\n%s", err, j)
		}
		if enc2, _ := c2.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatal("JSON round trip changed the content")
		}
	})
}
