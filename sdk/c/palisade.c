/* palisade.c — the µTPM calls of palisade.h, built on the raw hostcall palisade_utpm.
 *
 * Requests follow docs/abi.md §3. No dynamic allocation: a request that has to be assembled
 * (seal, quote, key sign) and a response that has to be split (unseal, key create) go through
 * one static scratch buffer of PAL_SCRATCH_SIZE bytes (default 64 KiB; build with
 * -DPAL_SCRATCH_SIZE=... to change it). A call whose request or response does not fit returns
 * -PAL_E_TOOLARGE (request) or -PAL_E_SHORT (response). Not reentrant, like the PAL itself.
 */
#include "palisade.h"

#ifndef PAL_SCRATCH_SIZE
#define PAL_SCRATCH_SIZE (64 * 1024)
#endif

static uint8_t scratch[PAL_SCRATCH_SIZE] __attribute__((aligned(16)));

/* The longest policy encoding: kind, name length, name, signer, mask, source, eight PCR
 * values (a name under a signer is longer than a target measurement). */
#define POLICY_MAX (2 + PAL_MAX_NAME + PAL_DIGEST_SIZE + 2 + PAL_NUM_PCRS * PAL_DIGEST_SIZE)

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* encode_policy writes p (NULL: the caller itself, no PCRs) into b (POLICY_MAX bytes) and
 * returns its length, or -PAL_E_INVAL for a name that cannot be encoded (the visor checks
 * the rest of the name rule). */
static int32_t encode_policy(const pal_policy *p, uint8_t *b)
{
	int32_t n = 0;
	uint8_t mask = p ? p->pcr_mask : 0;
	size_t name_len;
	int i;

	if (p && p->name) {
		/* Bounded scan: never read past PAL_MAX_NAME + 1 bytes of a caller's buffer. */
		for (name_len = 0; name_len <= PAL_MAX_NAME && p->name[name_len]; name_len++)
			;
		if (name_len == 0 || name_len > PAL_MAX_NAME || !p->signer)
			return -PAL_E_INVAL;
		b[n++] = 2;
		b[n++] = (uint8_t)name_len;
		memcpy(b + n, p->name, name_len);
		n += (int32_t)name_len;
		memcpy(b + n, p->signer, PAL_DIGEST_SIZE);
		n += PAL_DIGEST_SIZE;
	} else if (p && p->target) {
		b[n++] = 1;
		memcpy(b + n, p->target, PAL_DIGEST_SIZE);
		n += PAL_DIGEST_SIZE;
	} else {
		b[n++] = 0;
	}
	b[n++] = mask;
	if (p && p->use_current_pcrs) {
		b[n++] = 1;
		return n;
	}
	b[n++] = 0;
	for (i = 0; i < PAL_NUM_PCRS; i++) {
		if (mask & (1u << i)) {
			memcpy(b + n, p->pcr_values[i], PAL_DIGEST_SIZE);
			n += PAL_DIGEST_SIZE;
		}
	}
	return n;
}

/* status turns a hostcall result into 0 or a negative error code. */
static int32_t status(int64_t rc)
{
	return rc < 0 ? (int32_t)rc : 0;
}

int32_t pal_output(const void *data, uint32_t len)
{
	return status(palisade_utpm(PAL_OP_OUTPUT, data, len, 0, 0));
}

int32_t pal_extend(uint32_t pcr, const uint8_t digest[PAL_DIGEST_SIZE])
{
	uint8_t req[4 + PAL_DIGEST_SIZE];

	put32(req, pcr);
	memcpy(req + 4, digest, PAL_DIGEST_SIZE);
	return status(palisade_utpm(PAL_OP_EXTEND, req, sizeof req, 0, 0));
}

int32_t pal_pcr_read(uint32_t pcr, uint8_t out[PAL_DIGEST_SIZE])
{
	uint8_t req[4];

	put32(req, pcr);
	return status(palisade_utpm(PAL_OP_PCR_READ, req, sizeof req, out, PAL_DIGEST_SIZE));
}

int64_t pal_seal(const pal_policy *p, const void *data, uint32_t len, uint8_t *out,
		 uint32_t out_cap)
{
	int32_t n;

	if (len > PAL_SCRATCH_SIZE - POLICY_MAX)
		return -PAL_E_TOOLARGE;
	n = encode_policy(p, scratch);
	if (n < 0)
		return n;
	memcpy(scratch + n, data, len);
	return palisade_utpm(PAL_OP_SEAL, scratch, (uint32_t)n + len, out, out_cap);
}

