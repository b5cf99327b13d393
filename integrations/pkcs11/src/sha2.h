/* SHA-256, SHA-384 and SHA-512 (FIPS 180-4), for the hash-and-sign mechanisms. */
#ifndef P11_SHA2_H
#define P11_SHA2_H

#include <stddef.h>
#include <stdint.h>

struct sha2 {
	int bits; /* 256, 384 or 512 */
	uint64_t h[8];
	uint64_t len; /* bytes hashed so far */
	uint8_t buf[128];
	size_t fill;
};

void sha2_init(struct sha2 *c, int bits);
void sha2_update(struct sha2 *c, const void *data, size_t n);
/* sha2_final writes bits/8 bytes to out. */
void sha2_final(struct sha2 *c, uint8_t *out);

#endif
