/* keygen.c — palisaded's key-generation PAL (docs/keys.md §2), PAL1 of the paper's split.
 *
 * One command:
 *
 *   'K' ‖ u8 alg ‖ signer[32] ‖ nonce[32]
 *
 * creates a µTPM key object of algorithm alg bound to the signing PAL of measurement signer
 * (KEY_CREATE, policy target = signer): the private key never exists in this PAL's memory,
 * the daemon's or the application's, and only a PAL of measurement signer can sign with it.
 * It then quotes, with nonce, the user data (87 bytes)
 *
 *   "palisade key-create v1" ‖ u8 alg ‖ signer[32] ‖ SHA-256(public key DER)
 *
 * so that a verifier who trusts this PAL's measurement learns that this public key was made
 * here, for that signer (the creation half of key attestation).
 *
 * Output: u32 pub_len ‖ public key (DER SubjectPublicKeyInfo) ‖ u32 blob_len ‖ key blob ‖
 *         quote (COSE_Sign1).
 * The PAL keeps no state between calls.
 */
#include "keypal.h"

#define TAG "palisade key-create v1"
#define TAG_LEN (sizeof TAG - 1)

static uint8_t pub[2048];
static uint8_t blob[8192];
static uint8_t quote[8192];
static uint8_t out[4 + sizeof pub + 4 + sizeof blob + sizeof quote];

int32_t pal_main(const uint8_t *in, uint32_t in_len)
{
	struct rd r = { in, in_len, 0 };
	uint8_t user[TAG_LEN + 1 + 2 * PAL_DIGEST_SIZE], digest[PAL_DIGEST_SIZE];
	const uint8_t *signer, *nonce;
	uint32_t pub_len, off;
	int64_t blob_len, quote_len;
	pal_policy p;
	uint8_t alg;

	if (take8(&r) != 'K')
		return STATUS_BAD_REQUEST;
	alg = take8(&r);
	signer = take(&r, PAL_DIGEST_SIZE);
	nonce = take(&r, PAL_DIGEST_SIZE);
	if (r.bad || r.n != 0)
		return STATUS_BAD_REQUEST;

	memset(&p, 0, sizeof p);
	p.target = signer;
	blob_len = pal_key_create(alg, &p, pub, sizeof pub, &pub_len, blob, sizeof blob);
	if (blob_len < 0)
		return utpm_fail(blob_len);

	memcpy(user, TAG, TAG_LEN);
	user[TAG_LEN] = alg;
	memcpy(user + TAG_LEN + 1, signer, PAL_DIGEST_SIZE);
	pal_sha256(pub, pub_len, digest);
	memcpy(user + TAG_LEN + 1 + PAL_DIGEST_SIZE, digest, PAL_DIGEST_SIZE);
	quote_len = pal_quote(nonce, PAL_DIGEST_SIZE, user, sizeof user, 1, quote, sizeof quote);
	if (quote_len < 0)
		return utpm_fail(quote_len);

	off = 0;
	put32(out + off, pub_len), off += 4;
	memcpy(out + off, pub, pub_len), off += pub_len;
	put32(out + off, (uint32_t)blob_len), off += 4;
	memcpy(out + off, blob, (uint32_t)blob_len), off += (uint32_t)blob_len;
	memcpy(out + off, quote, (uint32_t)quote_len), off += (uint32_t)quote_len;
	return pal_output(out, off) < 0 ? STATUS_UTPM : STATUS_OK;
}
