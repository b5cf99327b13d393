/* A bounded DER reader: every length is checked against what is left before use. */
#ifndef P11_DER_H
#define P11_DER_H

#include <stddef.h>
#include <stdint.h>

struct der {
	const uint8_t *p;
	size_t n;
};

#define DER_INTEGER 0x02
#define DER_BIT_STRING 0x03
#define DER_OCTET_STRING 0x04
#define DER_NULL 0x05
#define DER_OID 0x06
#define DER_SEQUENCE 0x30
#define DER_CONTEXT0 0xa0

/*
 * der_next takes the next element of in, which must have tag, and advances in past it.
 * *val gets its contents and, if full is not NULL, *full the whole element (tag and length
 * included). Returns 0, or -1 if in is empty, the tag differs or a length runs past the end.
 */
int der_next(struct der *in, uint8_t tag, struct der *val, struct der *full);
/* der_peek returns the tag of the next element, or -1 if none. */
int der_peek(const struct der *in);

/* The parts of a SubjectPublicKeyInfo the PKCS#11 attributes need. */
enum key_kind { KIND_NONE, KIND_RSA, KIND_EC, KIND_ED25519 };

struct spki {
	enum key_kind kind;
	struct der modulus;   /* RSA, leading zeros stripped */
	struct der exponent;  /* RSA */
	struct der ec_params; /* EC: the whole curve OID element */
	struct der ec_point;  /* EC: 04‖X‖Y; Ed25519: the 32-byte key */
};

int der_parse_spki(const uint8_t *p, size_t n, struct spki *out);

/* The parts of an X.509 certificate the certificate object shows: whole DER elements. */
struct cert_parts {
	struct der serial, issuer, subject;
};

int der_parse_cert(const uint8_t *p, size_t n, struct cert_parts *out);

/*
 * der_ecdsa_to_raw converts an ASN.1 ECDSA signature to r‖s, each left-padded to width bytes
 * (the form PKCS#11 gives and OpenSSL's pkcs11 engine expects). Returns 0 or -1.
 */
int der_ecdsa_to_raw(const uint8_t *sig, size_t n, size_t width, uint8_t *out);

#endif
