/*
 * libpalisade-pkcs11: a PKCS#11 v2.40 module on libpalisade (docs/pkcs11.md).
 *
 * One slot holds one token: the keys of palisaded that the calling uid may use. Each key
 * shows as a private key object, a public key object and, if the key has a certificate, a
 * certificate object, all with CKA_LABEL and CKA_ID = the key's name. C_Sign sends the
 * digest to palisaded (the private key never enters this process); hash-and-sign
 * mechanisms hash here first.
 *
 * Inside someone else's process (OpenSSL, Apache, nginx):
 *  - Locking: always our own pthread mutexes (CKF_OS_LOCKING_OK), whatever C_Initialize is
 *    given; libp11 re-initialises a forked child with NULL arguments.
 *  - Fork: a pthread_atfork child handler only increments fork_id. In a child, every call
 *    answers CKR_CRYPTOKI_NOT_INITIALIZED until the child's own C_Initialize, which drops the
 *    parent's state without taking its locks (p11-kit's approach). libpalisade reconnects
 *    by itself in the child, so the daemon sees the child's uid.
 *  - No threads, no signal handlers; only C_GetFunctionList is exported (pkcs11.map).
 *  - Each session has its own daemon connection, so a threaded server signs in parallel.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "palisade-client.h"
#include "der.h"
#include "sha2.h"

#define EXPORT __attribute__((visibility("default")))

#define SLOT_ID 1
#ifndef MAX_KEYS
#define MAX_KEYS 256 /* keys one token shows; -DMAX_KEYS=2 checks index reuse by hand */
#endif
_Static_assert(MAX_KEYS <= 0x1ff, "object handles keep 9 bits for the key index");
#define MAX_SESSIONS 1024
#define MAX_RAW 4096 /* the protocol's digest limit: EdDSA messages and raw inputs */
#define MAX_PIN 64 /* the key service's limit (docs/keys.md §7): C_Login refuses a longer PIN */

/* Object handles: generation << 11 | (key index + 1) << 2 | kind (MAX_KEYS ≤ 511). An index
 * is given to another key only once its key is gone (deleted, or deleted and created again
 * under its name), with the next generation, so a handle never names two keys. */
enum obj_kind { OBJ_PRIVATE = 1, OBJ_PUBLIC = 2, OBJ_CERT = 3 };
#define OBJ_HANDLE(idx, kind) ((CK_OBJECT_HANDLE)g.gen[idx] << 11 | (CK_OBJECT_HANDLE)((idx) + 1) << 2 | (kind))

struct key {
	char name[257];
	char alg[33];
	int has_pin;
	uint8_t *pub;
	size_t pub_len;
	struct spki spki; /* points into pub */
	uint8_t *cert;
	size_t cert_len;
	struct cert_parts cp; /* points into cert */
	int listed;           /* in the daemon's last answer */
};

struct session {
	CK_FLAGS flags;
	palisade *p; /* this session's connection, opened at its first signature */
	int busy;    /* a signature is on the wire */
	/* C_FindObjects */
	int finding;
	CK_OBJECT_HANDLE *found;
	size_t nfound, pos;
	/* C_Sign* */
	int signing, multi;
	CK_MECHANISM_TYPE mech;
	size_t key;
	unsigned long key_gen; /* g.gen[key] at C_SignInit */
	int hash_bits; /* hash-and-sign: the hash computed here (256, 384, 512) */
	int pss_bits;  /* RSA-PSS: the hash its parameters name */
	struct sha2 sha;
	uint8_t buf[MAX_RAW];
	size_t buf_len;
};

/* Incremented by the pthread_atfork child handler and nothing else. */
static volatile unsigned long fork_id;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static struct {
	pthread_mutex_t mu; /* guards everything below */
	int initialized;
	unsigned long fork_id; /* fork_id at C_Initialize */
	struct key *keys[MAX_KEYS];
	unsigned long gen[MAX_KEYS]; /* generation of each index: see OBJ_HANDLE */
	size_t nkeys;
	struct session *sessions[MAX_SESSIONS];
	size_t nsessions;
	int logged_in;
	uint8_t pin[MAX_PIN];
	size_t pin_len;
	palisade *p; /* for listing keys; guarded by list_mu, not mu */
	pthread_mutex_t list_mu;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .list_mu = PTHREAD_MUTEX_INITIALIZER};

static char log_path[512];
/* $PALISADE_PKCS11_KEYS: the token shows only the keys whose names start with it. */
static char key_prefix[257];

static void on_fork_child(void)
{
	fork_id++;
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, on_fork_child);
}

