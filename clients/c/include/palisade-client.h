/*
 * libpalisade: the C client of palisaded's lean protocol (docs/protocol.md).
 *
 * Call a PAL, find a named key, read its public part and certificates, sign with it, from a C
 * program, without a Go runtime in the process. Link with `pkg-config --libs libpalisade`.
 *
 * Conventions:
 *  - Every int-returning function returns 0 on success or a negative PALISADE_E_* code;
 *    palisade_strerror() names it, and palisade_last_message() gives the daemon's own message
 *    for the last error of the calling thread.
 *  - Handles are opaque. A palisade handle is thread-safe: threads share its connection, one
 *    request at a time (open one handle per thread for parallel requests).
 *  - Safe across fork(): a child's first request on an inherited handle opens a connection of
 *    its own (the daemon identifies callers by the connection's credentials, fixed at
 *    connect), and the child never takes a lock or touches a connection state of its parent.
 *  - A handle reconnects by itself after the daemon restarts. A request that was never sent
 *    is sent again once on the new connection; a request whose answer was lost fails with
 *    PALISADE_E_IO (the daemon may have done it) and is not retried.
 *  - No threads, no signal handlers: sends use MSG_NOSIGNAL, sockets are SOCK_CLOEXEC.
 */
#ifndef PALISADE_CLIENT_H
#define PALISADE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PALISADE_CLIENT_VERSION "0.3.0"
/* The lean protocol version this library speaks. */
#define PALISADE_PROTOCOL_VERSION 1
/* Where palisaded serves the lean protocol by default. */
#define PALISADE_DEFAULT_LEAN_SOCKET "/run/palisade/lean.sock"

/*
 * Error codes, returned negated. 1-99 are the daemon's (docs/protocol.md §5, same numbers);
 * 100 and up are the library's own.
 */
enum palisade_error {
	PALISADE_OK = 0,
	PALISADE_E_MALFORMED = 1,         /* the daemon could not decode the request */
	PALISADE_E_VERSION = 2,           /* the daemon speaks another protocol version */
	PALISADE_E_UNKNOWN_OP = 3,        /* the daemon does not know the operation */
	PALISADE_E_TOO_LARGE = 4,         /* a request larger than the protocol allows */
	PALISADE_E_BUSY = 5,              /* the daemon has too many connections */
	PALISADE_E_PERMISSION = 6,        /* the caller may not use this PAL or key */
	PALISADE_E_NOT_FOUND = 7,         /* no such PAL */
	PALISADE_E_TIMEOUT = 8,           /* the PAL call exceeded its timeout */
	PALISADE_E_TRAP = 9,              /* the PAL trapped */
	PALISADE_E_OUT_OF_MEMORY = 10,    /* the PAL exhausted its memory limit */
	PALISADE_E_INPUT_TOO_LARGE = 11,  /* the input exceeds the PAL's limit */
	PALISADE_E_OUTPUT_TOO_LARGE = 12, /* the output exceeded the PAL's limit */
	PALISADE_E_UNAVAILABLE = 13,      /* the daemon or the PAL is shutting down */
	PALISADE_E_CANCELED = 14,         /* the call was canceled (daemon shutdown) */
	PALISADE_E_INVALID = 15,          /* an invalid argument, as the daemon judged it */
	PALISADE_E_INTERNAL = 16,         /* an internal error of the daemon */
	PALISADE_E_KEY_NOT_FOUND = 17,    /* no such key */
	PALISADE_E_PIN_REQUIRED = 18,     /* the key needs a PIN */
	PALISADE_E_PIN_INCORRECT = 19,    /* incorrect PIN */
	PALISADE_E_LOCKED = 20,           /* the key is locked after too many incorrect PINs */
	PALISADE_E_REFUSED = 21,          /* the signing PAL refused */
	PALISADE_E_KEY_UNAVAILABLE = 22,  /* the key cannot be used (the message says why) */
	PALISADE_E_NO_KEYS = 23,          /* this daemon serves no keys */
	PALISADE_E_NOT_SUPPORTED = 24,    /* the PAL's engine does not support the operation */
	PALISADE_E_KEY_EXISTS = 25,       /* palisade_key_create: a key of that name exists */

	PALISADE_E_ARG = 100,              /* a bad argument (NULL, a malformed PAL handle, ...) */
	PALISADE_E_PATH = 101,             /* socket path empty or ≥ 108 bytes */
	PALISADE_E_CONNECT = 102,          /* cannot connect to the daemon */
	PALISADE_E_IO = 103,               /* connection lost during a request (it may have been done) */
	PALISADE_E_PROTOCOL = 104,         /* the daemon's answer does not decode */
	PALISADE_E_NOMEM = 105,            /* out of memory */
	PALISADE_E_BUFFER_TOO_SMALL = 106, /* *out_len was set to the size needed */
	PALISADE_E_NO_ANSWER = 107,        /* no answer within the handle's timeout (it may have been done) */
};

/* Signature schemes and hashes: the TPM 2.0 algorithm ids (as Go's client/signreq). */
#define PALISADE_SCHEME_RSASSA 0x0014 /* RSASSA-PKCS1-v1_5 */
#define PALISADE_SCHEME_RSAPSS 0x0016 /* RSA-PSS, salt length = hash length */
#define PALISADE_SCHEME_ECDSA 0x0018  /* signature is ASN.1 DER */
#define PALISADE_SCHEME_EDDSA 0x0060  /* pure Ed25519: "digest" is the message, hash NONE */
#define PALISADE_HASH_NONE 0x0000
#define PALISADE_HASH_SHA256 0x000B
#define PALISADE_HASH_SHA384 0x000C
#define PALISADE_HASH_SHA512 0x000D

