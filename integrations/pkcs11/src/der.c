/* Bounded DER reading for SubjectPublicKeyInfo, X.509 certificates and ECDSA signatures. */
#include <string.h>

#include "der.h"

int der_peek(const struct der *in)
{
	return in->n ? in->p[0] : -1;
}

int der_next(struct der *in, uint8_t tag, struct der *val, struct der *full)
{
	size_t len, hdr = 2, i, nb;

	if (in->n < 2 || in->p[0] != tag)
		return -1;
	len = in->p[1];
	if (len & 0x80) {
		nb = len & 0x7f;
		if (nb == 0 || nb > 3 || in->n < 2 + nb) /* ≤ 16 MiB: more than any key or certificate */
			return -1;
		len = 0;
		for (i = 0; i < nb; i++)
			len = len << 8 | in->p[2 + i];
		hdr += nb;
	}
	if (len > in->n - hdr)
		return -1;
	if (val) {
		val->p = in->p + hdr;
		val->n = len;
	}
	if (full) {
		full->p = in->p;
		full->n = hdr + len;
	}
	in->p += hdr + len;
	in->n -= hdr + len;
	return 0;
}

static void strip_zeros(struct der *d)
{
	while (d->n > 1 && d->p[0] == 0) {
		d->p++;
		d->n--;
	}
}

static const uint8_t oid_rsa[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01};
static const uint8_t oid_ec[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
static const uint8_t oid_ed25519[] = {0x2b, 0x65, 0x70};

static int oid_is(const struct der *o, const uint8_t *want, size_t n)
{
	return o->n == n && memcmp(o->p, want, n) == 0;
}

int der_parse_spki(const uint8_t *p, size_t n, struct spki *out)
{
	struct der in = {p, n}, spki, alg, oid, bits, rsa;

	memset(out, 0, sizeof(*out));
	if (der_next(&in, DER_SEQUENCE, &spki, NULL) || in.n || der_next(&spki, DER_SEQUENCE, &alg, NULL) ||
	    der_next(&alg, DER_OID, &oid, NULL) || der_next(&spki, DER_BIT_STRING, &bits, NULL) || spki.n ||
	    bits.n < 1 || bits.p[0] != 0)
		return -1;
	bits.p++;
	bits.n--;
	if (oid_is(&oid, oid_rsa, sizeof(oid_rsa))) {
		if (der_next(&bits, DER_SEQUENCE, &rsa, NULL) || bits.n ||
		    der_next(&rsa, DER_INTEGER, &out->modulus, NULL) ||
		    der_next(&rsa, DER_INTEGER, &out->exponent, NULL) || rsa.n)
			return -1;
		strip_zeros(&out->modulus);
		strip_zeros(&out->exponent);
		out->kind = KIND_RSA;
		return 0;
	}
	if (oid_is(&oid, oid_ec, sizeof(oid_ec))) {
		if (der_next(&alg, DER_OID, NULL, &out->ec_params) || alg.n || bits.n < 1 || bits.p[0] != 0x04)
			return -1;
		out->ec_point = bits;
		out->kind = KIND_EC;
		return 0;
	}
	if (oid_is(&oid, oid_ed25519, sizeof(oid_ed25519))) {
		if (alg.n || bits.n != 32)
			return -1;
		out->ec_point = bits;
		out->kind = KIND_ED25519;
		return 0;
	}
	return -1;
}

int der_parse_cert(const uint8_t *p, size_t n, struct cert_parts *out)
{
	struct der in = {p, n}, cert, tbs;

	memset(out, 0, sizeof(*out));
	if (der_next(&in, DER_SEQUENCE, &cert, NULL) || in.n || der_next(&cert, DER_SEQUENCE, &tbs, NULL))
		return -1;
	if (der_peek(&tbs) == DER_CONTEXT0 && der_next(&tbs, DER_CONTEXT0, NULL, NULL))
		return -1;
	if (der_next(&tbs, DER_INTEGER, NULL, &out->serial) || der_next(&tbs, DER_SEQUENCE, NULL, NULL) ||
	    der_next(&tbs, DER_SEQUENCE, NULL, &out->issuer) || der_next(&tbs, DER_SEQUENCE, NULL, NULL) ||
	    der_next(&tbs, DER_SEQUENCE, NULL, &out->subject))
		return -1;
	return 0;
}

int der_ecdsa_to_raw(const uint8_t *sig, size_t n, size_t width, uint8_t *out)
{
	struct der in = {sig, n}, seq, v[2];
	int i;

	if (der_next(&in, DER_SEQUENCE, &seq, NULL) || in.n || der_next(&seq, DER_INTEGER, &v[0], NULL) ||
	    der_next(&seq, DER_INTEGER, &v[1], NULL) || seq.n)
		return -1;
	for (i = 0; i < 2; i++) {
		strip_zeros(&v[i]);
		if (v[i].n > width)
			return -1;
		memset(out + i * width, 0, width - v[i].n);
		memcpy(out + i * width + width - v[i].n, v[i].p, v[i].n);
	}
	return 0;
}
