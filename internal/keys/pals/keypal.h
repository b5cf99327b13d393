/* keypal.h — little-endian helpers shared by the two key PALs of palisaded (docs/keys.md).
 * Header-only so that each PAL is one translation unit plus the SDK. */
#ifndef KEYPAL_H
#define KEYPAL_H

#include "palisade.h"

/* Statuses the daemon maps to keys.Err* (internal/keys/pal.go). A failed µTPM call is
 * reported as STATUS_UTPM with the negative ABI code as a u32 in the output. */
enum {
	STATUS_OK = 0,
	STATUS_BAD_REQUEST = 1,
	STATUS_REFUSED = 2,
	STATUS_PIN_REQUIRED = 3,
	STATUS_PIN_INCORRECT = 4,
	STATUS_LOCKED = 5,
	STATUS_BAD_PIN_STATE = 6,
	STATUS_UTPM = 7,
};

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static inline uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static inline void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/* utpm_fail ends a call whose µTPM operation returned rc < 0. */
static inline int32_t utpm_fail(int64_t rc)
{
	uint8_t b[4];

	put32(b, (uint32_t)-rc);
	pal_output(b, sizeof b);
	return STATUS_UTPM;
}

/* A reader over the input: every take checks what is left, once. */
struct rd {
	const uint8_t *p;
	uint32_t n;
	int bad;
};

static inline const uint8_t *take(struct rd *r, uint32_t n)
{
	const uint8_t *p = r->p;

	if (r->bad || n > r->n) {
		r->bad = 1;
		return 0;
	}
	r->p += n;
	r->n -= n;
	return p;
}

static inline uint32_t take32(struct rd *r)
{
	const uint8_t *p = take(r, 4);

	return p ? get32(p) : 0;
}

static inline uint16_t take16(struct rd *r)
{
	const uint8_t *p = take(r, 2);

	return p ? get16(p) : 0;
}

static inline uint8_t take8(struct rd *r)
{
	const uint8_t *p = take(r, 1);

	return p ? p[0] : 0;
}

#endif