/* Largest signature palisade_sign returns (RSA-3072 is 384 bytes, ECDSA P-256 DER ≤ 72). */
#define PALISADE_MAX_SIGNATURE 1024

typedef struct palisade palisade;
typedef struct palisade_key palisade_key;

/*
 * palisade_open connects to the daemon. socket_path NULL means: $PALISADE_LEAN_SOCKET; else
 * lean.sock in the directory of $PALISADE_SOCKET; else PALISADE_DEFAULT_LEAN_SOCKET (the
 * variables are read with secure_getenv, so a setuid program ignores them). Fails with
 * PALISADE_E_PATH for a path of 108 bytes or more, PALISADE_E_CONNECT if nothing serves it.
 */
int palisade_open(palisade **out, const char *socket_path);

/*
 * palisade_set_timeout bounds how long a request on p waits for palisaded, in milliseconds:
 * a request fails when the daemon takes none of it, or sends none of its answer, for that
 * long (each wait is bounded, so a daemon that trickles bytes could take longer, and a signal
 * that interrupts a wait starts that wait again); connecting is bounded too; 0 (the
 * default, unless $PALISADE_TIMEOUT_MS says otherwise at palisade_open) waits as long as it
 * takes. A request that runs out of time fails with PALISADE_E_NO_ANSWER and drops the
 * connection (a late answer is never taken for the next request's); the next request
 * reconnects. The daemon may still have done it. Set it above the timeouts of the PALs you
 * call: it is meant for a daemon that hangs, not for a PAL that runs long (the daemon's own
 * limits stop those and answer PALISADE_E_TIMEOUT). A server signing with a key (the PKCS#11
 * module) would rather fail one handshake than hang a worker.
 */
int palisade_set_timeout(palisade *p, unsigned ms);

/* palisade_close closes p's connection and frees it. NULL is allowed. */
void palisade_close(palisade *p);

/*
 * palisade_call runs the PAL handle ("pal-…", as palisade pal register prints it) with
 * input. On success *status is the PAL's status (0: success, chosen by the PAL) and the output
 * is copied to out, of capacity *out_len, and *out_len set to its length. If out is too small
 * (or NULL), *out_len is set to the length needed and PALISADE_E_BUFFER_TOO_SMALL returned:
 * the call was done, and its output is lost.
 */
int palisade_call(palisade *p, const char *handle, const void *input, size_t input_len,
		  int32_t *status, void *out, size_t *out_len);

/*
 * palisade_sign signs digest with the key called name. pin may be NULL (pin_len 0) for a key
 * without a PIN. The signature is copied to sig (capacity *sig_len; PALISADE_MAX_SIGNATURE
 * always suffices) and *sig_len set; a short buffer is PALISADE_E_BUFFER_TOO_SMALL, with
 * *sig_len set to the size needed.
 */
int palisade_sign(palisade *p, const char *name, uint16_t scheme, uint16_t hash,
		  const void *digest, size_t digest_len, const void *pin, size_t pin_len,
		  void *sig, size_t *sig_len);

/* palisade_key_find returns the key called name, if the caller may use it. */
int palisade_key_find(palisade *p, const char *name, palisade_key **out);
void palisade_key_free(palisade_key *k);

/*
 * palisade_key_create creates the key called name, of algorithm alg ("ecdsa-p256", "ed25519",
 * "rsa-2048" or "rsa-3072"), in the daemon's key-generation PAL, owned by the caller, without
 * a PIN and not shared (palisade key share/pin change that). The key service's rules apply:
 * a name of 1 to 128 bytes of [A-Za-z0-9._-] not starting with '.' or '-', and a known
 * algorithm, else PALISADE_E_INVALID
 * naming the rule; PALISADE_E_KEY_EXISTS if the name is taken; PALISADE_E_NO_KEYS,
 * PALISADE_E_UNKNOWN_OP from a daemon older than the operation. On success, if out is not
 * NULL, *out is the new key (as palisade_key_find returns it; free it with palisade_key_free).
 * PALISADE_E_IO means the key may exist: look it up before trying again.
 */
int palisade_key_create(palisade *p, const char *name, const char *alg, palisade_key **out);
/* Accessors: pointers stay valid until palisade_key_free. */
const char *palisade_key_name(const palisade_key *k);
const char *palisade_key_alg(const palisade_key *k); /* "ecdsa-p256", "ed25519", "rsa-2048", ... */
int palisade_key_has_pin(const palisade_key *k);
/* The public key, DER SubjectPublicKeyInfo. */
const uint8_t *palisade_key_public(const palisade_key *k, size_t *len);
size_t palisade_key_cert_count(const palisade_key *k);
/* Certificate i (DER, leaf first), or NULL if i is out of range. */
const uint8_t *palisade_key_cert(const palisade_key *k, size_t i, size_t *len);

/*
 * palisade_keys_find calls fn for each key the caller may use whose name starts with prefix
 * (NULL or "" for all), in name order. A non-zero return of fn stops the walk and is returned.
 */
int palisade_keys_find(palisade *p, const char *prefix,
		       int (*fn)(const char *name, const char *alg, void *arg), void *arg);

/* palisade_strerror names an error code (either sign). Never NULL. */
const char *palisade_strerror(int err);

/*
 * palisade_last_message is the detail of the last error of the calling thread: the daemon's
 * message, or the library's. "" if none. Valid until the thread's next call.
 */
const char *palisade_last_message(void);

#ifdef __cplusplus
}
#endif

#endif /* PALISADE_CLIENT_H */
