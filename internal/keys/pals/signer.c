/* signer.c — palisaded's default signing PAL (docs/keys.md §3), PAL2 of the paper's split.
 *
 * The keys the key-generation PAL makes are bound to this PAL's measurement: the µTPM signs
 * with one only when this PAL asks. The PAL is stateless: the daemon passes the key blob (and
 * the key's PIN state) with every request, so one registration serves every key.
 *
 * Commands (integers little-endian):
 *
 *   'S' ‖ u16 scheme ‖ u16 hash ‖ u32 blob_len ‖ blob ‖ u32 state_len ‖ state ‖
 *       u8 pin_len ‖ pin ‖ digest
 *     Sign digest (the rest of the input). With a PIN state, the PIN is checked first.
 *     Output: u32 sig_len ‖ signature ‖ new PIN state (empty unless the state changed).
 *
 *   'P' ‖ u32 blob_len ‖ blob ‖ u32 state_len ‖ state ‖ u8 pin_len ‖ pin ‖
 *       u8 max_tries ‖ u8 new_len ‖ new_pin
 *     Set, change (the old PIN is checked as for 'S') or, with new_len 0, remove the PIN.
 *     Output: the new PIN state (empty: no PIN).
 *
 *   'A' ‖ u16 scheme ‖ u16 hash ‖ u32 blob_len ‖ blob ‖ nonce (1..64 bytes)
 *     Key attestation, the use half: sign c = SHA-256("palisade key-attest v1" ‖ nonce) with
 *     the key (hash SHA-256, or none for Ed25519, which signs c itself), then quote with nonce
 *     and user data SHA-256("palisade key-attest v1" ‖ signature). A verifier who checks the
 *     signature with the key's public key learns that this PAL could use the key.
 *     Output: u32 sig_len ‖ signature ‖ quote.
 *
 * PIN state: this PAL seals for itself
 *
 *   "PPS1" ‖ SHA-256(blob)[32] ‖ u32 counter ‖ u64 base ‖ u8 max_tries ‖ salt[16] ‖
 *   SHA-256(salt ‖ PIN)[32]
 *
 * and accepts only states whose creator is itself (PCR0 = SHA-256(0³² ‖ creator)) and whose
 * key hash matches the blob. Failures are counted in µTPM monotonic counter `counter` (random,
 * chosen here): failures = counter − base. An incorrect PIN increments it; a correct one after
 * failures re-seals the state with base = the counter's value. The counter outlives the
 * daemon's state and only goes up, so restoring an older state counts more failures, never
 * fewer. At max_tries failures the key is locked.
 */
#include "keypal.h"

/* A signing PAL of your own, with a policy on what may be signed, can reuse this file: define
 * SIGN_POLICY(scheme, hash, digest, len) as an expression that is non-zero to sign, then
 * #include "signer.c" (docs/keys.md §3). A refused request gets STATUS_REFUSED, before the PIN
 * is checked, so a refusal costs no PIN try. */
#ifndef SIGN_POLICY
#define SIGN_POLICY(scheme, hash, digest, len) 1
#endif

#define ATTEST_TAG "palisade key-attest v1"
#define ATTEST_TAG_LEN (sizeof ATTEST_TAG - 1)
#define STATE_MAGIC "PPS1"
#define STATE_LEN (4 + 32 + 4 + 8 + 1 + 16 + 32)
#define MAX_PIN 64

static uint8_t sig[1024];
static uint8_t quote[8192];
static uint8_t sealed[1024];
static uint8_t out[4 + sizeof sig + sizeof quote];

struct pin_state {
	uint8_t key[PAL_DIGEST_SIZE];
	uint32_t counter;
	uint64_t base;
	uint8_t max_tries;
	uint8_t salt[16];
	uint8_t hash[PAL_DIGEST_SIZE];
};

static void pin_hash(const uint8_t salt[16], const uint8_t *pin, uint32_t len,
		     uint8_t out_hash[PAL_DIGEST_SIZE])
{
	uint8_t b[16 + MAX_PIN];

	memcpy(b, salt, 16);
	memcpy(b + 16, pin, len);
	pal_sha256(b, 16 + len, out_hash);
	memset(b, 0, sizeof b);
}

