// Package strictcbor builds the CBOR modes Palisade's formats share: Core Deterministic
// Encoding for writing, and a strict decoder for reading, so that every structure has exactly
// one accepted encoding and a hostile input is refused before it costs much.
package strictcbor

import "github.com/fxamacker/cbor/v2"

// Limits bound what the decoder accepts. A zero field keeps the cbor library's default
// (docs of cbor.DecOptions), which is what a format that states no bound of its own gets.
type Limits struct {
	MaxNestedLevels  int
	MaxArrayElements int
	MaxMapPairs      int
}

// EncMode returns the Core Deterministic Encoding mode (RFC 8949 §4.2.1).
func EncMode() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // the options are constant: an error is a programming error
	}
	return em
}

// DecMode returns a decoder that refuses duplicate map keys, fields the target does not
// know, indefinite lengths and tags, and anything past lim. It panics if lim is outside the
// cbor library's ranges: the limits are constants of the caller's format.
func DecMode(lim Limits) cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   lim.MaxNestedLevels,
		MaxArrayElements:  lim.MaxArrayElements,
		MaxMapPairs:       lim.MaxMapPairs,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}
