package attest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/palisade-project/palisade/attest"
)

// withUnprotected re-encodes a COSE_Sign1 with its unprotected header replaced by h: nothing
// signed changes, so only the rule on unprotected headers can refuse the result.
func withUnprotected(t *testing.T, b []byte, h cose.UnprotectedHeader) []byte {
	t.Helper()
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(b); err != nil {
		t.Fatal(err)
	}
	msg.Headers.Unprotected, msg.Headers.RawUnprotected = h, nil
	out, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUnprotectedHeader: a µTPM quote's unprotected header may hold only the key id (label 4,
// SHA-256 of the identity key), or nothing; the configuration statement's must be empty.
// Anything else is refused, though no signature covers it (docs/formats.md §3).
func TestUnprotectedHeader(t *testing.T) {
	q, id := utpmQuote(t, []byte("n"), nil, 1)
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(q); err != nil {
		t.Fatal(err)
	}
	kid := msg.Headers.Unprotected[cose.HeaderLabelKeyID].([]byte)
	for _, tc := range []struct {
		name string
		h    cose.UnprotectedHeader
		want error // nil: accepted
	}{
		{"kid", cose.UnprotectedHeader{cose.HeaderLabelKeyID: kid}, nil},
		{"empty", cose.UnprotectedHeader{}, nil},
		{"wrong kid", cose.UnprotectedHeader{cose.HeaderLabelKeyID: []byte("other")}, attest.ErrSignature},
		{"kid under label 5", cose.UnprotectedHeader{int64(5): kid}, attest.ErrMalformed},
		{"kid under a private label", cose.UnprotectedHeader{int64(-65537): kid}, attest.ErrMalformed},
		{"kid under a text label", cose.UnprotectedHeader{"kid": kid}, attest.ErrMalformed},
		{"kid and another label", cose.UnprotectedHeader{cose.HeaderLabelKeyID: kid, int64(99): []byte{1}}, attest.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := attest.VerifyQuote(withUnprotected(t, q, tc.h), &id.PublicKey)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}

	// The configuration statement is produced with an empty unprotected header.
	v := startVisor(t, "visor A")
	nonce := []byte("nonce")
	pq, err := v.pal.Quote(nonce, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := configHeads(t)
	ev, err := attest.Assemble(context.Background(), v.root, pq, attest.WithConfiguration(head))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(ev, v.options(nonce)); err != nil {
		t.Fatal(err)
	}
	for _, h := range []cose.UnprotectedHeader{
		{cose.HeaderLabelKeyID: kid},
		{int64(5): []byte{1}},
	} {
		bad := mutate(t, ev, func(e *attest.Evidence) { e.Configuration = withUnprotected(t, e.Configuration, h) })
		_, err := attest.Verify(bad, v.options(nonce))
		wantCheck(t, err, attest.CheckConfiguration, attest.ErrEvidence)
	}
}