/* seal_state seals s for this PAL into sealed; it returns the length or a negative ABI code. */
static int64_t seal_state(const struct pin_state *s)
{
	uint8_t b[STATE_LEN];
	int64_t rc;

	memcpy(b, STATE_MAGIC, 4);
	memcpy(b + 4, s->key, 32);
	put32(b + 36, s->counter);
	put64(b + 40, s->base);
	b[48] = s->max_tries;
	memcpy(b + 49, s->salt, 16);
	memcpy(b + 65, s->hash, 32);
	rc = pal_seal(0, b, sizeof b, sealed, sizeof sealed);
	memset(b, 0, sizeof b);
	return rc;
}

/* open_state unseals a PIN state, checks that this PAL made it for the key whose blob hashes
 * to key, and decodes it. It returns a status. */
static int32_t open_state(const uint8_t *st, uint32_t len, const uint8_t key[32],
			  struct pin_state *s)
{
	uint8_t b[STATE_LEN + 16], creator[32], ext[64], pcr0[32], want[32];
	int64_t rc;

	rc = pal_unseal(st, len, creator, b, sizeof b);
	if (rc < 0)
		return STATUS_BAD_PIN_STATE;
	memset(ext, 0, 32);
	memcpy(ext + 32, creator, 32);
	pal_sha256(ext, sizeof ext, want);
	if (pal_pcr_read(0, pcr0) < 0 || memcmp(pcr0, want, 32) != 0 || rc != STATE_LEN ||
	    memcmp(b, STATE_MAGIC, 4) != 0 || memcmp(b + 4, key, 32) != 0)
		return STATUS_BAD_PIN_STATE;
	memcpy(s->key, b + 4, 32);
	s->counter = get32(b + 36);
	s->base = get64(b + 40);
	s->max_tries = b[48];
	memcpy(s->salt, b + 49, 16);
	memcpy(s->hash, b + 65, 32);
	memset(b, 0, sizeof b);
	return STATUS_OK;
}

/* check_pin checks pin against the state st of the key whose blob hashes to key. On success
 * *renewed is the length of a new state in sealed (0: unchanged). */
static int32_t check_pin(const uint8_t *st, uint32_t st_len, const uint8_t key[32],
			 const uint8_t *pin, uint32_t pin_len, uint32_t *renewed)
{
	struct pin_state s;
	uint8_t h[32], diff = 0, msg[8];
	uint64_t now, fails;
	int64_t rc;
	int32_t status;
	int i;

	*renewed = 0;
	status = open_state(st, st_len, key, &s);
	if (status != STATUS_OK)
		return status;
	if (pal_counter_read(s.counter, &now) < 0 || now < s.base)
		return STATUS_BAD_PIN_STATE;
	fails = now - s.base;
	if (fails >= s.max_tries) {
		put64(msg, fails);
		pal_output(msg, 8);
		return STATUS_LOCKED;
	}
	if (pin_len == 0)
		return STATUS_PIN_REQUIRED;
	pin_hash(s.salt, pin, pin_len, h);
	for (i = 0; i < 32; i++)
		diff |= h[i] ^ s.hash[i];
	if (diff != 0) {
		if (pal_counter_increment(s.counter, &now) < 0)
			return STATUS_BAD_PIN_STATE;
		/* Output: tries left. */
		put64(msg, now - s.base >= s.max_tries ? 0 : s.max_tries - (now - s.base));
		pal_output(msg, 8);
		return STATUS_PIN_INCORRECT;
	}
	if (fails > 0) {
		s.base = now;
		rc = seal_state(&s);
		if (rc < 0)
			return utpm_fail(rc);
		*renewed = (uint32_t)rc;
	}
	return STATUS_OK;
}

static int32_t cmd_sign(struct rd *r)
{
	const uint8_t *blob, *st, *pin;
	uint32_t blob_len, st_len, pin_len, renewed = 0, off;
	uint16_t scheme, hash;
	uint8_t key[32];
	int64_t n;
	int32_t status;

	scheme = take16(r);
	hash = take16(r);
	blob_len = take32(r);
	blob = take(r, blob_len);
	st_len = take32(r);
	st = take(r, st_len);
	pin_len = take8(r);
	pin = take(r, pin_len);
	if (r->bad || blob_len == 0 || pin_len > MAX_PIN)
		return STATUS_BAD_REQUEST;
	if (!(SIGN_POLICY(scheme, hash, r->p, r->n))) {
		pal_output("refused by the signing PAL's policy", 35);
		return STATUS_REFUSED;
	}
	if (st_len > 0) {
		pal_sha256(blob, blob_len, key);
		status = check_pin(st, st_len, key, pin, pin_len, &renewed);
		if (status != STATUS_OK)
			return status;
	}
	n = pal_key_sign(blob, blob_len, scheme, hash, r->p, r->n, sig, sizeof sig);
	if (n < 0)
		return utpm_fail(n);
	off = 0;
	put32(out, (uint32_t)n), off += 4;
	memcpy(out + off, sig, (uint32_t)n), off += (uint32_t)n;
	memcpy(out + off, sealed, renewed), off += renewed;
	return pal_output(out, off) < 0 ? STATUS_UTPM : STATUS_OK;
}