/* trace appends a line to $PALISADE_PKCS11_LOG (read at C_Initialize), if set. */
__attribute__((format(printf, 1, 2))) static void trace(const char *fmt, ...)
{
	FILE *f;
	va_list ap;

	if (!log_path[0])
		return;
	f = fopen(log_path, "ae");
	if (!f)
		return;
	fprintf(f, "[%d] ", (int)getpid());
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

static void key_free(struct key *k)
{
	if (!k)
		return;
	free(k->pub);
	free(k->cert);
	free(k);
}

static void session_free(struct session *s)
{
	if (!s)
		return;
	palisade_close(s->p);
	free(s->found);
	explicit_bzero(s, sizeof(*s));
	free(s);
}

/* live is true when the library is initialised in this process (not a forked child's copy). */
static int live(void)
{
	return g.initialized && g.fork_id == fork_id;
}

/* LOCK_LIVE takes g.mu and returns CKR_CRYPTOKI_NOT_INITIALIZED if the library is not live. */
#define LOCK_LIVE()                                         \
	do {                                                \
		if (!live())                                \
			return CKR_CRYPTOKI_NOT_INITIALIZED; \
		pthread_mutex_lock(&g.mu);                  \
		if (!live()) {                              \
			pthread_mutex_unlock(&g.mu);        \
			return CKR_CRYPTOKI_NOT_INITIALIZED; \
		}                                           \
	} while (0)

static struct session *session_get(CK_SESSION_HANDLE h)
{
	if (h == 0 || h > MAX_SESSIONS)
		return NULL;
	return g.sessions[h - 1];
}

static void pad(unsigned char *dst, size_t n, const char *s)
{
	size_t l = strlen(s);

	memset(dst, ' ', n);
	memcpy(dst, s, l < n ? l : n);
}

static CK_RV rv_of(int err)
{
	switch (-err) {
	case PALISADE_E_PIN_REQUIRED:
		return CKR_USER_NOT_LOGGED_IN;
	case PALISADE_E_PIN_INCORRECT:
		return CKR_PIN_INCORRECT;
	case PALISADE_E_LOCKED:
		return CKR_PIN_LOCKED;
	case PALISADE_E_KEY_NOT_FOUND:
	case PALISADE_E_PERMISSION:
		return CKR_KEY_HANDLE_INVALID;
	case PALISADE_E_INVALID:
		return CKR_DATA_LEN_RANGE;
	case PALISADE_E_REFUSED:
		return CKR_FUNCTION_REJECTED; /* the key's signing PAL's policy (docs/keys.md §3) */
	case PALISADE_E_NOMEM:
		return CKR_HOST_MEMORY;
	case PALISADE_E_CONNECT:
	case PALISADE_E_IO:
	case PALISADE_E_UNAVAILABLE:
	case PALISADE_E_KEY_UNAVAILABLE:
	case PALISADE_E_PROTOCOL:
	case PALISADE_E_NO_ANSWER:
		return CKR_DEVICE_ERROR;
	default:
		return CKR_FUNCTION_FAILED;
	}
}

/* A daemon that hangs must cost a web server one failed handshake, not a worker stuck for
 * good: the module's handles give up after this long unless $PALISADE_TIMEOUT_MS (read by
 * libpalisade) says otherwise. A signature takes milliseconds; 30 s also covers a
 * palisaded restart (the client reconnects on its own). */
#define MODULE_TIMEOUT_MS 30000

static int open_handle(palisade **p)
{
	int r = palisade_open(p, NULL);
	const char *env = secure_getenv("PALISADE_TIMEOUT_MS");

	if (r == 0 && !(env && *env))
		palisade_set_timeout(*p, MODULE_TIMEOUT_MS);
	return r;
}

/* ---- library ---- */

CK_RV C_Initialize(CK_VOID_PTR init_args)
{
	CK_C_INITIALIZE_ARGS *a = init_args;
	const char *lp;
	size_t i;

	if (a) {
		int n = !!a->CreateMutex + !!a->DestroyMutex + !!a->LockMutex + !!a->UnlockMutex;

		if (n != 0 && n != 4)
			return CKR_ARGUMENTS_BAD;
		if (a->pReserved)
			return CKR_ARGUMENTS_BAD;
		/* With or without CKF_OS_LOCKING_OK, we lock with pthreads (callbacks are only
		 * a means for the application to say how; ours are always fine here). */
	}
	pthread_once(&atfork_once, register_atfork);
	if (g.initialized && g.fork_id != fork_id) {
		/*
		 * A forked child's first C_Initialize. The parent's locks may have been held by
		 * threads that do not exist here: make new ones. Its connections are closed
		 * (palisade_close closes an inherited descriptor without shutdown(2)).
		 */
		pthread_mutex_init(&g.mu, NULL);
		pthread_mutex_init(&g.list_mu, NULL);
		for (i = 0; i < MAX_SESSIONS; i++) {
			session_free(g.sessions[i]);
			g.sessions[i] = NULL;
		}
		for (i = 0; i < g.nkeys; i++)
			key_free(g.keys[i]);
		g.nkeys = 0;
		g.nsessions = 0;
		palisade_close(g.p);
		g.p = NULL;
		explicit_bzero(g.pin, sizeof(g.pin));
		g.pin_len = 0;
		g.logged_in = 0;
		g.initialized = 0;
	}
	pthread_mutex_lock(&g.mu);
	if (g.initialized) {
		pthread_mutex_unlock(&g.mu);
		return CKR_CRYPTOKI_ALREADY_INITIALIZED;
	}
	lp = secure_getenv("PALISADE_PKCS11_LOG");
	if (lp && strlen(lp) < sizeof(log_path))
		strcpy(log_path, lp);
	lp = secure_getenv("PALISADE_PKCS11_KEYS");
	if (lp && strlen(lp) < sizeof(key_prefix))
		strcpy(key_prefix, lp);
	g.initialized = 1;
	g.fork_id = fork_id;
	pthread_mutex_unlock(&g.mu);
	trace("C_Initialize(%s)", a ? (a->flags & CKF_OS_LOCKING_OK ? "CKF_OS_LOCKING_OK" : "args") : "NULL");
	return CKR_OK;
}

CK_RV C_Finalize(CK_VOID_PTR reserved)
{
	size_t i;

	if (reserved)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	for (i = 0; i < MAX_SESSIONS; i++) {
		session_free(g.sessions[i]);
		g.sessions[i] = NULL;
	}
	g.nsessions = 0;
	for (i = 0; i < g.nkeys; i++)
		key_free(g.keys[i]);
	g.nkeys = 0;
	explicit_bzero(g.pin, sizeof(g.pin));
	g.pin_len = 0;
	g.logged_in = 0;
	g.initialized = 0;
	pthread_mutex_unlock(&g.mu);
	pthread_mutex_lock(&g.list_mu);
	palisade_close(g.p);
	g.p = NULL;
	pthread_mutex_unlock(&g.list_mu);
	return CKR_OK;
}

CK_RV C_GetInfo(CK_INFO_PTR info)
{
	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	memset(info, 0, sizeof(*info));
	info->cryptokiVersion.major = 2;
	info->cryptokiVersion.minor = 40;
	pad(info->manufacturerID, sizeof(info->manufacturerID), "Palisade");
	pad(info->libraryDescription, sizeof(info->libraryDescription), "Palisade keys (libpalisade)");
	info->libraryVersion.major = 0;
	info->libraryVersion.minor = 1;
	return CKR_OK;
}

CK_RV C_GetSlotList(CK_BBOOL token_present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
	(void)token_present;
	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (!count)
		return CKR_ARGUMENTS_BAD;
	if (list && *count < 1) {
		*count = 1;
		return CKR_BUFFER_TOO_SMALL;
	}
	if (list)
		list[0] = SLOT_ID;
	*count = 1;
	return CKR_OK;
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	memset(info, 0, sizeof(*info));
	pad(info->slotDescription, sizeof(info->slotDescription), "palisaded (lean protocol)");
	pad(info->manufacturerID, sizeof(info->manufacturerID), "Palisade");
	info->flags = CKF_TOKEN_PRESENT;
	return CKR_OK;
}

/* refresh_keys asks the daemon for the caller's keys and updates g.keys: a key (a name and
 * its public key) keeps its index (so its object handles) for the life of the library, and
 * each key listed takes one of MAX_KEYS indexes. Called without g.mu. */
static CK_RV refresh_keys(void);

CK_RV C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	size_t i;
	int pin = 0;

	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	refresh_keys(); /* best effort: only the login flag depends on it */
	memset(info, 0, sizeof(*info));
	pad(info->label, sizeof(info->label), "palisade");
	pad(info->manufacturerID, sizeof(info->manufacturerID), "Palisade");
	pad(info->model, sizeof(info->model), "palisaded");
	pad(info->serialNumber, sizeof(info->serialNumber), "0000000000000001");
	LOCK_LIVE();
	for (i = 0; i < g.nkeys; i++)
		pin |= g.keys[i]->listed && g.keys[i]->has_pin;
	info->ulSessionCount = g.nsessions;
	info->ulRwSessionCount = 0;
	pthread_mutex_unlock(&g.mu);
	/* Login is required only if some key has a PIN: C_Login then carries it. */
	info->flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | (pin ? CKF_LOGIN_REQUIRED : 0);
	info->ulMaxSessionCount = MAX_SESSIONS;
	info->ulMaxRwSessionCount = MAX_SESSIONS;
	info->ulMaxPinLen = MAX_PIN;
	info->ulMinPinLen = 0;
	info->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	info->hardwareVersion.major = 0;
	info->firmwareVersion.major = 0;
	pad((unsigned char *)info->utcTime, sizeof(info->utcTime), "");
	return CKR_OK;
}

/* ---- mechanisms ---- */

struct mech {
	CK_MECHANISM_TYPE type;
	enum key_kind kind;
	uint16_t scheme;
	int hash_bits; /* hashed here; 0: the input is the digest (or, EdDSA, the message) */
};

