package utpm

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// Quote format (docs/formats.md §3): a COSE_Sign1 signed with ES256 by the identity key, over
// a CBOR map with the claim keys below, in Core Deterministic Encoding.
const (
	QuoteVersion     = 1
	QuoteContentType = "application/vnd.palisade.utpm-quote+cbor"

	ClaimVersion  = 1 // uint: QuoteVersion
	ClaimPAL      = 2 // bstr .size 32: measurement of the quoting PAL
	ClaimPCRs     = 3 // map uint(0..7) → bstr .size 32: the selected PCRs
	ClaimNonce    = 4 // bstr ≤ MaxNonce
	ClaimUserData = 5 // bstr ≤ MaxUserData
	ClaimVisor    = 6 // bstr .size 32: measurement of the visor
	ClaimIssuedAt = 7 // int: Unix time in seconds
	ClaimRooted   = 8 // bool: false when the root of trust is "none"
)

// quoteClaims is the claims map. Byte strings are slices (not arrays) because the CBOR
// encoding of a Go array is an array, not a byte string.
type quoteClaims struct {
	Version  int            `cbor:"1,keyasint"`
	PAL      []byte         `cbor:"2,keyasint"`
	PCRs     map[int][]byte `cbor:"3,keyasint"`
	Nonce    []byte         `cbor:"4,keyasint"`
	UserData []byte         `cbor:"5,keyasint"`
	Visor    []byte         `cbor:"6,keyasint"`
	IssuedAt int64          `cbor:"7,keyasint"`
	Rooted   bool           `cbor:"8,keyasint"`
}

var claimsEnc = func() cbor.EncMode {
	o := cbor.CoreDetEncOptions()
	o.NilContainers = cbor.NilContainerAsEmpty // an empty nonce is h'', never null
	em, err := o.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// Quote returns evidence that this PAL, with the PCRs selected by mask, produced nonce and
// user: a COSE_Sign1 by the visor's identity key (docs/formats.md §3).
func (t *TPM) Quote(nonce, user []byte, mask uint8) ([]byte, error) {
	if len(nonce) > MaxNonce {
		return nil, fmt.Errorf("quote: nonce of %d bytes (at most %d): %w", len(nonce), MaxNonce, ErrTooLarge)
	}
	if len(user) > MaxUserData {
		return nil, fmt.Errorf("quote: user data of %d bytes (at most %d): %w", len(user), MaxUserData, ErrTooLarge)
	}
	pcrs := t.PCRs()
	c := quoteClaims{
		Version:  QuoteVersion,
		PAL:      t.m[:],
		PCRs:     make(map[int][]byte, NumPCRs),
		Nonce:    nonce,
		UserData: user,
		Visor:    t.p.visor[:],
		IssuedAt: t.p.now().Unix(),
		Rooted:   t.p.rooted,
	}
	for i := 0; i < NumPCRs; i++ {
		if mask&(1<<i) != 0 {
			c.PCRs[i] = pcrs[i][:]
		}
	}
	payload, err := claimsEnc.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("quote: encode claims: %w: %w", ErrInternal, err)
	}
	msg := cose.Sign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{
				cose.HeaderLabelAlgorithm:   cose.AlgorithmES256,
				cose.HeaderLabelContentType: QuoteContentType,
			},
			Unprotected: cose.UnprotectedHeader{cose.HeaderLabelKeyID: t.p.kid},
		},
		Payload: payload,
	}
	if err := msg.Sign(t.p.rand, nil, t.p.signer); err != nil {
		return nil, fmt.Errorf("quote: sign: %w: %w", ErrInternal, err)
	}
	ev, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("quote: encode: %w: %w", ErrInternal, err)
	}
	return ev, nil
}