static int32_t cmd_pin(struct rd *r)
{
	const uint8_t *blob, *st, *pin, *npin;
	uint32_t blob_len, st_len, pin_len, npin_len, renewed;
	struct pin_state s;
	uint8_t max_tries;
	int64_t rc;
	int32_t status;

	blob_len = take32(r);
	blob = take(r, blob_len);
	st_len = take32(r);
	st = take(r, st_len);
	pin_len = take8(r);
	pin = take(r, pin_len);
	max_tries = take8(r);
	npin_len = take8(r);
	npin = take(r, npin_len);
	if (r->bad || r->n != 0 || blob_len == 0 || pin_len > MAX_PIN || npin_len > MAX_PIN ||
	    max_tries == 0)
		return STATUS_BAD_REQUEST;
	memset(&s, 0, sizeof s);
	pal_sha256(blob, blob_len, s.key);
	if (st_len > 0) {
		status = check_pin(st, st_len, s.key, pin, pin_len, &renewed);
		if (status != STATUS_OK)
			return status;
	}
	if (npin_len == 0)
		return pal_output(0, 0) < 0 ? STATUS_UTPM : STATUS_OK;
	/* A fresh counter for every PIN, so that no earlier state shares its failures. */
	if (pal_random(&s.counter, sizeof s.counter) < 0 || pal_random(s.salt, sizeof s.salt) < 0)
		return STATUS_UTPM;
	if (pal_counter_read(s.counter, &s.base) < 0)
		return STATUS_UTPM;
	s.max_tries = max_tries;
	pin_hash(s.salt, npin, npin_len, s.hash);
	rc = seal_state(&s);
	memset(&s, 0, sizeof s);
	if (rc < 0)
		return utpm_fail(rc);
	return pal_output(sealed, (uint32_t)rc) < 0 ? STATUS_UTPM : STATUS_OK;
}

static int32_t cmd_attest(struct rd *r)
{
	uint8_t b[ATTEST_TAG_LEN + 64 + sizeof sig], c[32], user[32];
	const uint8_t *blob;
	uint32_t blob_len, off;
	uint16_t scheme, hash;
	int64_t n, q;

	scheme = take16(r);
	hash = take16(r);
	blob_len = take32(r);
	blob = take(r, blob_len);
	if (r->bad || blob_len == 0 || r->n == 0 || r->n > 64)
		return STATUS_BAD_REQUEST;
	if (hash != PAL_HASH_SHA256 && !(hash == PAL_HASH_NONE && scheme == PAL_SCHEME_EDDSA))
		return STATUS_BAD_REQUEST;
	memcpy(b, ATTEST_TAG, ATTEST_TAG_LEN);
	memcpy(b + ATTEST_TAG_LEN, r->p, r->n);
	pal_sha256(b, ATTEST_TAG_LEN + r->n, c);
	n = pal_key_sign(blob, blob_len, scheme, hash, c, sizeof c, sig, sizeof sig);
	if (n < 0)
		return utpm_fail(n);
	memcpy(b + ATTEST_TAG_LEN, sig, (uint32_t)n);
	pal_sha256(b, ATTEST_TAG_LEN + (uint32_t)n, user);
	q = pal_quote(r->p, r->n, user, sizeof user, 1, quote, sizeof quote);
	if (q < 0)
		return utpm_fail(q);
	off = 0;
	put32(out, (uint32_t)n), off += 4;
	memcpy(out + off, sig, (uint32_t)n), off += (uint32_t)n;
	memcpy(out + off, quote, (uint32_t)q), off += (uint32_t)q;
	return pal_output(out, off) < 0 ? STATUS_UTPM : STATUS_OK;
}

int32_t pal_main(const uint8_t *in, uint32_t in_len)
{
	struct rd r = { in, in_len, 0 };

	switch (take8(&r)) {
	case 'S':
		return cmd_sign(&r);
	case 'P':
		return cmd_pin(&r);
	case 'A':
		return cmd_attest(&r);
	}
	return STATUS_BAD_REQUEST;
}