static const struct mech mechs[] = {
	{CKM_RSA_PKCS, KIND_RSA, PALISADE_SCHEME_RSASSA, 0},
	{CKM_SHA256_RSA_PKCS, KIND_RSA, PALISADE_SCHEME_RSASSA, 256},
	{CKM_SHA384_RSA_PKCS, KIND_RSA, PALISADE_SCHEME_RSASSA, 384},
	{CKM_SHA512_RSA_PKCS, KIND_RSA, PALISADE_SCHEME_RSASSA, 512},
	{CKM_RSA_PKCS_PSS, KIND_RSA, PALISADE_SCHEME_RSAPSS, 0},
	{CKM_SHA256_RSA_PKCS_PSS, KIND_RSA, PALISADE_SCHEME_RSAPSS, 256},
	{CKM_SHA384_RSA_PKCS_PSS, KIND_RSA, PALISADE_SCHEME_RSAPSS, 384},
	{CKM_SHA512_RSA_PKCS_PSS, KIND_RSA, PALISADE_SCHEME_RSAPSS, 512},
	{CKM_ECDSA, KIND_EC, PALISADE_SCHEME_ECDSA, 0},
	{CKM_ECDSA_SHA256, KIND_EC, PALISADE_SCHEME_ECDSA, 256},
	{CKM_ECDSA_SHA384, KIND_EC, PALISADE_SCHEME_ECDSA, 384},
	{CKM_ECDSA_SHA512, KIND_EC, PALISADE_SCHEME_ECDSA, 512},
	{CKM_EDDSA, KIND_ED25519, PALISADE_SCHEME_EDDSA, 0},
};

#define NMECHS (sizeof(mechs) / sizeof(mechs[0]))

static const struct mech *mech_find(CK_MECHANISM_TYPE t)
{
	size_t i;

	for (i = 0; i < NMECHS; i++)
		if (mechs[i].type == t)
			return &mechs[i];
	return NULL;
}

static const struct gen_mech *gen_mech_find(CK_MECHANISM_TYPE t);
#define NGEN 3 /* gen_mechs of keygen.inc: the key-pair generation mechanisms */

CK_RV C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
	static const CK_MECHANISM_TYPE gen[NGEN] = {CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN,
						    CKM_EC_EDWARDS_KEY_PAIR_GEN};
	size_t i;

	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (!count)
		return CKR_ARGUMENTS_BAD;
	if (list && *count < NMECHS + NGEN) {
		*count = NMECHS + NGEN;
		return CKR_BUFFER_TOO_SMALL;
	}
	if (list) {
		for (i = 0; i < NMECHS; i++)
			list[i] = mechs[i].type;
		for (i = 0; i < NGEN; i++)
			list[NMECHS + i] = gen[i];
	}
	*count = NMECHS + NGEN;
	return CKR_OK;
}

static CK_RV gen_mech_info(CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info);

CK_RV C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
	const struct mech *m;

	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	m = mech_find(type);
	if (!m)
		return gen_mech_info(type, info);
	info->flags = CKF_HW | CKF_SIGN;
	switch (m->kind) {
	case KIND_RSA:
		info->ulMinKeySize = 2048;
		info->ulMaxKeySize = 3072;
		break;
	case KIND_EC:
		info->ulMinKeySize = info->ulMaxKeySize = 256;
		info->flags |= CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
		break;
	default:
		info->ulMinKeySize = info->ulMaxKeySize = 255;
		break;
	}
	return CKR_OK;
}

/* ---- keys ---- */

struct name_list {
	char (*names)[257];
	size_t n;
};

static int collect(const char *name, const char *alg, void *arg)
{
	struct name_list *l = arg;

	(void)alg;
	if (l->n >= MAX_KEYS || strlen(name) >= sizeof(l->names[0]))
		return 0; /* more keys than one token shows: the rest are not listed */
	strcpy(l->names[l->n++], name);
	return 0;
}

static struct key *key_load(palisade *p, const char *name)
{
	palisade_key *pk = NULL;
	struct key *k = NULL;
	const uint8_t *b;
	size_t n;

	if (palisade_key_find(p, name, &pk) != 0)
		return NULL;
	k = calloc(1, sizeof(*k));
	if (!k)
		goto out;
	snprintf(k->name, sizeof(k->name), "%s", name);
	snprintf(k->alg, sizeof(k->alg), "%s", palisade_key_alg(pk));
	k->has_pin = palisade_key_has_pin(pk);
	b = palisade_key_public(pk, &n);
	k->pub = malloc(n ? n : 1);
	if (!k->pub)
		goto fail;
	memcpy(k->pub, b, n);
	k->pub_len = n;
	if (der_parse_spki(k->pub, k->pub_len, &k->spki) != 0) {
		trace("key %s: public key does not parse", name);
		goto fail;
	}
	if (palisade_key_cert_count(pk) > 0) {
		b = palisade_key_cert(pk, 0, &n);
		k->cert = malloc(n);
		if (!k->cert)
			goto fail;
		memcpy(k->cert, b, n);
		k->cert_len = n;
		if (der_parse_cert(k->cert, k->cert_len, &k->cp) != 0) {
			trace("key %s: certificate does not parse; not shown", name);
			free(k->cert);
			k->cert = NULL;
			k->cert_len = 0;
		}
	}
	k->listed = 1;
	goto out;
fail:
	key_free(k);
	k = NULL;
out:
	palisade_key_free(pk);
	return k;
}

static CK_RV refresh_keys(void)
{
	struct name_list l = {0};
	struct key *loaded[MAX_KEYS] = {0};
	size_t i, j;
	int r;
	CK_RV rv = CKR_OK;

	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	l.names = calloc(MAX_KEYS, sizeof(l.names[0]));
	if (!l.names)
		return CKR_HOST_MEMORY;
	pthread_mutex_lock(&g.list_mu);
	r = g.p ? 0 : open_handle(&g.p);
	if (r == 0)
		r = palisade_keys_find(g.p, key_prefix, collect, &l);
	if (r != 0) {
		trace("list keys: %s: %s", palisade_strerror(r), palisade_last_message());
		rv = rv_of(r);
	}
	for (i = 0; r == 0 && i < l.n; i++)
		loaded[i] = key_load(g.p, l.names[i]);
	pthread_mutex_unlock(&g.list_mu);
	if (r != 0)
		goto out; /* keep what we had: a restarting daemon does not empty the token */

	pthread_mutex_lock(&g.mu);
	if (!live()) {
		pthread_mutex_unlock(&g.mu);
		rv = CKR_CRYPTOKI_NOT_INITIALIZED;
		goto out;
	}
	for (j = 0; j < g.nkeys; j++)
		g.keys[j]->listed = 0;
	for (i = 0; i < l.n; i++) {
		if (!loaded[i])
			continue;
		/* The same key is the same name with the same public key. A name deleted and created
		 * again is another key: new handles, while the old ones stay invalid (PKCS#11 objects
		 * never change their key type or value under a handle an application holds). */
		for (j = 0; j < g.nkeys; j++)
			if (strcmp(g.keys[j]->name, loaded[i]->name) == 0 &&
			    g.keys[j]->pub_len == loaded[i]->pub_len &&
			    memcmp(g.keys[j]->pub, loaded[i]->pub, loaded[i]->pub_len) == 0)
				break;
		if (j < g.nkeys) {
			key_free(g.keys[j]);
			g.keys[j] = loaded[i];
			loaded[i] = NULL;
		}
	}
	/* New keys, once every known one has found its index: a free index, else that of a key
	 * that is gone, in its next generation. */
	for (i = 0; i < l.n; i++) {
		if (!loaded[i])
			continue;
		if (g.nkeys < MAX_KEYS) {
			j = g.nkeys++;
		} else {
			for (j = 0; j < g.nkeys && g.keys[j]->listed; j++)
				;
			if (j == g.nkeys)
				continue; /* more keys than one token shows: not listed */
			key_free(g.keys[j]);
			g.gen[j]++;
		}
		g.keys[j] = loaded[i];
		loaded[i] = NULL;
	}
	pthread_mutex_unlock(&g.mu);
out:
	for (i = 0; i < l.n; i++)
		key_free(loaded[i]);
	free(l.names);
	return rv;
}