int64_t pal_unseal(const uint8_t *blob, uint32_t blob_len, uint8_t creator[PAL_DIGEST_SIZE],
		   uint8_t *out, uint32_t out_cap)
{
	uint32_t cap = out_cap > PAL_SCRATCH_SIZE - PAL_DIGEST_SIZE ? PAL_SCRATCH_SIZE
								   : out_cap + PAL_DIGEST_SIZE;
	int64_t rc = palisade_utpm(PAL_OP_UNSEAL, blob, blob_len, scratch, cap);

	if (rc < 0)
		return rc;
	if (rc < PAL_DIGEST_SIZE)
		return -PAL_E_INTERNAL;
	if (creator)
		memcpy(creator, scratch, PAL_DIGEST_SIZE);
	rc -= PAL_DIGEST_SIZE;
	memcpy(out, scratch + PAL_DIGEST_SIZE, (size_t)rc);
	return rc;
}

int64_t pal_quote(const uint8_t *nonce, uint32_t nonce_len, const uint8_t *user,
		  uint32_t user_len, uint8_t pcr_mask, uint8_t *out, uint32_t out_cap)
{
	if ((uint64_t)5 + nonce_len + user_len > PAL_SCRATCH_SIZE)
		return -PAL_E_TOOLARGE;
	scratch[0] = pcr_mask;
	put32(scratch + 1, nonce_len);
	memcpy(scratch + 5, nonce, nonce_len);
	memcpy(scratch + 5 + nonce_len, user, user_len);
	return palisade_utpm(PAL_OP_QUOTE, scratch, 5 + nonce_len + user_len, out, out_cap);
}

int32_t pal_random(void *out, uint32_t len)
{
	return status(palisade_utpm(PAL_OP_RANDOM, 0, 0, out, len));
}

int64_t pal_identity_public(uint8_t *out, uint32_t out_cap)
{
	return palisade_utpm(PAL_OP_IDENTITY_PUBLIC, 0, 0, out, out_cap);
}

int64_t pal_key_create(uint8_t alg, const pal_policy *p, uint8_t *pub, uint32_t pub_cap,
		       uint32_t *pub_len, uint8_t *blob, uint32_t blob_cap)
{
	uint8_t req[1 + POLICY_MAX];
	uint32_t pl, bl;
	int32_t n;
	int64_t rc;

	req[0] = alg;
	n = encode_policy(p, req + 1);
	if (n < 0)
		return n;
	rc = palisade_utpm(PAL_OP_KEY_CREATE, req, 1 + (uint32_t)n, scratch, PAL_SCRATCH_SIZE);
	if (rc < 0)
		return rc;
	if (rc < 4 || get32(scratch) > (uint64_t)rc - 4)
		return -PAL_E_INTERNAL;
	pl = get32(scratch);
	bl = (uint32_t)rc - 4 - pl;
	if (pl > pub_cap || bl > blob_cap)
		return -PAL_E_SHORT;
	memcpy(pub, scratch + 4, pl);
	memcpy(blob, scratch + 4 + pl, bl);
	if (pub_len)
		*pub_len = pl;
	return bl;
}

int64_t pal_key_sign(const uint8_t *blob, uint32_t blob_len, uint16_t scheme, uint16_t hash,
		     const uint8_t *digest, uint32_t digest_len, uint8_t *sig, uint32_t sig_cap)
{
	if ((uint64_t)8 + blob_len + digest_len > PAL_SCRATCH_SIZE)
		return -PAL_E_TOOLARGE;
	put16(scratch, scheme);
	put16(scratch + 2, hash);
	put32(scratch + 4, blob_len);
	memcpy(scratch + 8, blob, blob_len);
	memcpy(scratch + 8 + blob_len, digest, digest_len);
	return palisade_utpm(PAL_OP_KEY_SIGN, scratch, 8 + blob_len + digest_len, sig, sig_cap);
}

static int32_t counter(uint32_t op, uint32_t id, uint64_t *value)
{
	uint8_t req[4], resp[8];
	int64_t rc;

	put32(req, id);
	rc = palisade_utpm(op, req, sizeof req, resp, sizeof resp);
	if (rc < 0)
		return (int32_t)rc;
	if (rc != 8)
		return -PAL_E_INTERNAL;
	if (value)
		*value = get64(resp);
	return 0;
}

int32_t pal_counter_read(uint32_t id, uint64_t *value)
{
	return counter(PAL_OP_COUNTER_READ, id, value);
}

int32_t pal_counter_increment(uint32_t id, uint64_t *value)
{
	return counter(PAL_OP_COUNTER_INCREMENT, id, value);
}

void pal_log(const char *msg)
{
	palisade_utpm(PAL_OP_LOG, msg, (uint32_t)strlen(msg), 0, 0);
}
