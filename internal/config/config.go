// Package config implements acTvSM-style trusted configurations: an administrator-signed
// document that says which visor builds, PALs and application images are trusted, by name and
// measurement, and which secrets each name may receive.
//
// A document is authored as JSON, normalised into deterministic CBOR (so the same content has
// the same bytes and the same hash everywhere) and signed into a COSE_Sign1 by the
// administrator key. A State directory holds the active configuration, a hash-chained history
// of every transition and the version anchor that refuses rollback; Apply switches
// configurations atomically. Secrets are released only to a name and measurement that the
// ACTIVE configuration allows (Authorize, SecretStore).
//
// The formats are specified in docs/configurations.md.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"

	"github.com/palisade-project/palisade/internal/strictcbor"
)

// Measurement is a SHA-256 identity: of a visor build, a PAL image (pal.Parse), a single
// executable (MeasureFile) or a directory tree (MeasureTree).
type Measurement [32]byte

func (m Measurement) String() string { return hex.EncodeToString(m[:]) }

// Short is the first 8 bytes in hex, for human-readable output.
func (m Measurement) Short() string { return hex.EncodeToString(m[:8]) }

// ParseMeasurement parses 64 hex digits.
func ParseMeasurement(s string) (Measurement, error) {
	var m Measurement
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(m) {
		return m, fmt.Errorf("%w: measurement must be 64 hex digits, got %q", ErrInvalid, s)
	}
	copy(m[:], b)
	return m, nil
}

// Limits on a document, so that hostile input cannot exhaust memory. They are far above any
// real configuration.
const (
	MaxDocumentSize   = 1 << 20 // the authored JSON and the canonical CBOR payload
	maxSignatureSize  = 4096    // what COSE_Sign1 adds to the payload, at most
	MaxNames          = 4096
	MaxMeasurements   = 4096 // per name, and visors
	MaxNameLen        = 128
	maxCBORElements   = MaxNames * 4
	maxCBORNestLevels = 8
)

// MaxSignedSize bounds a signed configuration (the COSE_Sign1 of a MaxDocumentSize payload).
const MaxSignedSize = MaxDocumentSize + maxSignatureSize

// Errors callers can test with errors.Is.
var (
	ErrInvalid      = errors.New("invalid configuration")
	ErrMalformed    = errors.New("malformed signed configuration")
	ErrBadSignature = errors.New("configuration signature does not verify")
	ErrForeignKey   = errors.New("configuration is signed by another administrator key")
)

// Config is a trusted configuration. Lists are sorted and free of duplicates (Normalize), so
// two documents with the same content encode to the same bytes.
type Config struct {
	// Version increases with every configuration the administrator signs; a state refuses
	// any version not greater than its active one.
	Version uint64 `cbor:"1,keyasint"`
	// Visors lists the trusted visor measurements.
	Visors []Measurement `cbor:"2,keyasint,omitempty"`
	// PALs maps a PAL name to its allowed measurements (pal.Parse).
	PALs map[string][]Measurement `cbor:"3,keyasint,omitempty"`
	// Apps maps an application name to the allowed measurements of its image: a single
	// executable (MeasureFile) or a directory tree (MeasureTree).
	Apps map[string][]Measurement `cbor:"4,keyasint,omitempty"`
	// Secrets maps a secret name to the PAL or application names allowed to receive it.
	Secrets map[string][]string `cbor:"5,keyasint,omitempty"`
}

// Kind says whether a name is a PAL or an application.
type Kind string

const (
	KindPAL Kind = "pal"
	KindApp Kind = "app"
)

// nameRE keeps names printable and unambiguous in plan output and file names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Lookup returns the kind and allowed measurements of a PAL or application name.
func (c *Config) Lookup(name string) (Kind, []Measurement, bool) {
	if ms, ok := c.PALs[name]; ok {
		return KindPAL, ms, true
	}
	if ms, ok := c.Apps[name]; ok {
		return KindApp, ms, true
	}
	return "", nil, false
}

