/*
 * libFuzzer target for the module's DER reading: SubjectPublicKeyInfo and certificates come
 * from the daemon, ECDSA signatures from the signing PAL. Every element found must lie inside
 * the input.
 *
 *   make fuzz && build/fuzz_der -max_total_time=20 fuzz/corpus
 */
#include <stdint.h>
#include <stdlib.h>

#include "../src/der.h"

static void inside(const struct der *d, const uint8_t *p, size_t n)
{
	if (d->n && (d->p < p || d->p + d->n > p + n))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t n)
{
	struct spki s;
	struct cert_parts c;
	uint8_t raw[2 * 66];

	if (der_parse_spki(p, n, &s) == 0) {
		inside(&s.modulus, p, n);
		inside(&s.exponent, p, n);
		inside(&s.ec_params, p, n);
		inside(&s.ec_point, p, n);
	}
	if (der_parse_cert(p, n, &c) == 0) {
		inside(&c.serial, p, n);
		inside(&c.issuer, p, n);
		inside(&c.subject, p, n);
	}
	der_ecdsa_to_raw(p, n, 32, raw);
	der_ecdsa_to_raw(p, n, 66, raw);
	return 0;
}
