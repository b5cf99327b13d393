/* Test PAL for the visor: a few behaviours selected by the input's first bytes. */
#include "palisade.h"

static uint64_t calls; /* lives in PAL memory: persists across calls while registered */

static int starts(const uint8_t *in, uint32_t n, const char *p) {
	uint32_t l = (uint32_t)strlen(p);
	return n >= l && memcmp(in, p, l) == 0;
}

int32_t pal_main(const uint8_t *in, uint32_t n) {
	calls++;
	if (starts(in, n, "spin")) {
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
	if (starts(in, n, "fail"))
		return 42;
	return pal_output(in, n); /* echo */
}