/* obj_key returns the key of object handle h and its kind, or NULL. Under g.mu. */
static struct key *obj_key(CK_OBJECT_HANDLE h, enum obj_kind *kind)
{
	size_t idx = (h >> 2) & 0x1ff;
	struct key *k;

	*kind = h & 3;
	if (idx == 0 || idx > g.nkeys || *kind == 0 || h >> 11 != g.gen[idx - 1])
		return NULL;
	k = g.keys[idx - 1];
	if (!k->listed || (*kind == OBJ_CERT && !k->cert))
		return NULL;
	if (*kind == OBJ_PRIVATE && k->has_pin && !g.logged_in)
		return NULL; /* a private object: visible once logged in */
	return k;
}

/* obj_key_hidden tells whether h is the private object of a key with a PIN, which obj_key
 * hides until C_Login. Under g.mu. */
static int obj_key_hidden(CK_OBJECT_HANDLE h)
{
	size_t idx = (h >> 2) & 0x1ff;
	const struct key *k;

	if ((h & 3) != OBJ_PRIVATE || idx == 0 || idx > g.nkeys || h >> 11 != g.gen[idx - 1])
		return 0;
	k = g.keys[idx - 1];
	return k->listed && k->has_pin && !g.logged_in;
}

static CK_KEY_TYPE key_type(const struct key *k)
{
	switch (k->spki.kind) {
	case KIND_RSA:
		return CKK_RSA;
	case KIND_EC:
		return CKK_EC;
	default:
		return CKK_EC_EDWARDS;
	}
}

/* sig_len is the length of a signature by k as PKCS#11 gives it. */
static size_t sig_len(const struct key *k)
{
	switch (k->spki.kind) {
	case KIND_RSA:
		return k->spki.modulus.n;
	case KIND_EC:
		return k->spki.ec_point.n - 1; /* r‖s: as wide as X‖Y */
	default:
		return 64;
	}
}

static const uint8_t ed25519_params[] = {0x06, 0x03, 0x2b, 0x65, 0x70}; /* OID 1.3.101.112 */

enum { ATTR_OK, ATTR_INVALID, ATTR_SENSITIVE };

/*
 * attr_value finds attribute t of object (k, kind): *v and *n point to its value, which may
 * be in scratch (at least 72 bytes). Under g.mu.
 */
static int attr_value(const struct key *k, enum obj_kind kind, CK_ATTRIBUTE_TYPE t, const void **v, size_t *n,
		      uint8_t *scratch)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG *u = (CK_ULONG *)(void *)scratch;
	int priv = kind == OBJ_PRIVATE, pub = kind == OBJ_PUBLIC, key = priv || pub;

#define BOOL(b)                          \
	do {                             \
		*v = (b) ? &yes : &no;   \
		*n = sizeof(CK_BBOOL);   \
		return ATTR_OK;          \
	} while (0)
#define ULONG(x)                         \
	do {                             \
		*u = (x);                \
		*v = u;                  \
		*n = sizeof(CK_ULONG);   \
		return ATTR_OK;          \
	} while (0)
#define BYTES(p, l)                      \
	do {                             \
		*v = (p);                \
		*n = (l);                \
		return ATTR_OK;          \
	} while (0)

	switch (t) {
	case CKA_CLASS:
		ULONG(priv ? CKO_PRIVATE_KEY : pub ? CKO_PUBLIC_KEY : CKO_CERTIFICATE);
	case CKA_TOKEN:
		BOOL(1);
	case CKA_PRIVATE:
		BOOL(priv && k->has_pin);
	case CKA_MODIFIABLE:
	case CKA_DESTROYABLE:
	case CKA_COPYABLE:
		BOOL(0);
	case CKA_LABEL:
	case CKA_ID:
		BYTES(k->name, strlen(k->name));
	case CKA_SUBJECT:
		if (k->cert)
			BYTES(k->cp.subject.p, k->cp.subject.n);
		if (kind == OBJ_CERT)
			return ATTR_INVALID;
		BYTES("", 0);
	}
	if (kind == OBJ_CERT) {
		switch (t) {
		case CKA_CERTIFICATE_TYPE:
			ULONG(CKC_X_509);
		case CKA_CERTIFICATE_CATEGORY:
			ULONG(0); /* unspecified */
		case CKA_TRUSTED:
			BOOL(0);
		case CKA_VALUE:
			BYTES(k->cert, k->cert_len);
		case CKA_ISSUER:
			BYTES(k->cp.issuer.p, k->cp.issuer.n);
		case CKA_SERIAL_NUMBER:
			BYTES(k->cp.serial.p, k->cp.serial.n);
		case CKA_START_DATE:
		case CKA_END_DATE:
			BYTES("", 0);
		}
		return ATTR_INVALID;
	}
	if (!key)
		return ATTR_INVALID;
	switch (t) {
	case CKA_KEY_TYPE:
		ULONG(key_type(k));
	case CKA_LOCAL:
		BOOL(1);
	case CKA_KEY_GEN_MECHANISM:
		ULONG(CK_UNAVAILABLE_INFORMATION);
	case CKA_START_DATE:
	case CKA_END_DATE:
		BYTES("", 0);
	case CKA_DERIVE:
	case CKA_ENCRYPT:
	case CKA_DECRYPT:
	case CKA_WRAP:
	case CKA_UNWRAP:
	case CKA_SIGN_RECOVER:
	case CKA_VERIFY_RECOVER:
	case CKA_ALWAYS_AUTHENTICATE:
	case CKA_WRAP_WITH_TRUSTED:
	case CKA_TRUSTED:
	case CKA_EXTRACTABLE:
		BOOL(0);
	case CKA_SIGN:
		BOOL(priv);
	case CKA_VERIFY:
		BOOL(pub);
	case CKA_SENSITIVE:
	case CKA_ALWAYS_SENSITIVE:
	case CKA_NEVER_EXTRACTABLE:
		if (priv)
			BOOL(1);
		return ATTR_INVALID;
	case CKA_PUBLIC_KEY_INFO:
		BYTES(k->pub, k->pub_len);
	case CKA_VALUE:
	case CKA_PRIVATE_EXPONENT:
	case CKA_PRIME_1:
	case CKA_PRIME_2:
	case CKA_EXPONENT_1:
	case CKA_EXPONENT_2:
	case CKA_COEFFICIENT:
		if (priv)
			return ATTR_SENSITIVE;
		return ATTR_INVALID;
	}
	if (k->spki.kind == KIND_RSA) {
		switch (t) {
		case CKA_MODULUS:
			BYTES(k->spki.modulus.p, k->spki.modulus.n);
		case CKA_MODULUS_BITS:
			ULONG(k->spki.modulus.n * 8);
		case CKA_PUBLIC_EXPONENT:
			BYTES(k->spki.exponent.p, k->spki.exponent.n);
		}
		return ATTR_INVALID;
	}
	switch (t) {
	case CKA_EC_PARAMS:
		if (k->spki.kind == KIND_EC)
			BYTES(k->spki.ec_params.p, k->spki.ec_params.n);
		BYTES(ed25519_params, sizeof(ed25519_params));
	case CKA_EC_POINT:
		/* DER OCTET STRING holding the point (what OpenSSL's engine and p11tool read). */
		if (k->spki.ec_point.n > 127)
			return ATTR_INVALID;
		scratch[0] = DER_OCTET_STRING;
		scratch[1] = (uint8_t)k->spki.ec_point.n;
		memcpy(scratch + 2, k->spki.ec_point.p, k->spki.ec_point.n);
		BYTES(scratch, k->spki.ec_point.n + 2);
	}
	return ATTR_INVALID;