// SecretsOf returns, sorted, the secrets released to name.
func (c *Config) SecretsOf(name string) []string {
	var out []string
	for s, names := range c.Secrets {
		if slices.Contains(names, name) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// Normalize sorts every list and removes duplicates, then validates. It is idempotent.
func (c *Config) Normalize() error {
	c.Visors = sortMeasurements(c.Visors)
	for n, ms := range c.PALs {
		c.PALs[n] = sortMeasurements(ms)
	}
	for n, ms := range c.Apps {
		c.Apps[n] = sortMeasurements(ms)
	}
	for s, names := range c.Secrets {
		names = append([]string{}, names...)
		sort.Strings(names)
		c.Secrets[s] = slices.Compact(names)
	}
	return c.Validate()
}

func sortMeasurements(ms []Measurement) []Measurement {
	ms = append([]Measurement{}, ms...) // never nil: nil and empty must encode alike
	slices.SortFunc(ms, func(a, b Measurement) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(ms)
}

// Validate checks the rules a document must follow; the error says which entry breaks which.
func (c *Config) Validate() error {
	if c.Version == 0 {
		return fmt.Errorf("%w: version must be at least 1", ErrInvalid)
	}
	if len(c.PALs)+len(c.Apps) > MaxNames || len(c.Secrets) > MaxNames {
		return fmt.Errorf("%w: more than %d names", ErrInvalid, MaxNames)
	}
	if len(c.Visors) > MaxMeasurements {
		return fmt.Errorf("%w: more than %d visor measurements", ErrInvalid, MaxMeasurements)
	}
	check := func(kind, name string, ms []Measurement) error {
		if err := checkName(name); err != nil {
			return fmt.Errorf("%w: %s %q: %v", ErrInvalid, kind, name, err)
		}
		if len(ms) > MaxMeasurements {
			return fmt.Errorf("%w: %s %q: more than %d measurements", ErrInvalid, kind, name, MaxMeasurements)
		}
		return nil
	}
	for n, ms := range c.PALs {
		if err := check("pal", n, ms); err != nil {
			return err
		}
	}
	for n, ms := range c.Apps {
		if err := check("app", n, ms); err != nil {
			return err
		}
		// One namespace for PALs and apps: a secret names a recipient without saying
		// which kind it is, so the same name in both would be ambiguous.
		if _, dup := c.PALs[n]; dup {
			return fmt.Errorf("%w: %q is both a pal and an app", ErrInvalid, n)
		}
	}
	for s, names := range c.Secrets {
		if err := checkName(s); err != nil {
			return fmt.Errorf("%w: secret %q: %v", ErrInvalid, s, err)
		}
		if len(names) > MaxNames {
			return fmt.Errorf("%w: secret %q: more than %d names", ErrInvalid, s, MaxNames)
		}
		for _, n := range names {
			if _, _, ok := c.Lookup(n); !ok {
				return fmt.Errorf("%w: secret %q is released to %q, which is neither a pal nor an app", ErrInvalid, s, n)
			}
		}
	}
	return nil
}

func checkName(n string) error {
	if len(n) > MaxNameLen {
		return fmt.Errorf("name longer than %d bytes", MaxNameLen)
	}
	if !nameRE.MatchString(n) {
		return errors.New("name must match [A-Za-z0-9][A-Za-z0-9._-]*")
	}
	return nil
}

// jsonDoc is the authored form: measurements as hex strings.
type jsonDoc struct {
	Version uint64              `json:"version"`
	Visors  []string            `json:"visors"`
	PALs    map[string][]string `json:"pals"`
	Apps    map[string][]string `json:"apps"`
	Secrets map[string][]string `json:"secrets"`
}

// ParseJSON parses an authored document. Unknown fields are refused (a typo must not silently
// drop a rule), and the result is normalised and validated.
func ParseJSON(b []byte) (*Config, error) {
	if len(b) > MaxDocumentSize {
		return nil, fmt.Errorf("%w: document of %d bytes exceeds the limit of %d bytes (1 MiB)", ErrInvalid, len(b), MaxDocumentSize)
	}
	// encoding/json says only "EOF" or "unexpected EOF" for an empty or cut file.
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%w: empty document (%d bytes)", ErrInvalid, len(b))
	}
	if err := checkJSONKeys(b); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d jsonDoc
	if err := dec.Decode(&d); errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("%w: document ends early (truncated?) after %d bytes", ErrInvalid, len(b))
	} else if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the document", ErrInvalid)
	}
	c := &Config{Version: d.Version, PALs: map[string][]Measurement{}, Apps: map[string][]Measurement{}, Secrets: map[string][]string{}}
	var err error
	if c.Visors, err = parseAll("visors", d.Visors); err != nil {
		return nil, err
	}
	for n, hs := range d.PALs {
		if c.PALs[n], err = parseAll("pal "+n, hs); err != nil {
			return nil, err
		}
	}
	for n, hs := range d.Apps {
		if c.Apps[n], err = parseAll("app "+n, hs); err != nil {
			return nil, err
		}
	}
	for s, names := range d.Secrets {
		c.Secrets[s] = names
	}
	if err := c.Normalize(); err != nil {
		return nil, err
	}
	return c, nil
}

// jsonFields are the top-level keys of the authored form, matched exactly: encoding/json would
// also take "Version" or "PALS" for them.
var jsonFields = map[string]bool{"version": true, "visors": true, "pals": true, "apps": true, "secrets": true}

// checkJSONKeys refuses what encoding/json lets through silently: a key repeated in one object
// (the last one would win, or a repeated object would be merged into the first, so a rule
// written twice drops one without a word), at any level and compared after unescaping, and a
// top-level key that is not exactly one of the documented fields. It also requires the
// document to be a JSON object. Syntax errors are left to the decoder that runs next, which
// reports them with their position.
func checkJSONKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: the document must be a JSON object", ErrInvalid)
	}
	if err := checkJSONObject(dec, "", 1); err != nil && !errors.Is(err, errJSONSyntax) {
		return err
	}
	return nil
}

// maxJSONDepth bounds the nesting checkJSONKeys follows: a valid document nests three levels
// (document, pals, a list), so anything deeper is refused before it can cost stack.
const maxJSONDepth = 8

