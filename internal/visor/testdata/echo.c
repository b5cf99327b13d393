/* Test PAL for the visor: a few behaviours selected by the input's first bytes. */
#include "palisade.h"

static uint64_t calls; /* lives in PAL memory: persists across calls while registered */

static int starts(const uint8_t *in, uint32_t n, const char *p) {
	uint32_t l = (uint32_t)strlen(p);
	return n >= l && memcmp(in, p, l) == 0;
}

int32_t pal_main(const uint8_t *in, uint32_t n) {
	calls++;
	if (n == 0)
		return 0; /* the null call: no hostcall at all */
	if (starts(in, n, "spin")) {
		/* Tell the test the call is running (it watches PCR 2), then never return. */
		uint8_t d[PAL_DIGEST_SIZE] = {1};
		pal_extend(2, d);
		for (volatile int x = 0;; x++)
			;
	}
	if (starts(in, n, "count"))
		return pal_output(&calls, sizeof calls);
	if (starts(in, n, "extend")) {
		uint8_t d[PAL_DIGEST_SIZE];
		pal_sha256(in, n, d);
		return pal_extend(1, d);
	}
	if (starts(in, n, "key")) {
		static uint8_t pub[256], blob[512], sig[128], digest[32];
		uint32_t pub_len;
		pal_policy self = {0};
		int64_t bl = pal_key_create(PAL_KEY_ECDSA_P256, &self, pub, sizeof pub, &pub_len, blob,
					    sizeof blob);
		int64_t sl;
		if (bl < 0)
			return 100 - (int32_t)bl; /* 100 + the hostcall's error code */
		sl = pal_key_sign(blob, (uint32_t)bl, PAL_SCHEME_ECDSA, PAL_HASH_SHA256, digest,
				  sizeof digest, sig, sizeof sig);
		if (sl < 0)
			return 200 - (int32_t)sl;
		blob[bl - 1] ^= 1; /* tampered: must fail */
		if (pal_key_sign(blob, (uint32_t)bl, PAL_SCHEME_ECDSA, PAL_HASH_SHA256, digest,
				 sizeof digest, sig, sizeof sig) >= 0)
			return 3;
		return 0;
	}
	if (starts(in, n, "fail"))
		return 42;
	return pal_output(in, n); /* echo */
}
