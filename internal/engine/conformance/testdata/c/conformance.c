/* conformance.c — the test PAL of engine/conformance, one source for every engine.
 *
 * Freestanding: only palisade.h. The first input byte selects a command, the rest are its
 * arguments (little-endian). A failed µTPM call makes the PAL return the positive ABI error
 * code as its status, with no output. Status 254: bad arguments; 255: unknown command.
 * Build with -DPAL_VARIANT='"b"' to get another measurement (PAL "b").
 */
#include "palisade.h"

#ifndef PAL_VARIANT
#define PAL_VARIANT "a"
#endif

#define BAD_ARGS 254
#define UNKNOWN 255

static uint8_t buf[128 * 1024];
static uint64_t calls; /* memory that persists across calls */
static volatile uint64_t sink;

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/* fail maps a µTPM result to the call's status. */
static int32_t fail(int64_t rc)
{
	return rc < 0 ? (int32_t)-rc : 0;
}

static int32_t out_len(int64_t rc)
{
	if (rc < 0)
		return (int32_t)-rc;
	return fail(pal_output(buf, (uint32_t)rc));
}

/* parse_policy reads the ABI encoding of a policy into p, so that the SDK encodes it again.
 * It returns the bytes consumed, 0 if malformed. */
static char policy_name[256];

static uint32_t parse_policy(const uint8_t *b, uint32_t n, pal_policy *p)
{
	uint32_t off = 0;
	int i;

	memset(p, 0, sizeof *p);
	if (n < 1)
		return 0;
	if (b[0] == 1) {
		if (n < 33)
			return 0;
		p->target = b + 1;
		off = 33;
	} else if (b[0] == 2) {
		/* u8 name_len, name, signer[32]: the SDK takes a NUL-terminated name, so copy it
		 * (up to 255 bytes, letting the SDK refuse what it cannot encode). */
		if (n < 2 || n < 2 + (uint32_t)b[1] + PAL_DIGEST_SIZE)
			return 0;
		memcpy(policy_name, b + 2, b[1]);
		policy_name[b[1]] = 0;
		p->name = policy_name;
		p->signer = b + 2 + b[1];
		off = 2 + (uint32_t)b[1] + PAL_DIGEST_SIZE;
	} else {
		off = 1;
	}
	if (n < off + 2)
		return 0;
	p->pcr_mask = b[off];
	p->use_current_pcrs = b[off + 1] == 1;
	off += 2;
	if (p->use_current_pcrs)
		return off;
	for (i = 0; i < PAL_NUM_PCRS; i++) {
		if (!(p->pcr_mask & (1u << i)))
			continue;
		if (n < off + PAL_DIGEST_SIZE)
			return 0;
		memcpy(p->pcr_values[i], b + off, PAL_DIGEST_SIZE);
		off += PAL_DIGEST_SIZE;
	}
	return off;
}

/* faults calls the raw hostcall with hostile arguments; the output is one byte per case,
 * the error code returned, 0 for a success with an empty response (0xff for any other
 * success). */
#define NFAULTS 12
#define OUTSIDE ((void *)(uintptr_t)0xfffffff0u) /* outside memory on every engine */

static int32_t faults(void)
{
	uint8_t codes[NFAULTS], req[36] = {0};
	int64_t rc[NFAULTS];
	int i;

	rc[0] = palisade_utpm(PAL_OP_LOG, (const void *)(uintptr_t)0xfffff000u, 0x1000, 0, 0);
	rc[1] = palisade_utpm(PAL_OP_PCR_READ, req, 4, OUTSIDE, 32);
	rc[2] = palisade_utpm(PAL_OP_LOG, buf, 0xffffffffu, 0, 0);
	rc[3] = palisade_utpm(PAL_OP_RANDOM, 0, 0, buf, 0x7fffffffu);
	rc[4] = palisade_utpm(99, 0, 0, 0, 0);
	rc[5] = palisade_utpm(PAL_OP_PCR_READ, req, 4, buf, 16);
	rc[6] = palisade_utpm(PAL_OP_EXTEND, req, 10, 0, 0);
	rc[7] = palisade_utpm(PAL_OP_RANDOM, 0, 0, buf, 64 * 1024 + 1);
	/* A length of 0 is an empty buffer whatever its pointer. */
	rc[8] = palisade_utpm(PAL_OP_LOG, OUTSIDE, 0, 0, 0);
	rc[9] = palisade_utpm(PAL_OP_RANDOM, 0, 0, OUTSIDE, 0);
	/* Sizes are checked before bounds: a buffer outside memory and the other too large. */
	rc[10] = palisade_utpm(PAL_OP_PCR_READ, OUTSIDE, 4, buf, 0x7fffffffu);
	rc[11] = palisade_utpm(PAL_OP_LOG, buf, 0xffffffffu, OUTSIDE, 32);
	for (i = 0; i < NFAULTS; i++)
		codes[i] = rc[i] < 0 && rc[i] > -255 ? (uint8_t)-rc[i] : rc[i] == 0 ? 0 : 0xff;
	return fail(pal_output(codes, sizeof codes));
}

/* output_too_large passes OUTPUT one byte more than any hostcall may carry and ignores the
 * E_TOOLARGE it gets: the call must fail all the same. */
static int32_t output_too_large(void)
{
	palisade_utpm(PAL_OP_OUTPUT, buf, 1024 * 1024 + 4096 + 1, 0, 0);
	return 0;
}

/* grow_to_cap grows the memory until the cap refuses, and goes on: the output is the memory
 * size in 64 KiB pages (wasm only; natively there is nothing to grow). */