// errJSONSyntax stops checkJSONKeys at a syntax error, which json.Decoder.Decode reports.
var errJSONSyntax = errors.New("json syntax")

// checkJSONObject reads the rest of an object whose '{' was read; path names it in errors.
func checkJSONObject(dec *json.Decoder, path string, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("%w: nested more than %d levels deep", ErrInvalid, maxJSONDepth)
	}
	seen := map[string]bool{}
	for {
		tok, err := dec.Token()
		if err != nil {
			return errJSONSyntax
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			return nil
		}
		k, _ := tok.(string) // json.Decoder.Token only yields a string in key position
		switch {
		case seen[k] && path == "":
			return fmt.Errorf("%w: duplicate key %q", ErrInvalid, k)
		case seen[k]:
			return fmt.Errorf("%w: duplicate key %q in %s", ErrInvalid, k, path)
		case depth == 1 && !jsonFields[k]:
			return fmt.Errorf("%w: json: unknown field %q (the fields are version, visors, pals, apps and secrets, in lower case)", ErrInvalid, k)
		}
		seen[k] = true
		sub := k
		if path != "" {
			sub = path + "." + k
		}
		if err := checkJSONValue(dec, sub, depth); err != nil {
			return err
		}
	}
}

// checkJSONValue reads one value, checking the objects inside it.
func checkJSONValue(dec *json.Decoder, path string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return errJSONSyntax
	}
	switch tok {
	case json.Delim('{'):
		return checkJSONObject(dec, path, depth+1)
	case json.Delim('['):
		if depth+1 > maxJSONDepth {
			return fmt.Errorf("%w: nested more than %d levels deep", ErrInvalid, maxJSONDepth)
		}
		for dec.More() {
			if err := checkJSONValue(dec, path, depth+1); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return errJSONSyntax
		}
	}
	return nil
}

func parseAll(what string, hs []string) ([]Measurement, error) {
	out := make([]Measurement, 0, len(hs))
	for _, h := range hs {
		m, err := ParseMeasurement(h)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// MarshalJSON writes the authored form, with lists sorted, so show/init output can be edited
// and signed again.
func (c *Config) MarshalJSON() ([]byte, error) {
	d := jsonDoc{Version: c.Version, Visors: hexAll(c.Visors), PALs: map[string][]string{}, Apps: map[string][]string{}, Secrets: map[string][]string{}}
	for n, ms := range c.PALs {
		d.PALs[n] = hexAll(ms)
	}
	for n, ms := range c.Apps {
		d.Apps[n] = hexAll(ms)
	}
	for s, names := range c.Secrets {
		d.Secrets[s] = append([]string{}, names...)
	}
	return json.MarshalIndent(d, "", "  ")
}

func hexAll(ms []Measurement) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.String())
	}
	return out
}

var (
	encMode = strictcbor.EncMode()
	decMode = strictcbor.DecMode(strictcbor.Limits{
		MaxNestedLevels:  maxCBORNestLevels,
		MaxArrayElements: maxCBORElements,
		MaxMapPairs:      maxCBORElements,
	})
)

// Encode returns the canonical CBOR of c (Core Deterministic Encoding, after Normalize).
func (c *Config) Encode() ([]byte, error) {
	cc := c.clone()
	if err := cc.Normalize(); err != nil {
		return nil, err
	}
	return encMode.Marshal(cc)
}

// Hash is SHA-256 of the canonical encoding: the identity of a configuration's content.
func (c *Config) Hash() (Measurement, error) {
	b, err := c.Encode()
	if err != nil {
		return Measurement{}, err
	}
	return sha256.Sum256(b), nil
}

// DecodeCBOR parses a canonical encoding. Anything that is not exactly the canonical encoding
// of a valid document is refused, so one content has one byte string and one hash.
func DecodeCBOR(b []byte) (*Config, error) {
	if len(b) > MaxDocumentSize {
		return nil, fmt.Errorf("%w: payload of %d bytes exceeds the limit of %d bytes (1 MiB)", ErrMalformed, len(b), MaxDocumentSize)
	}
	var c Config
	if err := decMode.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if c.PALs == nil {
		c.PALs = map[string][]Measurement{}
	}
	if c.Apps == nil {
		c.Apps = map[string][]Measurement{}
	}
	if c.Secrets == nil {
		c.Secrets = map[string][]string{}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	again, err := c.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: payload is not in canonical form", ErrMalformed)
	}
	return &c, nil
}

func (c *Config) clone() *Config {
	cc := &Config{Version: c.Version, Visors: slices.Clone(c.Visors),
		PALs: map[string][]Measurement{}, Apps: map[string][]Measurement{}, Secrets: map[string][]string{}}
	for n, ms := range c.PALs {
		cc.PALs[n] = slices.Clone(ms)
	}
	for n, ms := range c.Apps {
		cc.Apps[n] = slices.Clone(ms)
	}
	for s, names := range c.Secrets {
		cc.Secrets[s] = slices.Clone(names)
	}
	return cc
}