#undef BOOL
#undef ULONG
#undef BYTES
}

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE sh, CK_OBJECT_HANDLE oh, CK_ATTRIBUTE_PTR tmpl, CK_ULONG count)
{
	struct key *k;
	enum obj_kind kind;
	uint8_t scratch[160];
	const void *v;
	size_t n;
	CK_ULONG i;
	CK_RV rv = CKR_OK;

	if (!tmpl && count)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	if (!session_get(sh)) {
		rv = CKR_SESSION_HANDLE_INVALID;
		goto out;
	}
	k = obj_key(oh, &kind);
	if (!k) {
		rv = CKR_OBJECT_HANDLE_INVALID;
		goto out;
	}
	for (i = 0; i < count; i++) {
		switch (attr_value(k, kind, tmpl[i].type, &v, &n, scratch)) {
		case ATTR_INVALID:
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_ATTRIBUTE_TYPE_INVALID;
			continue;
		case ATTR_SENSITIVE:
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			if (rv == CKR_OK)
				rv = CKR_ATTRIBUTE_SENSITIVE;
			continue;
		}
		if (!tmpl[i].pValue) {
			tmpl[i].ulValueLen = n;
		} else if (tmpl[i].ulValueLen < n) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			if (rv == CKR_OK)
				rv = CKR_BUFFER_TOO_SMALL;
		} else {
			memcpy(tmpl[i].pValue, v, n);
			tmpl[i].ulValueLen = n;
		}
	}
out:
	pthread_mutex_unlock(&g.mu);
	return rv;
}

/* ---- sessions ---- */

CK_RV C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR out)
{
	struct session *s;
	size_t i;

	(void)app;
	(void)notify;
	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (!(flags & CKF_SERIAL_SESSION))
		return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
	if (!out)
		return CKR_ARGUMENTS_BAD;
	s = calloc(1, sizeof(*s));
	if (!s)
		return CKR_HOST_MEMORY;
	s->flags = flags;
	LOCK_LIVE();
	for (i = 0; i < MAX_SESSIONS && g.sessions[i]; i++)
		;
	if (i == MAX_SESSIONS) {
		pthread_mutex_unlock(&g.mu);
		free(s);
		return CKR_SESSION_COUNT;
	}
	g.sessions[i] = s;
	g.nsessions++;
	*out = i + 1;
	pthread_mutex_unlock(&g.mu);
	return CKR_OK;
}

