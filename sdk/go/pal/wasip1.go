//go:build wasip1

package pal

//go:wasmimport palisade utpm
func hostcall(op, req, reqLen, resp, respCap uint32) int64

// input is the buffer palisade_alloc hands out; it is reused across calls.
//
//lint:ignore U1000 used by the wasm exports below
var input []byte

//lint:ignore U1000 called by the engine through the wasm export
//go:wasmexport palisade_alloc
func palisadeAlloc(size uint32) uint32 {
	if uint32(cap(input)) < size {
		input = make([]byte, size)
	}
	return addr(input[:cap(input)])
}

//lint:ignore U1000 called by the engine through the wasm export
//go:wasmexport palisade_entry
func palisadeEntry(ptr, n uint32) int32 {
	var in []byte
	if n > 0 {
		// The engine writes the input where palisade_alloc said (docs/abi.md §5).
		if ptr != addr(input[:cap(input)]) || n > uint32(cap(input)) {
			return 1
		}
		in = input[:n]
	}
	return entry(in)
}