static int32_t grow_to_cap(void)
{
#ifdef __wasm__
	while (__builtin_wasm_memory_grow(0, 1) != (size_t)-1)
		;
	put32(buf, (uint32_t)__builtin_wasm_memory_size(0));
	return fail(pal_output(buf, 4));
#else
	return UNKNOWN;
#endif
}

static int32_t exhaust_memory(void)
{
#ifdef __wasm__
	/* Grow as an allocator would, 1 MiB at a time, then page by page, until the cap refuses. */
	while (__builtin_wasm_memory_grow(0, 16) != (size_t)-1)
		;
	while (__builtin_wasm_memory_grow(0, 1) != (size_t)-1)
		;
	__builtin_trap();
#else
	/* No memory.grow natively: touch pages past the image until one is not mapped. */
	volatile uint8_t *p = buf + sizeof buf;
	for (;;) {
		*p = 1;
		p += 4096;
	}
#endif
	return 0;
}

int32_t pal_main(const uint8_t *in, uint32_t n)
{
	const uint8_t *a = in + 1;
	uint32_t an = n ? n - 1 : 0;
	pal_policy pol;
	uint32_t pl;
	uint64_t v;
	int32_t rc;

	if (n == 0)
		return BAD_ARGS;
	switch (in[0]) {
	case 'n': /* null call */
		return 0;
	case 'v': /* which variant */
		return fail(pal_output(PAL_VARIANT, (uint32_t)strlen(PAL_VARIANT)));
	case 'm': /* count calls in PAL memory */
		calls++;
		put64(buf, calls);
		return fail(pal_output(buf, 8));
	case 'e': /* u32 pcr, digest */
		if (an != 4 + PAL_DIGEST_SIZE)
			return BAD_ARGS;
		return fail(pal_extend(get32(a), a + 4));
	case 'r': /* u32 pcr */
		if (an != 4)
			return BAD_ARGS;
		if ((rc = pal_pcr_read(get32(a), buf)) < 0)
			return fail(rc);
		return fail(pal_output(buf, PAL_DIGEST_SIZE));
	case 's': /* policy, data */
		if (!(pl = parse_policy(a, an, &pol)))
			return BAD_ARGS;
		return out_len(pal_seal(&pol, a + pl, an - pl, buf, sizeof buf));
	case 'u': /* blob */
		if ((v = (uint64_t)pal_unseal(a, an, buf, buf + 32, sizeof buf - 32)) > sizeof buf)
			return fail((int64_t)v);
		return fail(pal_output(buf, 32 + (uint32_t)v));
	case 'q': /* mask, u32 nonce_len, nonce, user */
		if (an < 5 || get32(a + 1) > an - 5)
			return BAD_ARGS;
		return out_len(pal_quote(a + 5, get32(a + 1), a + 5 + get32(a + 1),
					 an - 5 - get32(a + 1), a[0], buf, sizeof buf));
	case 'R': /* u32 n */
		if (an != 4 || get32(a) > sizeof buf)
			return BAD_ARGS;
		if ((rc = pal_random(buf, get32(a))) < 0)
			return fail(rc);
		return fail(pal_output(buf, get32(a)));
	case 'i':
		return out_len(pal_identity_public(buf, sizeof buf));
	case 'k': { /* alg, policy */
		uint32_t pub_len = 0;
		int64_t bl;
		if (an < 1 || !(pl = parse_policy(a + 1, an - 1, &pol)) || pl != an - 1)
			return BAD_ARGS;
		bl = pal_key_create(a[0], &pol, buf + 4, 4096, &pub_len, buf + 4 + 4096,
				    sizeof buf - 4 - 4096);
		if (bl < 0)
			return fail(bl);
		put32(buf, pub_len);
		memmove(buf + 4 + pub_len, buf + 4 + 4096, (size_t)bl);
		return fail(pal_output(buf, 4 + pub_len + (uint32_t)bl));
	}
	case 'g': /* u16 scheme, u16 hash, u32 blob_len, blob, digest */
		if (an < 8 || get32(a + 4) > an - 8)
			return BAD_ARGS;
		return out_len(pal_key_sign(a + 8, get32(a + 4), get16(a), get16(a + 2),
					    a + 8 + get32(a + 4), an - 8 - get32(a + 4), buf,
					    sizeof buf));
	case 'c':
	case 'C': /* u32 id */
		if (an != 4)
			return BAD_ARGS;
		rc = in[0] == 'c' ? pal_counter_read(get32(a), &v) : pal_counter_increment(get32(a), &v);
		if (rc < 0)
			return fail(rc);
		put64(buf, v);
		return fail(pal_output(buf, 8));
	case 'l': /* text */
		if (an >= sizeof buf)
			return BAD_ARGS;
		memcpy(buf, a, an);
		buf[an] = 0;
		pal_log((const char *)buf);
		return 0;
	case 'h': /* data: SHA-256 in the SDK */
		pal_sha256(a, an, buf);
		return fail(pal_output(buf, PAL_DIGEST_SIZE));
	case 'O': /* u32 n: output n bytes */
		if (an != 4 || get32(a) > sizeof buf)
			return BAD_ARGS;
		for (v = 0; v < get32(a); v++)
			buf[v] = (uint8_t)v;
		return fail(pal_output(buf, get32(a)));
	case 'F':
		return faults();
	case 'E': /* echo the arguments */
		return fail(pal_output(a, an));
	case 'X':
		return output_too_large();
	case 'G':
		return grow_to_cap();
	case 'L': /* loop forever */
		for (;;)
			sink++;
	case 'A': /* allocate without bound */
		return exhaust_memory();
	case 'T': /* trap */
		__builtin_trap();
	}
	return UNKNOWN;
}