CK_RV C_CloseSession(CK_SESSION_HANDLE sh)
{
	struct session *s;

	LOCK_LIVE();
	s = session_get(sh);
	if (!s || s->busy) {
		pthread_mutex_unlock(&g.mu);
		return s ? CKR_OPERATION_ACTIVE : CKR_SESSION_HANDLE_INVALID;
	}
	g.sessions[sh - 1] = NULL;
	if (--g.nsessions == 0) {
		/* PKCS#11: closing the last session logs the user out. */
		g.logged_in = 0;
		explicit_bzero(g.pin, sizeof(g.pin));
		g.pin_len = 0;
	}
	pthread_mutex_unlock(&g.mu);
	session_free(s);
	return CKR_OK;
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slot)
{
	size_t i;

	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (slot != SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	for (i = 1; i <= MAX_SESSIONS; i++)
		C_CloseSession(i);
	return CKR_OK;
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE sh, CK_SESSION_INFO_PTR info)
{
	struct session *s;
	int rw;

	if (!info)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	s = session_get(sh);
	if (!s) {
		pthread_mutex_unlock(&g.mu);
		return CKR_SESSION_HANDLE_INVALID;
	}
	rw = !!(s->flags & CKF_RW_SESSION);
	info->slotID = SLOT_ID;
	info->flags = s->flags;
	info->ulDeviceError = 0;
	if (g.logged_in)
		info->state = rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS;
	else
		info->state = rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION;
	pthread_mutex_unlock(&g.mu);
	return CKR_OK;
}

/*
 * C_Login keeps the PIN for the keys that have one; palisaded's signing PAL checks it at the
 * next signature with such a key (a wrong PIN then fails that C_Sign with CKR_PIN_INCORRECT
 * and counts towards the key's lockout).
 */
CK_RV C_Login(CK_SESSION_HANDLE sh, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len)
{
	CK_RV rv = CKR_OK;

	if (!pin && pin_len)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	if (!session_get(sh))
		rv = CKR_SESSION_HANDLE_INVALID;
	else if (user != CKU_USER)
		rv = user == CKU_SO ? CKR_PIN_INCORRECT : CKR_USER_TYPE_INVALID; /* no security officer */
	else if (g.logged_in)
		rv = CKR_USER_ALREADY_LOGGED_IN;
	else if (pin_len > MAX_PIN)
		rv = CKR_PIN_LEN_RANGE;
	if (rv == CKR_OK) {
		if (pin_len)
			memcpy(g.pin, pin, pin_len);
		g.pin_len = pin_len;
		g.logged_in = 1;
	}
	pthread_mutex_unlock(&g.mu);
	return rv;
}

CK_RV C_Logout(CK_SESSION_HANDLE sh)
{
	CK_RV rv = CKR_OK;

	LOCK_LIVE();
	if (!session_get(sh))
		rv = CKR_SESSION_HANDLE_INVALID;
	else if (!g.logged_in)
		rv = CKR_USER_NOT_LOGGED_IN;
	explicit_bzero(g.pin, sizeof(g.pin));
	g.pin_len = 0;
	g.logged_in = 0;
	pthread_mutex_unlock(&g.mu);
	return rv;
}

/* ---- finding objects ---- */

static int matches(const struct key *k, enum obj_kind kind, const CK_ATTRIBUTE *tmpl, CK_ULONG count)
{
	uint8_t scratch[160];
	const void *v;
	size_t n;
	CK_ULONG i;

	for (i = 0; i < count; i++) {
		if (attr_value(k, kind, tmpl[i].type, &v, &n, scratch) != ATTR_OK)
			return 0;
		if (n != tmpl[i].ulValueLen || (n && memcmp(v, tmpl[i].pValue, n) != 0))
			return 0;
	}
	return 1;
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE sh, CK_ATTRIBUTE_PTR tmpl, CK_ULONG count)
{
	struct session *s;
	CK_OBJECT_HANDLE *found;
	size_t i, n = 0;
	enum obj_kind kind;
	CK_RV rv;

	if (!tmpl && count)
		return CKR_ARGUMENTS_BAD;
	if (!live())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	rv = refresh_keys();
	found = calloc(3 * MAX_KEYS, sizeof(*found));
	if (!found)
		return CKR_HOST_MEMORY;
	LOCK_LIVE();
	s = session_get(sh);
	if (!s) {
		rv = CKR_SESSION_HANDLE_INVALID;
		goto fail;
	}
	if (s->finding) {
		rv = CKR_OPERATION_ACTIVE;
		goto fail;
	}
	if (rv != CKR_OK && g.nkeys == 0)
		goto fail; /* no daemon, and nothing known from before */
	for (i = 0; i < g.nkeys; i++)
		for (kind = OBJ_PRIVATE; kind <= OBJ_CERT; kind++) {
			CK_OBJECT_HANDLE h = OBJ_HANDLE(i, kind);
			struct key *k = obj_key(h, &kind);

			if (k && matches(k, kind, tmpl, count))
				found[n++] = h;
		}
	s->found = found;
	s->nfound = n;
	s->pos = 0;
	s->finding = 1;
	pthread_mutex_unlock(&g.mu);
	return CKR_OK;
fail:
	pthread_mutex_unlock(&g.mu);
	free(found);
	return rv;
}

CK_RV C_FindObjects(CK_SESSION_HANDLE sh, CK_OBJECT_HANDLE_PTR out, CK_ULONG max, CK_ULONG_PTR count)
{
	struct session *s;
	CK_RV rv = CKR_OK;
	CK_ULONG n = 0;

	if (!out || !count)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	s = session_get(sh);
	if (!s)
		rv = CKR_SESSION_HANDLE_INVALID;
	else if (!s->finding)
		rv = CKR_OPERATION_NOT_INITIALIZED;
	else
		while (n < max && s->pos < s->nfound)
			out[n++] = s->found[s->pos++];
	*count = n;
	pthread_mutex_unlock(&g.mu);
	return rv;
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE sh)
{
	struct session *s;
	CK_RV rv = CKR_OK;

	LOCK_LIVE();
	s = session_get(sh);
	if (!s) {
		rv = CKR_SESSION_HANDLE_INVALID;
	} else if (!s->finding) {
		rv = CKR_OPERATION_NOT_INITIALIZED;
	} else {
		free(s->found);
		s->found = NULL;
		s->finding = 0;
	}
	pthread_mutex_unlock(&g.mu);
	return rv;
}

/* ---- signing ---- */

static CK_RSA_PKCS_MGF_TYPE mgf_of(int bits)
{
	return bits == 256 ? CKG_MGF1_SHA256 : bits == 384 ? CKG_MGF1_SHA384 : CKG_MGF1_SHA512;
}

static const char *mech_name(CK_MECHANISM_TYPE t)
{
	switch (t) {
	case CKM_RSA_PKCS:
		return "CKM_RSA_PKCS";
	case CKM_RSA_X_509:
		return "CKM_RSA_X_509";
	case CKM_RSA_PKCS_PSS:
		return "CKM_RSA_PKCS_PSS";
	case CKM_ECDSA:
		return "CKM_ECDSA";
	case CKM_EDDSA:
		return "CKM_EDDSA";
	default:
		return "other";
	}
}

CK_RV C_SignInit(CK_SESSION_HANDLE sh, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE oh)
{
	struct session *s;
	const struct mech *m;
	struct key *k;
	enum obj_kind kind;
	CK_RV rv = CKR_OK;
	int pss_bits = 0;

	if (!mech)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	trace("C_SignInit mechanism 0x%lx (%s)", mech->mechanism, mech_name(mech->mechanism));
	s = session_get(sh);
	if (!s) {
		rv = CKR_SESSION_HANDLE_INVALID;
		goto out;
	}
	if (s->signing || s->busy) {
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	k = obj_key(oh, &kind);
	if (!k || kind != OBJ_PRIVATE) {
		rv = k ? CKR_KEY_FUNCTION_NOT_PERMITTED :
		     obj_key_hidden(oh) ? CKR_USER_NOT_LOGGED_IN : CKR_KEY_HANDLE_INVALID;
		goto out;
	}
	m = mech_find(mech->mechanism);
	if (!m) {
		rv = CKR_MECHANISM_INVALID;
		goto out;
	}
	if (m->kind != k->spki.kind) {
		trace("key %s (object 0x%lx) is of kind %d, mechanism wants %d", k->name, oh, k->spki.kind, m->kind);
		rv = CKR_KEY_TYPE_INCONSISTENT;
		goto out;
	}
	if (m->scheme == PALISADE_SCHEME_RSAPSS) {
		/* palisaded's PSS uses a salt as long as the hash and MGF1 with the same hash. */
		CK_RSA_PKCS_PSS_PARAMS *p = mech->pParameter;

		if (!p || mech->ulParameterLen != sizeof(*p)) {
			rv = CKR_MECHANISM_PARAM_INVALID;
			goto out;
		}
		pss_bits = p->hashAlg == CKM_SHA256 ? 256 : p->hashAlg == CKM_SHA384 ? 384 :
			   p->hashAlg == CKM_SHA512 ? 512 : 0;
		if (!pss_bits || (m->hash_bits && m->hash_bits != pss_bits) || p->mgf != mgf_of(pss_bits) ||
		    p->sLen != (CK_ULONG)pss_bits / 8) {
			trace("PSS parameters refused: hash 0x%lx mgf 0x%lx salt %lu", p->hashAlg, p->mgf, p->sLen);
			rv = CKR_MECHANISM_PARAM_INVALID;
			goto out;
		}
	} else if (m->scheme == PALISADE_SCHEME_EDDSA && mech->pParameter) {
		rv = CKR_MECHANISM_PARAM_INVALID; /* Ed25519ph and Ed25519ctx: not offered */
		goto out;
	}
	s->mech = m->type;
	s->key = ((oh >> 2) & 0x1ff) - 1;
	s->key_gen = g.gen[s->key];
	s->hash_bits = m->hash_bits;
	s->pss_bits = pss_bits;
	s->buf_len = 0;
	s->multi = 0;
	if (m->hash_bits)
		sha2_init(&s->sha, m->hash_bits);
	s->signing = 1;
out:
	pthread_mutex_unlock(&g.mu);
	return rv;
}

/* DigestInfo prefixes (RFC 8017 §9.2 note 1) of the SHA-2 hashes: CKM_RSA_PKCS sends their
 * digest with its hash id, so that a signing PAL's policy sees which hash it signs. */
static const struct {
	uint8_t prefix[19];
	size_t prefix_len, digest_len;
	uint16_t hash;
} digest_infos[] = {
	{{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	 19, 32, PALISADE_HASH_SHA256},
	{{0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	 19, 48, PALISADE_HASH_SHA384},
	{{0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
	 19, 64, PALISADE_HASH_SHA512},
};
#define NDIGEST_INFOS (sizeof(digest_infos) / sizeof(digest_infos[0]))

static uint16_t hash_id(int bits)
{
	return bits == 256 ? PALISADE_HASH_SHA256 : bits == 384 ? PALISADE_HASH_SHA384 : PALISADE_HASH_SHA512;
}

/* hash_of_len names the hash whose digests are n bytes long, or 0. */
static int hash_of_len(size_t n)
{
	return n == 32 ? 256 : n == 48 ? 384 : n == 64 ? 512 : 0;
}

/*
 * sign_now signs s's pending input (s->buf or, hash-and-sign, the finished hash) and ends the
 * operation. Called with g.mu held; releases it around the daemon's round trip (the session
 * is marked busy meanwhile) and holds it again on return.
 */
static CK_RV sign_now(struct session *s, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len_out)
{
	struct key *k = g.keys[s->key];
	char name[257];
	uint8_t digest[64], raw[PALISADE_MAX_SIGNATURE], pin[MAX_PIN];
	const uint8_t *in = s->buf;
	size_t in_len = s->buf_len, out_len = sizeof(raw), width = 0, want = sig_len(k), pin_len = 0;
	uint16_t scheme = 0, hash = PALISADE_HASH_NONE;
	enum key_kind kind = k->spki.kind;
	int r, bits, i;
	CK_RV rv = CKR_OK;

	snprintf(name, sizeof(name), "%s", k->name);
	if (s->hash_bits) {
		sha2_final(&s->sha, digest);
		in = digest;
		in_len = (size_t)s->hash_bits / 8;
		hash = hash_id(s->hash_bits);
	}
	switch (s->mech) {
	case CKM_RSA_PKCS:
		/* PKCS#11 signs the input as given, padded (block type 1). A SHA-2 DigestInfo (what
		 * OpenSSL's engine and TLS 1.2 build) goes as its digest and hash; any other input (a
		 * SHA-1 DigestInfo: pkcs11-tool --test, Java, old peers) as raw data, hash none,
		 * which the µTPM pads as given (docs/abi.md §3). */
		for (i = 0; i < (int)NDIGEST_INFOS; i++)
			if (in_len == digest_infos[i].prefix_len + digest_infos[i].digest_len &&
			    memcmp(in, digest_infos[i].prefix, digest_infos[i].prefix_len) == 0)
				break;
		if (i < (int)NDIGEST_INFOS) {
			hash = digest_infos[i].hash;
			in += digest_infos[i].prefix_len;
			in_len -= digest_infos[i].prefix_len;
		} else if (in_len == 0 || in_len > want - 11) {
			trace("CKM_RSA_PKCS: input of %zu bytes (1..%zu for this key)", in_len, want - 11);
			rv = CKR_DATA_LEN_RANGE;
			goto out;
		}
		/* fallthrough */
	case CKM_SHA256_RSA_PKCS:
	case CKM_SHA384_RSA_PKCS:
	case CKM_SHA512_RSA_PKCS:
		scheme = PALISADE_SCHEME_RSASSA;
		break;
	case CKM_RSA_PKCS_PSS:
		if (in_len != (size_t)s->pss_bits / 8) {
			rv = CKR_DATA_LEN_RANGE;
			goto out;
		}
		hash = hash_id(s->pss_bits);
		/* fallthrough */
	case CKM_SHA256_RSA_PKCS_PSS:
	case CKM_SHA384_RSA_PKCS_PSS:
	case CKM_SHA512_RSA_PKCS_PSS:
		scheme = PALISADE_SCHEME_RSAPSS;
		break;
	case CKM_ECDSA:
		/* The input is a hash of any length. A SHA-2 one goes with its hash id, so that a
		 * signing PAL's policy sees it; another (SHA-1, SHA-224…) with hash none. ECDSA uses
		 * the hash's leftmost bits, as many as the curve's order has (FIPS 186-5 §6.4.1), so a
		 * longer input loses nothing cut to 64 bytes, palisaded's limit for hash none. */
		bits = hash_of_len(in_len);
		if (bits) {
			hash = hash_id(bits);
		} else if (in_len == 0) {
			rv = CKR_DATA_LEN_RANGE;
			goto out;
		} else if (in_len > 64) {
			in_len = 64;
		}
		/* fallthrough */
	case CKM_ECDSA_SHA256:
	case CKM_ECDSA_SHA384:
	case CKM_ECDSA_SHA512:
		scheme = PALISADE_SCHEME_ECDSA;
		width = want / 2;
		break;
	case CKM_EDDSA:
		scheme = PALISADE_SCHEME_EDDSA;
		break;
	}
	if (k->has_pin) {
		if (!g.logged_in) {
			rv = CKR_USER_NOT_LOGGED_IN;
			goto out;
		}
		pin_len = g.pin_len;
		memcpy(pin, g.pin, pin_len);
	}
	s->busy = 1;
	pthread_mutex_unlock(&g.mu);

	r = s->p ? 0 : open_handle(&s->p);
	if (r == 0)
		r = palisade_sign(s->p, name, scheme, hash, in, in_len, pin_len ? pin : NULL, pin_len, raw, &out_len);
	if (r != 0) {
		trace("sign with %s: %s: %s", name, palisade_strerror(r), palisade_last_message());
		rv = rv_of(r);
	} else if (kind == KIND_EC) {
		if (der_ecdsa_to_raw(raw, out_len, width, sig) != 0)
			rv = CKR_DEVICE_ERROR;
	} else if (out_len != want) {
		rv = CKR_DEVICE_ERROR;
	} else {
		memcpy(sig, raw, out_len);
	}

	pthread_mutex_lock(&g.mu);
	s->busy = 0;
	if (rv == CKR_OK)
		*sig_len_out = want;
	/* A PIN the signing PAL found incorrect is forgotten (the user is logged out, unless a
	 * C_Login gave another PIN meanwhile): each signature with it would cost one of the key's
	 * tries, and a server handshaking with a mistyped PIN would lock the key for good in
	 * seconds. The next signature answers CKR_USER_NOT_LOGGED_IN until C_Login. */
	if (rv == CKR_PIN_INCORRECT && g.logged_in && g.pin_len == pin_len && memcmp(g.pin, pin, pin_len) == 0) {
		trace("PIN incorrect for %s: logged out", name);
		explicit_bzero(g.pin, sizeof(g.pin));
		g.pin_len = 0;
		g.logged_in = 0;
	}
out:
	explicit_bzero(pin, sizeof(pin));
	explicit_bzero(digest, sizeof(digest));
	explicit_bzero(s->buf, s->buf_len);
	s->buf_len = 0;
	s->signing = 0;
	return rv;
}

/*
 * begin_sign checks a C_Sign/C_SignFinal call: a NULL signature asks the length, a short
 * buffer gets CKR_BUFFER_TOO_SMALL; both leave the operation going. Returns CKR_OK when the
 * signature is to be made. Under g.mu.
 */
static CK_RV begin_sign(struct session *s, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len_p, int *done)
{
	size_t want;

	*done = 1;
	if (!s)
		return CKR_SESSION_HANDLE_INVALID;
	if (!s->signing || s->busy)
		return s->busy ? CKR_OPERATION_ACTIVE : CKR_OPERATION_NOT_INITIALIZED;
	if (!g.keys[s->key]->listed || g.gen[s->key] != s->key_gen) {
		s->signing = 0;
		return CKR_KEY_HANDLE_INVALID;
	}
	want = sig_len(g.keys[s->key]);
	if (!sig) {
		*sig_len_p = want;
		return CKR_OK;
	}
	if (*sig_len_p < want) {
		*sig_len_p = want;
		return CKR_BUFFER_TOO_SMALL;
	}
	*done = 0;
	return CKR_OK;
}

/* feed adds data to s's operation: hashed here, or kept (≤ MAX_RAW bytes). Under g.mu. */
static CK_RV feed(struct session *s, const uint8_t *data, CK_ULONG n)
{
	if (s->hash_bits) {
		sha2_update(&s->sha, data, n);
		return CKR_OK;
	}
	if (n > MAX_RAW - s->buf_len)
		return CKR_DATA_LEN_RANGE;
	if (n)
		memcpy(s->buf + s->buf_len, data, n);
	s->buf_len += n;
	return CKR_OK;
}

static void end_sign(struct session *s)
{
	explicit_bzero(s->buf, s->buf_len);
	s->buf_len = 0;
	s->signing = 0;
}

CK_RV C_Sign(CK_SESSION_HANDLE sh, CK_BYTE_PTR data, CK_ULONG data_len, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len_p)
{
	struct session *s;
	CK_RV rv;
	int done;

	if ((!data && data_len) || !sig_len_p)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	s = session_get(sh);
	rv = begin_sign(s, sig, sig_len_p, &done);
	if (done)
		goto out;
	if (s->multi) {
		end_sign(s); /* C_Sign cannot finish a multi-part operation */
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	rv = feed(s, data, data_len);
	if (rv != CKR_OK) {
		end_sign(s);
		goto out;
	}
	rv = sign_now(s, sig, sig_len_p);
out:
	pthread_mutex_unlock(&g.mu);
	return rv;
}

CK_RV C_SignUpdate(CK_SESSION_HANDLE sh, CK_BYTE_PTR part, CK_ULONG part_len)
{
	struct session *s;
	CK_RV rv;

	if (!part && part_len)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	s = session_get(sh);
	if (!s) {
		rv = CKR_SESSION_HANDLE_INVALID;
	} else if (!s->signing || s->busy) {
		rv = s->busy ? CKR_OPERATION_ACTIVE : CKR_OPERATION_NOT_INITIALIZED;
	} else {
		if (!s->multi)
			trace("C_SignUpdate: multi-part mechanism 0x%lx", s->mech);
		s->multi = 1;
		rv = feed(s, part, part_len);
		if (rv != CKR_OK)
			end_sign(s);
	}
	pthread_mutex_unlock(&g.mu);
	return rv;
}

CK_RV C_SignFinal(CK_SESSION_HANDLE sh, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len_p)
{
	struct session *s;
	CK_RV rv;
	int done;

	if (!sig_len_p)
		return CKR_ARGUMENTS_BAD;
	LOCK_LIVE();
	s = session_get(sh);
	rv = begin_sign(s, sig, sig_len_p, &done);
	if (!done)
		rv = sign_now(s, sig, sig_len_p);
	pthread_mutex_unlock(&g.mu);
	return rv;
}

/* ---- not offered ---- */

CK_RV C_SeedRandom(CK_SESSION_HANDLE sh, CK_BYTE_PTR seed, CK_ULONG n)
{
	(void)sh, (void)seed, (void)n;
	return live() ? CKR_RANDOM_NO_RNG : CKR_CRYPTOKI_NOT_INITIALIZED;
}

CK_RV C_GenerateRandom(CK_SESSION_HANDLE sh, CK_BYTE_PTR out, CK_ULONG n)
{
	(void)sh, (void)out, (void)n;
	return live() ? CKR_RANDOM_NO_RNG : CKR_CRYPTOKI_NOT_INITIALIZED;
}

CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE sh)
{
	(void)sh;
	return live() ? CKR_FUNCTION_NOT_PARALLEL : CKR_CRYPTOKI_NOT_INITIALIZED;
}

CK_RV C_CancelFunction(CK_SESSION_HANDLE sh)
{
	(void)sh;
	return live() ? CKR_FUNCTION_NOT_PARALLEL : CKR_CRYPTOKI_NOT_INITIALIZED;
}

#define NOTSUP(name, args)                                                              \
	CK_RV name args                                                                 \
	{                                                                               \
		return live() ? CKR_FUNCTION_NOT_SUPPORTED : CKR_CRYPTOKI_NOT_INITIALIZED; \
	}
#include "stubs.inc"
#include "keygen.inc"

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

static CK_FUNCTION_LIST functions = {
	.version = {2, 40},
#define F(n) .n = n
	F(C_Initialize), F(C_Finalize), F(C_GetInfo), F(C_GetFunctionList), F(C_GetSlotList),
	F(C_GetSlotInfo), F(C_GetTokenInfo), F(C_GetMechanismList), F(C_GetMechanismInfo), F(C_InitToken),
	F(C_InitPIN), F(C_SetPIN), F(C_OpenSession), F(C_CloseSession), F(C_CloseAllSessions),
	F(C_GetSessionInfo), F(C_GetOperationState), F(C_SetOperationState), F(C_Login), F(C_Logout),
	F(C_CreateObject), F(C_CopyObject), F(C_DestroyObject), F(C_GetObjectSize), F(C_GetAttributeValue),
	F(C_SetAttributeValue), F(C_FindObjectsInit), F(C_FindObjects), F(C_FindObjectsFinal),
	F(C_EncryptInit), F(C_Encrypt), F(C_EncryptUpdate), F(C_EncryptFinal), F(C_DecryptInit),
	F(C_Decrypt), F(C_DecryptUpdate), F(C_DecryptFinal), F(C_DigestInit), F(C_Digest),
	F(C_DigestUpdate), F(C_DigestKey), F(C_DigestFinal), F(C_SignInit), F(C_Sign), F(C_SignUpdate),
	F(C_SignFinal), F(C_SignRecoverInit), F(C_SignRecover), F(C_VerifyInit), F(C_Verify),
	F(C_VerifyUpdate), F(C_VerifyFinal), F(C_VerifyRecoverInit), F(C_VerifyRecover),
	F(C_DigestEncryptUpdate), F(C_DecryptDigestUpdate), F(C_SignEncryptUpdate),
	F(C_DecryptVerifyUpdate), F(C_GenerateKey), F(C_GenerateKeyPair), F(C_WrapKey), F(C_UnwrapKey),
	F(C_DeriveKey), F(C_SeedRandom), F(C_GenerateRandom), F(C_GetFunctionStatus), F(C_CancelFunction),
	F(C_WaitForSlotEvent),
#undef F
};

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	if (!list)
		return CKR_ARGUMENTS_BAD;
	*list = &functions;
	return CKR_OK;
}
