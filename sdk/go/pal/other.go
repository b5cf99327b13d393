//go:build !wasip1

package pal

// hostcall outside a PAL: there is no µTPM, every operation is unsupported. This lets code
// that uses the SDK build and be unit-tested on the host.
func hostcall(op, req, reqLen, resp, respCap uint32) int64 {
	return -int64(EUnsupported)
}
