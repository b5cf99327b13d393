/* argon2.h — Argon2id (RFC 9106, version 0x13) and BLAKE2b (RFC 7693), freestanding: no libc
 * beyond memcpy/memset, no allocation. Memory comes from one static arena of
 * ARGON2_MAX_KIB KiB, so one hash runs at a time (a PAL instance runs one call at a time).
 * Written from the RFCs; checked against golang.org/x/crypto/argon2 (checker_test.go). */
#ifndef PALISADE_ARGON2_H
#define PALISADE_ARGON2_H

#include <stddef.h>
#include <stdint.h>

#ifndef ARGON2_MAX_KIB
#define ARGON2_MAX_KIB (32u * 1024u) /* 32 MiB: above OWASP's 19 MiB minimum */
#endif
#define ARGON2_MAX_LANES 16u
#define ARGON2_MAX_TAG 64u

#define ARGON2_OK 0
#define ARGON2_E_PARAM (-1) /* t, m, p or tag length out of range */

typedef struct {
	uint64_t h[8];
	uint64_t t[2];
	uint8_t buf[128];
	size_t buflen;
	size_t outlen;
} blake2b_state;

int blake2b_init(blake2b_state *s, size_t outlen); /* outlen 1..64 */
void blake2b_update(blake2b_state *s, const void *in, size_t len);
void blake2b_final(blake2b_state *s, uint8_t *out);

/* argon2id computes the tag of pwd under salt with t passes over m KiB in p lanes (no secret,
 * no associated data). 1 ≤ t, 8p ≤ m ≤ ARGON2_MAX_KIB, 1 ≤ p ≤ ARGON2_MAX_LANES,
 * 4 ≤ taglen ≤ ARGON2_MAX_TAG. Returns ARGON2_OK or ARGON2_E_PARAM. The arena is wiped
 * before it returns. */
int argon2id(uint32_t t, uint32_t m, uint32_t p, const uint8_t *pwd, uint32_t pwdlen,
	     const uint8_t *salt, uint32_t saltlen, uint8_t *tag, uint32_t taglen);

#endif
