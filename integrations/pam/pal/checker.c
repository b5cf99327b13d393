/* checker.c — pam_palisade's password-checking PAL. One source for both engines (wasm32 and the
 * kvm engine's x86-64).
 *
 * The verifier database — for each user the Argon2id parameters, a random salt, the verifier
 * and the failure baseline — exists in the clear only inside this PAL: the host keeps it sealed
 * to this PAL's measurement and passes it with every request.
 *
 * Requests (integers little-endian):
 *   'H' u32 t ‖ u32 m ‖ u32 p ‖ u32 taglen ‖ u32 pwlen ‖ pw ‖ salt
 *        → the Argon2id tag (a pure function, for tests and benchmarks)
 *   'E' u32 dblen ‖ db ‖ u8 userlen ‖ user ‖ u32 t ‖ u32 m ‖ u32 p ‖ u32 maxfail ‖ password
 *        → the new sealed db (dblen 0: a new db; t, m, p, maxfail 0: keep the db's defaults);
 *        the other requests need a db (dblen > 0)
 *   'C' u32 dblen ‖ db ‖ u8 userlen ‖ user ‖ password
 *        → status 0: the password is right; output empty, or a new sealed db to store (the
 *          failure baseline moved); status 4: wrong password or unknown user; status 5: the
 *          user is locked out (output u64 failures since the last success)
 *   'U' u32 dblen ‖ db ‖ u8 userlen ‖ user → a new sealed db with the user's lockout lifted
 *   'D' u32 dblen ‖ db ‖ u8 userlen ‖ user → a new sealed db without the user
 *
 * Lockout: every failed check of a user increments the user's µTPM monotonic counter; the db
 * holds, per user, the counter's value at the last success (the baseline). The counters are
 * the db's own: a random id, drawn when the db is created and sealed in it, is part of every
 * counter's name, so failures against another db of this PAL (another state directory, the
 * demo's) do not count here. A user whose counter
 * is maxfail or more above the baseline is refused without checking the password. The counter
 * survives restarts; rolling the db back to an older sealed copy only lowers the baseline, which
 * locks sooner, never later. Unknown users are checked against a dummy entry with the db's
 * default parameters, so they cost a full Argon2id check.
 */
#include "palisade.h"
#include "argon2.h"

#define STATUS_WRONG 4
#define STATUS_LOCKED 5
#define STATUS_BAD 2

#define SALT_LEN 16
#define TAG_LEN 32
#define MAX_USERS 256
#define MAX_USER 255
#define MAX_PASSWORD 4096
#define DB_MAGIC 0x32575050u /* "PPW2" */
#define DB_ID_LEN 16
#define DB_HEADER (24 + DB_ID_LEN)

struct entry {
	uint8_t user_len;
	char user[MAX_USER];
	uint32_t t, m, p;
	uint8_t salt[SALT_LEN];
	uint8_t tag[TAG_LEN];
	uint64_t baseline;
};

struct db {
	uint32_t t, m, p, maxfail; /* defaults for new users and the dummy check */
	uint32_t n;
	uint8_t id[DB_ID_LEN]; /* names this db's failure counters (counter_id) */
	struct entry e[MAX_USERS];
};

/* Defaults: OWASP's minimum for Argon2id (m = 19 MiB, t = 2, p = 1), 5 failures. */
#define DEF_T 2
#define DEF_M (19u * 1024u)
#define DEF_P 1
#define DEF_MAXFAIL 5

#define ENTRY_WIRE (1 + MAX_USER + 12 + SALT_LEN + TAG_LEN + 8)
#define DB_WIRE_MAX (DB_HEADER + MAX_USERS * ENTRY_WIRE)

static struct db db;
static uint8_t plain[DB_WIRE_MAX];
static uint8_t sealed[DB_WIRE_MAX + 4096];

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* fail sets a message as the output and returns status. */
static int32_t fail(int32_t status, const char *msg)
{
	pal_output(msg, (uint32_t)strlen(msg));
	return status;
}

