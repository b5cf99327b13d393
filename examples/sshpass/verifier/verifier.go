// Package verifier is the password hashing of the SSH example, shared by the checking PAL and
// the plain (in-process) checker that the benchmark compares it with.
package verifier

import "golang.org/x/crypto/argon2"

// Argon2id parameters (RFC 9106 names): one pass over 2 MiB with one lane; a check takes a
// few milliseconds (docs/evaluation.md has the measured times, native and in the Wasm PAL).
const (
	Time    = 1
	Memory  = 2 * 1024 // KiB
	Threads = 1
	Len     = 32
	SaltLen = 16
)

// Hash is the verifier of password with salt.
func Hash(password []byte, salt [SaltLen]byte) (v [Len]byte) {
	copy(v[:], argon2.IDKey(password, salt[:], Time, Memory, Threads, Len))
	return v
}
