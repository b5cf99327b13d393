/* palisade.h — the PAL-side SDK for C PALs (docs/abi.md).
 *
 * One source builds for both engines: wasm32 (clang --target=wasm32, engine "wasm") and
 * freestanding x86-64 (gcc, engine "kvm"). A PAL defines pal_main; the SDK provides the entry
 * stub of its target and the µTPM calls below.
 *
 * Every function returns 0 (or a length ≥ 0) on success and a negative ABI error code
 * (-PAL_E_*) on failure.
 */
#ifndef PALISADE_H
#define PALISADE_H

#include <stddef.h>
#include <stdint.h>

/* Defined by the PAL: handle one call. The return value is the call's status (0 = success). */
int32_t pal_main(const uint8_t *in, uint32_t in_len);

/* ABI error codes (docs/abi.md §4). */
enum {
	PAL_E_INVAL = 1, PAL_E_FAULT = 2, PAL_E_SHORT = 3, PAL_E_PCR = 4, PAL_E_TAMPERED = 5,
	PAL_E_FOREIGN = 6, PAL_E_WRONGPAL = 7, PAL_E_PCRMISMATCH = 8, PAL_E_WRONGTYPE = 9,
	PAL_E_UNSUPPORTED = 10, PAL_E_TOOLARGE = 11, PAL_E_INTERNAL = 12, PAL_E_MALFORMED = 13,
	PAL_E_NOTAUTHORIZED = 14, PAL_E_AUDIT = 15,
};

/* Ops (docs/abi.md §3). */
enum {
	PAL_OP_OUTPUT = 0, PAL_OP_EXTEND = 1, PAL_OP_PCR_READ = 2, PAL_OP_SEAL = 3,
	PAL_OP_UNSEAL = 4, PAL_OP_QUOTE = 5, PAL_OP_RANDOM = 6, PAL_OP_IDENTITY_PUBLIC = 7,
	PAL_OP_KEY_CREATE = 8, PAL_OP_KEY_SIGN = 9, PAL_OP_COUNTER_READ = 10,
	PAL_OP_COUNTER_INCREMENT = 11, PAL_OP_LOG = 12,
};

/* Key algorithms, signature schemes and hashes (TPM 2.0 algorithm IDs for the latter two). */
enum { PAL_KEY_ECDSA_P256 = 1, PAL_KEY_ED25519 = 2, PAL_KEY_RSA2048 = 3, PAL_KEY_RSA3072 = 4 };
enum { PAL_SCHEME_RSASSA = 0x0014, PAL_SCHEME_RSAPSS = 0x0016, PAL_SCHEME_ECDSA = 0x0018,
       PAL_SCHEME_EDDSA = 0x0060 };
enum { PAL_HASH_NONE = 0, PAL_HASH_SHA256 = 0x000B, PAL_HASH_SHA384 = 0x000C,
       PAL_HASH_SHA512 = 0x000D };

#define PAL_NUM_PCRS 8
#define PAL_DIGEST_SIZE 32
#define PAL_MAX_NAME 128

/* Who may unseal: target NULL = the caller itself; pcr_mask bit i binds PCR i to
 * pcr_values[i] (or, with use_current_pcrs, to the caller's current value).
 *
 * name (NUL-terminated) seals to "a name under a signer" instead (docs/abi.md §3): any PAL
 * that the trusted configuration active under signer (32-byte administrator key id) lists
 * under name may use the blob, decided at every use; target is then ignored. name is 1..128
 * bytes of [A-Za-z0-9._-] not starting with '.', '_' or '-'. An empty or longer name, or a
 * NULL signer, makes pal_seal and pal_key_create return -PAL_E_INVAL. The two fields are last
 * so that older initialisers that stop before them leave them NULL. */
typedef struct {
	const uint8_t *target; /* 32-byte measurement or NULL */
	uint8_t pcr_mask;
	int use_current_pcrs;
	uint8_t pcr_values[PAL_NUM_PCRS][PAL_DIGEST_SIZE];
	const char *name;      /* NULL: not sealed to a name */
	const uint8_t *signer; /* 32 bytes, with name */
} pal_policy;

/* The raw hostcall (docs/abi.md §2), implemented per target. */
int64_t palisade_utpm(uint32_t op, const void *req, uint32_t req_len, void *resp,
		      uint32_t resp_cap);

/* Set this call's output (replaces any earlier output of the same call). */
int32_t pal_output(const void *data, uint32_t len);
int32_t pal_extend(uint32_t pcr, const uint8_t digest[PAL_DIGEST_SIZE]);
int32_t pal_pcr_read(uint32_t pcr, uint8_t out[PAL_DIGEST_SIZE]);
/* Seal/unseal/quote/key calls write into out (capacity out_cap) and return the length. */
int64_t pal_seal(const pal_policy *p, const void *data, uint32_t len, uint8_t *out,
		 uint32_t out_cap);
/* Unseal: out receives the data; creator (may be NULL) receives the sealer's measurement. */
int64_t pal_unseal(const uint8_t *blob, uint32_t blob_len, uint8_t creator[PAL_DIGEST_SIZE],
		   uint8_t *out, uint32_t out_cap);
int64_t pal_quote(const uint8_t *nonce, uint32_t nonce_len, const uint8_t *user,
		  uint32_t user_len, uint8_t pcr_mask, uint8_t *out, uint32_t out_cap);
int32_t pal_random(void *out, uint32_t len);
int64_t pal_identity_public(uint8_t *out, uint32_t out_cap);
/* Key objects: the private key never enters PAL memory. */
int64_t pal_key_create(uint8_t alg, const pal_policy *p, uint8_t *pub, uint32_t pub_cap,
		       uint32_t *pub_len, uint8_t *blob, uint32_t blob_cap);
int64_t pal_key_sign(const uint8_t *blob, uint32_t blob_len, uint16_t scheme, uint16_t hash,
		     const uint8_t *digest, uint32_t digest_len, uint8_t *sig, uint32_t sig_cap);
int32_t pal_counter_read(uint32_t id, uint64_t *value);
int32_t pal_counter_increment(uint32_t id, uint64_t *value);
void pal_log(const char *msg);

/* The few libc functions a freestanding PAL needs (sdk/c/libc.c). */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* SHA-256 in the SDK (sdk/c/sha256.c), for PALs that hash before extending. */
void pal_sha256(const void *data, size_t len, uint8_t out[PAL_DIGEST_SIZE]);

#endif