static int ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint8_t d = 0;

	for (size_t i = 0; i < n; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

static int params_ok(uint32_t t, uint32_t m, uint32_t p)
{
	return t >= 1 && t <= 64 && p >= 1 && p <= ARGON2_MAX_LANES && m >= 8 * p &&
	       m <= ARGON2_MAX_KIB;
}

/* load decodes a sealed db (len 0: a new one with the defaults and a new random id) into db. */
static int load(const uint8_t *blob, uint32_t len)
{
	memset(&db, 0, sizeof(db));
	db.t = DEF_T;
	db.m = DEF_M;
	db.p = DEF_P;
	db.maxfail = DEF_MAXFAIL;
	if (len == 0)
		return pal_random(db.id, DB_ID_LEN) == 0 ? 0 : -PAL_E_INTERNAL;
	uint8_t creator[PAL_DIGEST_SIZE];
	int64_t n = pal_unseal(blob, len, creator, plain, sizeof(plain));
	if (n < 0)
		return (int)n;
	const uint8_t *p = plain, *end = plain + n;
	if (n < DB_HEADER || get32(p) != DB_MAGIC)
		return -PAL_E_MALFORMED;
	db.t = get32(p + 4);
	db.m = get32(p + 8);
	db.p = get32(p + 12);
	db.maxfail = get32(p + 16);
	db.n = get32(p + 20);
	memcpy(db.id, p + 24, DB_ID_LEN);
	p += DB_HEADER;
	if (db.n > MAX_USERS || !params_ok(db.t, db.m, db.p))
		return -PAL_E_MALFORMED;
	for (uint32_t i = 0; i < db.n; i++) {
		struct entry *e = &db.e[i];
		if (end - p < 1 || p[0] == 0 || end - p < 1 + p[0] + 12 + SALT_LEN + TAG_LEN + 8)
			return -PAL_E_MALFORMED;
		e->user_len = p[0];
		memcpy(e->user, p + 1, e->user_len);
		p += 1 + e->user_len;
		e->t = get32(p);
		e->m = get32(p + 4);
		e->p = get32(p + 8);
		p += 12;
		memcpy(e->salt, p, SALT_LEN);
		memcpy(e->tag, p + SALT_LEN, TAG_LEN);
		e->baseline = get64(p + SALT_LEN + TAG_LEN);
		p += SALT_LEN + TAG_LEN + 8;
		if (!params_ok(e->t, e->m, e->p))
			return -PAL_E_MALFORMED;
	}
	return 0;
}

/* save seals db to this PAL's measurement and makes it the output. */
static int32_t save(void)
{
	uint8_t *p = plain;
	put32(p, DB_MAGIC);
	put32(p + 4, db.t);
	put32(p + 8, db.m);
	put32(p + 12, db.p);
	put32(p + 16, db.maxfail);
	put32(p + 20, db.n);
	memcpy(p + 24, db.id, DB_ID_LEN);
	p += DB_HEADER;
	for (uint32_t i = 0; i < db.n; i++) {
		struct entry *e = &db.e[i];
		*p++ = e->user_len;
		memcpy(p, e->user, e->user_len);
		p += e->user_len;
		put32(p, e->t);
		put32(p + 4, e->m);
		put32(p + 8, e->p);
		p += 12;
		memcpy(p, e->salt, SALT_LEN);
		memcpy(p + SALT_LEN, e->tag, TAG_LEN);
		put64(p + SALT_LEN + TAG_LEN, e->baseline);
		p += SALT_LEN + TAG_LEN + 8;
	}
	pal_policy pol;
	memset(&pol, 0, sizeof(pol)); /* this PAL's measurement */
	int64_t n = pal_seal(&pol, plain, (uint32_t)(p - plain), sealed, sizeof(sealed));
	memset(plain, 0, sizeof(plain));
	if (n == -PAL_E_TOOLARGE)
		return fail(STATUS_BAD, "checker: the db would pass the 64 KiB a PAL can seal (69 bytes a user plus the name's length): fewer users or shorter names");
	if (n < 0)
		return fail(STATUS_BAD, "checker: seal failed");
	pal_output(sealed, (uint32_t)n);
	return 0;
}

static struct entry *find(const uint8_t *user, uint8_t len)
{
	for (uint32_t i = 0; i < db.n; i++)
		if (db.e[i].user_len == len && memcmp(db.e[i].user, user, len) == 0)
			return &db.e[i];
	return 0;
}

/* counter_id names a user's failure counter in this db: the first 4 bytes of SHA-256 over a
 * label, the db's id and the name. Two users may share one (2^-32 per pair); they then share
 * their lockout. */
static uint32_t counter_id(const uint8_t *user, uint8_t len)
{
	uint8_t buf[32 + DB_ID_LEN + MAX_USER], h[PAL_DIGEST_SIZE];
	static const char label[] = "pam_palisade failures";

	memcpy(buf, label, sizeof(label)); /* with its NUL */
	memcpy(buf + sizeof(label), db.id, DB_ID_LEN);
	memcpy(buf + sizeof(label) + DB_ID_LEN, user, len);
	pal_sha256(buf, sizeof(label) + DB_ID_LEN + len, h);
	return get32(h);
}

static int32_t op_hash(const uint8_t *in, uint32_t len)
{
	uint8_t tag[ARGON2_MAX_TAG];

	if (len < 20)
		return fail(STATUS_BAD, "checker: short H request");
	uint32_t t = get32(in), m = get32(in + 4), p = get32(in + 8), tl = get32(in + 12);
	uint32_t pwlen = get32(in + 16);
	if (pwlen > len - 20)
		return fail(STATUS_BAD, "checker: password length past the request");
	if (argon2id(t, m, p, in + 20, pwlen, in + 20 + pwlen, len - 20 - pwlen, tag, tl) != 0)
		return fail(STATUS_BAD, "checker: Argon2id parameters out of range");
	pal_output(tag, tl);
	memset(tag, 0, sizeof(tag));
	return 0;
}

int32_t pal_main(const uint8_t *in, uint32_t in_len)
{
	uint8_t tag[TAG_LEN];

	if (in_len < 1)
		return fail(STATUS_BAD, "checker: empty request");
	uint8_t op = in[0];
	if (op == 'H')
		return op_hash(in + 1, in_len - 1);
	if (in_len < 5)
		return fail(STATUS_BAD, "checker: short request");
	uint32_t dblen = get32(in + 1);
	if (dblen > in_len - 5)
		return fail(STATUS_BAD, "checker: db length past the request");
	const uint8_t *rest = in + 5 + dblen;
	uint32_t rlen = in_len - 5 - dblen;
	if (rlen < 1 || rest[0] == 0 || rest[0] > rlen - 1)
		return fail(STATUS_BAD, "checker: bad user name length");
	const uint8_t *user = rest + 1;
	uint8_t ulen = rest[0];
	const uint8_t *arg = user + ulen;
	uint32_t alen = rlen - 1 - ulen;
	/* Only an enrolment starts a db: a new db draws a new id, and so new counters. */
	if (dblen == 0 && op != 'E')
		return fail(STATUS_BAD, "checker: no db (enrol a user first)");
	if (load(in + 1 + 4, dblen) != 0)
		return fail(STATUS_BAD, "checker: the db does not unseal or decode");
	struct entry *e = find(user, ulen);
	/* Unknown names share one counter (per db), so guessing names cannot grow the counter
	 * store. A user being enrolled has a counter of their own already: the baseline must be
	 * read from it, or a new user starts locked out once an unknown name has failed. */
	uint32_t cid = counter_id(user, e || op == 'E' ? ulen : 0);
	uint64_t count = 0;

	switch (op) {
	case 'E': {
		if (alen < 16)
			return fail(STATUS_BAD, "checker: short E request");
		uint32_t t = get32(arg), m = get32(arg + 4), p = get32(arg + 8), mf = get32(arg + 12);
		if (t || m || p) {
			if (!params_ok(t, m, p))
				return fail(STATUS_BAD, "checker: Argon2id parameters out of range (t 1..64, p 1..16, 8p <= m KiB <= 32768)");
			db.t = t;
			db.m = m;
			db.p = p;
		}
		if (mf)
			db.maxfail = mf;
		if (alen - 16 > MAX_PASSWORD)
			return fail(STATUS_BAD, "checker: password longer than 4096 bytes");
		if (!e) {
			if (db.n == MAX_USERS)
				return fail(STATUS_BAD, "checker: the db holds 256 users");
			e = &db.e[db.n++];
			memset(e, 0, sizeof(*e));
			e->user_len = ulen;
			memcpy(e->user, user, ulen);
		}
		e->t = db.t;
		e->m = db.m;
		e->p = db.p;
		if (pal_random(e->salt, SALT_LEN) != 0)
			return fail(STATUS_BAD, "checker: no randomness");
		argon2id(e->t, e->m, e->p, arg + 16, alen - 16, e->salt, SALT_LEN, e->tag, TAG_LEN);
		if (pal_counter_read(cid, &count) != 0)
			count = 0;
		e->baseline = count;
		return save();
	}
	case 'U':
	case 'D':
		if (!e)
			return fail(STATUS_BAD, "checker: no such user in the db");
		if (op == 'U') {
			if (pal_counter_read(cid, &count) != 0)
				return fail(STATUS_BAD, "checker: failure counter unreadable");
			e->baseline = count;
		} else {
			*e = db.e[--db.n];
		}
		return save();
	case 'C': {
		struct entry dummy;
		int known = e != 0;
		if (!known) {
			memset(&dummy, 0, sizeof(dummy));
			dummy.t = db.t;
			dummy.m = db.m;
			dummy.p = db.p;
			e = &dummy;
		}
		/* A counter never incremented reads as 0 (or is absent). */
		if (pal_counter_read(cid, &count) != 0)
			count = 0;
		if (known && count - e->baseline >= db.maxfail) {
			uint8_t out[8];
			put64(out, count - e->baseline);
			pal_output(out, sizeof(out));
			return STATUS_LOCKED;
		}
		argon2id(e->t, e->m, e->p, arg, alen, e->salt, SALT_LEN, tag, TAG_LEN);
		int ok = ct_equal(tag, e->tag, TAG_LEN);
		memset(tag, 0, sizeof(tag));
		if (known && ok) {
			if (count == e->baseline)
				return 0;
			e->baseline = count;
			return save();
		}
		/* Unknown users count too (on the shared counter): the cost is the same. */
		pal_counter_increment(cid, &count);
		return fail(STATUS_WRONG, "wrong password");
	}
	}
	return fail(STATUS_BAD, "checker: unknown op");
}
