// SPDX-License-Identifier: Apache-2.0
/*
 * test_palisade: libpalisade against a real palisaded, driven by cmd/palisaded's
 * TestLibpalisade, which starts the daemon, registers the test PAL, creates the keys, and
 * passes them in the environment:
 *
 *   PALISADE_SOCKET  the daemon's gRPC socket (the library finds lean.sock beside it)
 *   T_HANDLE         the test PAL (cmd/palisaded/testdata/testpal.c) of uid 0, with a 300 ms
 *                    timeout and a 100-byte input limit
 *   T_KEY            an ECDSA P-256 key of uid 0, usable by uid 0 only
 *   T_PIN_KEY        an Ed25519 key of uid 0 with PIN 1234
 *   T_CREATE_KEY     a name no key has: this program creates it (ECDSA P-256) and NAME-ed
 *                    (Ed25519), and prints "CREATED name pub" (hex) for the driver to compare
 *                    with what the gRPC API says of the key
 *   T_FAKE_DIR       a directory for this program's fake daemon (faults a real one never makes)
 *
 * It talks to the driver over stdout/stdin: it prints RESTART, STOP or START and waits for a
 * line "OK" once the driver has done it; it prints "SIG scheme pub msg sig" (hex) for each
 * signature, which the driver verifies with Go's crypto. Exit status 0 iff every check passed.
 */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "palisade-client.h"

static int failures;
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                                                  \
	do {                                                                              \
		if (!(cond)) {                                                            \
			pthread_mutex_lock(&report_mu);                                   \
			failures++;                                                       \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);              \
			fprintf(stderr, __VA_ARGS__);                                     \
			fprintf(stderr, " [last message: %s]\n", palisade_last_message()); \
			pthread_mutex_unlock(&report_mu);                                 \
		}                                                                         \
	} while (0)

#define EXPECT(call, want)                                                                \
	do {                                                                              \
		int r_ = (call);                                                          \
		CHECK(r_ == (want), "%s = %d (%s), want %d (%s)", #call, r_,              \
		      palisade_strerror(r_), (want), palisade_strerror(want));           \
	} while (0)

static const char *handle, *key, *pin_key, *create_key;

static const char *env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "test_palisade: $%s is not set\n", name);
		exit(2);
	}
	return v;
}

/* ask prints a request to the driver and waits for its "OK". */
static void ask(const char *what)
{
	char line[64];

	printf("%s\n", what);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin) || strcmp(line, "OK\n") != 0) {
		fprintf(stderr, "test_palisade: driver did not confirm %s\n", what);
		exit(2);
	}
}

static void hex(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
}

static void report_sig(uint16_t scheme, const palisade_key *k, const uint8_t *msg, size_t msg_len,
		       const uint8_t *sig, size_t sig_len)
{
	size_t pub_len;
	const uint8_t *pub = palisade_key_public(k, &pub_len);

	pthread_mutex_lock(&report_mu);
	printf("SIG %u ", scheme);
	hex(pub, pub_len);
	printf(" ");
	hex(msg, msg_len);
	printf(" ");
	hex(sig, sig_len);
	printf("\n");
	fflush(stdout);
	pthread_mutex_unlock(&report_mu);
}

static int echo(palisade *p, const char *text)
{
	char in[128], out[128];
	size_t out_len = sizeof(out), n = strlen(text);
	int32_t status = -1;
	int r;

	in[0] = 'e';
	memcpy(in + 1, text, n);
	r = palisade_call(p, handle, in, n + 1, &status, out, &out_len);
	if (r != 0)
		return r;
	CHECK(status == 0 && out_len == n && memcmp(out, text, n) == 0,
	      "echo %s: status %d, %zu bytes", text, status, out_len);
	return 0;
}

static void test_open(void)
{
	palisade *p = (palisade *)1;
	char path[200];

	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[108] = 0; /* 108 bytes: one too many for sun_path with its NUL */
	EXPECT(palisade_open(&p, path), -PALISADE_E_PATH);
	CHECK(p == NULL, "palisade_open left *out set on failure");
	path[107] = 0; /* 107 bytes: allowed, and nothing serves it */
	EXPECT(palisade_open(&p, path), -PALISADE_E_CONNECT);
	EXPECT(palisade_open(&p, ""), -PALISADE_E_PATH);
	EXPECT(palisade_open(NULL, NULL), -PALISADE_E_ARG);
	EXPECT(palisade_open(&p, "/nonexistent/lean.sock"), -PALISADE_E_CONNECT);
	CHECK(strstr(palisade_last_message(), "/nonexistent/lean.sock") != NULL,
	      "connect failure message does not name the socket");
	/* NULL: the socket beside $PALISADE_SOCKET. */
	EXPECT(palisade_open(&p, NULL), 0);
	palisade_close(p);
	palisade_close(NULL);
	CHECK(strcmp(palisade_strerror(-PALISADE_E_PIN_INCORRECT), "incorrect PIN") == 0 &&
		      strcmp(palisade_strerror(12345), "unknown error") == 0,
	      "palisade_strerror");
}

static void test_call(palisade *p)
{
	uint8_t in[256], out[64];
	size_t out_len;
	int32_t status;

	out_len = sizeof(out);
	EXPECT(palisade_call(p, handle, NULL, 0, &status, out, &out_len), 0);
	CHECK(status == 0 && out_len == 0, "null call: status %d, %zu bytes", status, out_len);
	EXPECT(echo(p, "hello"), 0);

	in[0] = 's';
	in[1] = 5;
	out_len = sizeof(out);
	EXPECT(palisade_call(p, handle, in, 2, &status, out, &out_len), 0);
	CHECK(status == 5, "status call: %d", status);

	/* Size query and short buffer. */
	memcpy(in, "eabcde", 6);
	out_len = 0;
	EXPECT(palisade_call(p, handle, in, 6, &status, NULL, &out_len), -PALISADE_E_BUFFER_TOO_SMALL);
	CHECK(out_len == 5, "size query: %zu", out_len);
	out_len = 2;
	EXPECT(palisade_call(p, handle, in, 6, &status, out, &out_len), -PALISADE_E_BUFFER_TOO_SMALL);
	CHECK(out_len == 5, "short buffer: %zu", out_len);

	/* The daemon's errors. */
	in[0] = 'l';
	out_len = sizeof(out);
	EXPECT(palisade_call(p, handle, in, 1, &status, out, &out_len), -PALISADE_E_TIMEOUT);
	memset(in, 'e', sizeof(in));
	EXPECT(palisade_call(p, handle, in, 200, &status, out, &out_len), -PALISADE_E_INPUT_TOO_LARGE);
	EXPECT(palisade_call(p, "pal-00000000000000ff", NULL, 0, &status, out, &out_len),
	       -PALISADE_E_NOT_FOUND);
	CHECK(strstr(palisade_last_message(), "pal-00000000000000ff") != NULL,
	      "not-found message does not name the handle");

	/* The library's. */
	EXPECT(palisade_call(p, "xyz", NULL, 0, &status, out, &out_len), -PALISADE_E_ARG);
	EXPECT(palisade_call(p, "pal-", NULL, 0, &status, out, &out_len), -PALISADE_E_ARG);
	EXPECT(palisade_call(p, "pal-12345678901234567", NULL, 0, &status, out, &out_len), -PALISADE_E_ARG);
	EXPECT(palisade_call(p, "pal-12g", NULL, 0, &status, out, &out_len), -PALISADE_E_ARG);
	EXPECT(palisade_call(p, NULL, NULL, 0, &status, out, &out_len), -PALISADE_E_ARG);
	EXPECT(palisade_call(NULL, handle, NULL, 0, &status, out, &out_len), -PALISADE_E_ARG);
	EXPECT(palisade_call(p, handle, NULL, 3, &status, out, &out_len), -PALISADE_E_ARG);
	{
		size_t big = (4 << 20) + 1;
		uint8_t *b = calloc(1, big);

		EXPECT(palisade_call(p, handle, b, big, &status, out, &out_len), -PALISADE_E_TOO_LARGE);
		free(b);
	}
	/* The connection survived all of that. */
	EXPECT(echo(p, "still here"), 0);
}

static uint8_t digest[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
			     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static int sign_ec(palisade *p, const palisade_key *k)
{
	uint8_t sig[PALISADE_MAX_SIGNATURE];
	size_t sig_len = sizeof(sig);
	int r = palisade_sign(p, key, PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest, sizeof(digest),
			      NULL, 0, sig, &sig_len);

	if (r == 0 && k)
		report_sig(PALISADE_SCHEME_ECDSA, k, digest, sizeof(digest), sig, sig_len);
	return r;
}

static int collect(const char *name, const char *alg, void *arg)
{
	char *names = arg;

	strcat(names, name);
	strcat(names, ":");
	strcat(names, alg);
	strcat(names, ",");
	return 0;
}

static int stop_at_first(const char *name, const char *alg, void *arg)
{
	(void)name;
	(void)alg;
	(void)arg;
	return 42;
}

/* test_create: palisade_key_create makes a key the caller owns and can sign with at once;
 * the daemon's refusals come back as their codes. */
static void test_create(palisade *p)
{
	palisade_key *k = NULL, *again = NULL;
	uint8_t sig[PALISADE_MAX_SIGNATURE];
	size_t sig_len = sizeof(sig), n = 0;
	const uint8_t *pub;
	char ed[160];

	EXPECT(palisade_key_create(p, create_key, "ecdsa-p256", &k), 0);
	if (!k)
		return;
	CHECK(strcmp(palisade_key_name(k), create_key) == 0, "name %s", palisade_key_name(k));
	CHECK(strcmp(palisade_key_alg(k), "ecdsa-p256") == 0, "alg %s", palisade_key_alg(k));
	CHECK(!palisade_key_has_pin(k) && palisade_key_cert_count(k) == 0, "a PIN or certificates");
	pub = palisade_key_public(k, &n);
	CHECK(pub && n > 60, "public key of %zu bytes", n);
	pthread_mutex_lock(&report_mu);
	printf("CREATED %s ", create_key);
	hex(pub, n);
	printf("\n");
	fflush(stdout);
	pthread_mutex_unlock(&report_mu);
	/* The answer is the key's key-info: the same public key as a lookup. */
	EXPECT(palisade_key_find(p, create_key, &again), 0);
	if (again) {
		size_t m = 0;
		const uint8_t *pub2 = palisade_key_public(again, &m);

		CHECK(m == n && memcmp(pub, pub2, n) == 0, "key-info's public key differs from key-create's");
		palisade_key_free(again);
	}
	EXPECT(palisade_sign(p, create_key, PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest,
			     sizeof(digest), NULL, 0, sig, &sig_len),
	       0);
	report_sig(PALISADE_SCHEME_ECDSA, k, digest, sizeof(digest), sig, sig_len);
	palisade_key_free(k);

	snprintf(ed, sizeof(ed), "%s-ed", create_key);
	EXPECT(palisade_key_create(p, ed, "ed25519", NULL), 0);
	EXPECT(palisade_key_create(p, create_key, "ed25519", &k), -PALISADE_E_KEY_EXISTS);
	CHECK(k == NULL, "*out set on failure");
	CHECK(strstr(palisade_last_message(), create_key) != NULL, "message %s", palisade_last_message());
	EXPECT(palisade_key_create(p, "c-new", "dsa-1024", &k), -PALISADE_E_INVALID);
	EXPECT(palisade_key_create(p, ".hidden", "ed25519", &k), -PALISADE_E_INVALID);
	EXPECT(palisade_key_create(p, "a/b", "ed25519", &k), -PALISADE_E_INVALID);
	EXPECT(palisade_key_create(p, "", "ed25519", &k), -PALISADE_E_ARG);
	EXPECT(palisade_key_create(p, "bad\nname", "ed25519", &k), -PALISADE_E_ARG);
	EXPECT(palisade_key_create(p, "c-new", "", &k), -PALISADE_E_ARG);
	EXPECT(palisade_key_create(p, "c-new", "ecdsa-p256-but-longer-than-32-bytes", &k), -PALISADE_E_ARG);
	EXPECT(palisade_key_create(p, "c-new", "ed\t", &k), -PALISADE_E_ARG);
	EXPECT(palisade_key_create(p, NULL, "ed25519", &k), -PALISADE_E_ARG);
	EXPECT(palisade_key_create(NULL, "c-new", "ed25519", &k), -PALISADE_E_ARG);
	EXPECT(palisade_key_find(p, "c-new", &k), -PALISADE_E_KEY_NOT_FOUND);
}

static void test_keys(palisade *p)
{
	palisade_key *k = NULL, *pk = NULL;
	uint8_t sig[PALISADE_MAX_SIGNATURE], msg[] = "a message for Ed25519";
	size_t sig_len, n;
	char names[2048] = "";

	EXPECT(palisade_key_find(p, key, &k), 0);
	if (!k)
		return;
	CHECK(strcmp(palisade_key_alg(k), "ecdsa-p256") == 0, "alg %s", palisade_key_alg(k));
	CHECK(strcmp(palisade_key_name(k), key) == 0, "name %s", palisade_key_name(k));
	CHECK(palisade_key_public(k, &n) != NULL && n > 60, "public key of %zu bytes", n);
	CHECK(!palisade_key_has_pin(k), "has_pin");
	CHECK(palisade_key_cert_count(k) == 0 && palisade_key_cert(k, 0, &n) == NULL, "certificates");
	EXPECT(sign_ec(p, k), 0);

	sig_len = 8;
	EXPECT(palisade_sign(p, key, PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest, 32, NULL, 0, sig,
			     &sig_len),
	       -PALISADE_E_BUFFER_TOO_SMALL);
	CHECK(sig_len > 8 && sig_len <= 72, "needed %zu", sig_len);
	sig_len = sizeof(sig);
	EXPECT(palisade_sign(p, key, PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest, 0, NULL, 0, sig,
			     &sig_len),
	       -PALISADE_E_INVALID);
	EXPECT(palisade_sign(p, "no-such-key", PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest, 32, NULL,
			     0, sig, &sig_len),
	       -PALISADE_E_KEY_NOT_FOUND);
	EXPECT(palisade_key_find(p, "no-such-key", &pk), -PALISADE_E_KEY_NOT_FOUND);
	EXPECT(palisade_key_find(p, "", &pk), -PALISADE_E_ARG);
	EXPECT(palisade_key_find(p, "bad\nname", &pk), -PALISADE_E_ARG);
	EXPECT(palisade_sign(p, key, PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest, 5000, NULL, 0, sig,
			     &sig_len),
	       -PALISADE_E_ARG);

	/* A key with a PIN. */
	EXPECT(palisade_key_find(p, pin_key, &pk), 0);
	if (pk) {
		CHECK(palisade_key_has_pin(pk), "PIN key without has_pin");
		CHECK(strcmp(palisade_key_alg(pk), "ed25519") == 0, "alg %s", palisade_key_alg(pk));
		sig_len = sizeof(sig);
		EXPECT(palisade_sign(p, pin_key, PALISADE_SCHEME_EDDSA, PALISADE_HASH_NONE, msg, sizeof(msg),
				     NULL, 0, sig, &sig_len),
		       -PALISADE_E_PIN_REQUIRED);
		EXPECT(palisade_sign(p, pin_key, PALISADE_SCHEME_EDDSA, PALISADE_HASH_NONE, msg, sizeof(msg),
				     "9999", 4, sig, &sig_len),
		       -PALISADE_E_PIN_INCORRECT);
		sig_len = sizeof(sig);
		EXPECT(palisade_sign(p, pin_key, PALISADE_SCHEME_EDDSA, PALISADE_HASH_NONE, msg, sizeof(msg),
				     "1234", 4, sig, &sig_len),
		       0);
		report_sig(PALISADE_SCHEME_EDDSA, pk, msg, sizeof(msg), sig, sig_len);
		palisade_key_free(pk);
	}

	/* Finding keys by prefix. */
	EXPECT(palisade_keys_find(p, NULL, collect, names), 0);
	CHECK(strstr(names, key) && strstr(names, pin_key), "find all: %s", names);
	names[0] = 0;
	EXPECT(palisade_keys_find(p, key, collect, names), 0);
	CHECK(strstr(names, key) && !strstr(names, pin_key), "find %s: %s", key, names);
	names[0] = 0;
	EXPECT(palisade_keys_find(p, "zzz-none", collect, names), 0);
	CHECK(names[0] == 0, "find zzz-none: %s", names);
	EXPECT(palisade_keys_find(p, "", stop_at_first, NULL), 42);
	EXPECT(palisade_keys_find(p, "", NULL, NULL), -PALISADE_E_ARG);
	palisade_key_free(k);
}

/* ---- threads ---- */

struct worker {
	palisade *p;
	int id;
};

static void *call_worker(void *arg)
{
	struct worker *w = arg;
	char text[32];

	for (int i = 0; i < 100; i++) {
		snprintf(text, sizeof(text), "t%d-%d", w->id, i);
		EXPECT(echo(w->p, text), 0);
	}
	return NULL;
}

static void *sign_worker(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 10; i++)
		EXPECT(sign_ec(w->p, NULL), 0);
	return NULL;
}

static void test_threads(palisade *p)
{
	pthread_t t[10];
	struct worker w[10];

	for (int i = 0; i < 10; i++) {
		w[i] = (struct worker){p, i};
		pthread_create(&t[i], NULL, i < 8 ? call_worker : sign_worker, &w[i]);
	}
	for (int i = 0; i < 10; i++)
		pthread_join(t[i], NULL);
}

/* ---- fork ---- */

/* in_child runs fn in a forked child (under a 10 s alarm, to catch a deadlock) and returns its
 * exit status: 0 if all its checks passed. */
static int in_child(void (*fn)(palisade *), palisade *p)
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		alarm(10);
		failures = 0;
		fn(p);
		fflush(stderr);
		_exit(failures ? 1 : 0);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		return -1;
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

static void child_calls(palisade *p)
{
	EXPECT(echo(p, "from the child"), 0);
	EXPECT(sign_ec(p, NULL), 0);
}

/* As another uid, the child must get its own connection, hence the other uid's rights: the
 * root connection it inherited must not be used. */
static void child_as_nobody(palisade *p)
{
	int32_t status;
	uint8_t out[16];
	size_t out_len = sizeof(out);
	palisade_key *k = NULL;

	if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) {
		fprintf(stderr, "setuid: %s\n", strerror(errno));
		_exit(3);
	}
	EXPECT(palisade_call(p, handle, NULL, 0, &status, out, &out_len), -PALISADE_E_PERMISSION);
	EXPECT(sign_ec(p, NULL), -PALISADE_E_PERMISSION);
	EXPECT(palisade_key_find(p, key, &k), -PALISADE_E_PERMISSION);
}

static void *hold_lock(void *arg)
{
	palisade *p = arg;
	uint8_t in = 'l', out[16];
	size_t out_len = sizeof(out);
	int32_t status;

	/* Loops in the PAL until its 300 ms timeout, holding the handle's lock meanwhile. */
	EXPECT(palisade_call(p, handle, &in, 1, &status, out, &out_len), -PALISADE_E_TIMEOUT);
	return NULL;
}

static void test_fork(palisade *p)
{
	pthread_t t;
	int st;

	EXPECT(echo(p, "before fork"), 0);
	st = in_child(child_calls, p);
	CHECK(st == 0, "child calls: status %d", st);
	EXPECT(echo(p, "parent after the child"), 0);

	st = in_child(child_as_nobody, p);
	CHECK(st == 0, "child as uid 65534: status %d", st);
	EXPECT(echo(p, "parent after the nobody child"), 0);

	/* Fork while another thread holds the handle's lock in the middle of a request. */
	pthread_create(&t, NULL, hold_lock, p);
	usleep(100 * 1000);
	st = in_child(child_calls, p);
	CHECK(st == 0, "child forked while a request was in flight: status %d", st);
	pthread_join(t, NULL);
	EXPECT(echo(p, "parent after all children"), 0);
}

/* ---- the daemon going away ---- */

static void test_restart(palisade *p)
{
	int32_t status;
	uint8_t out[16];
	size_t out_len = sizeof(out);

	EXPECT(echo(p, "before restart"), 0);
	ask("RESTART");
	/* The idle connection died with the old daemon; the request is sent again on a new one. */
	EXPECT(echo(p, "after restart"), 0);
	EXPECT(sign_ec(p, NULL), 0);
	ask("STOP");
	EXPECT(palisade_call(p, handle, NULL, 0, &status, out, &out_len), -PALISADE_E_CONNECT);
	EXPECT(sign_ec(p, NULL), -PALISADE_E_CONNECT);
	ask("START");
	EXPECT(echo(p, "after start"), 0);
	EXPECT(sign_ec(p, NULL), 0);
}

/* ---- a daemon that hangs ---- */

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/*
 * A daemon hung long enough that its queue of connections is full: connect() itself would
 * block. A listener that never accepts stands in for it (filling a real daemon's queue takes
 * thousands of connections). With a timeout, palisade_open gives up.
 */
static void test_connect_timeout(void)
{
	char path[108];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int lfd, q[4], nq = 0;
	palisade *p = NULL;
	long long t0, took;

	snprintf(path, sizeof(path), "%s/full.sock", env("T_FAKE_DIR"));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 0) != 0) {
		fprintf(stderr, "full listener: %s\n", strerror(errno));
		failures++;
		return;
	}
	/* Fill the queue without blocking: non-blocking connects until one would wait. */
	for (; nq < 4; nq++) {
		q[nq] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (connect(q[nq], (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			close(q[nq]);
			break;
		}
	}
	CHECK(nq < 4, "the listener's queue never filled (%d connections)", nq);
	setenv("PALISADE_TIMEOUT_MS", "300", 1);
	t0 = now_ms();
	EXPECT(palisade_open(&p, path), -PALISADE_E_NO_ANSWER);
	took = now_ms() - t0;
	unsetenv("PALISADE_TIMEOUT_MS");
	CHECK(took >= 290 && took < 5000, "connect to a full queue: gave up after %lld ms", took);
	CHECK(strstr(palisade_last_message(), "accepted no connection") != NULL, "message: %s",
	      palisade_last_message());
	palisade_close(p);
	while (nq > 0)
		close(q[--nq]);
	close(lfd);
	unlink(path);
}

/*
 * The real daemon stopped with SIGSTOP (FREEZE): a handle with a timeout, set by
 * palisade_set_timeout or by $PALISADE_TIMEOUT_MS, gives up with PALISADE_E_NO_ANSWER after
 * about that long, and works again once the daemon runs (THAW). A malformed
 * $PALISADE_TIMEOUT_MS is refused by palisade_open.
 */
static void test_timeout(void)
{
	palisade *a = NULL, *b = NULL, *bad = NULL;
	long long t0, took;

	EXPECT(palisade_open(&a, NULL), 0);
	EXPECT(palisade_set_timeout(a, 300), 0);
	EXPECT(palisade_set_timeout(NULL, 300), -PALISADE_E_ARG);
	setenv("PALISADE_TIMEOUT_MS", "200", 1);
	EXPECT(palisade_open(&b, NULL), 0);
	setenv("PALISADE_TIMEOUT_MS", "12ms", 1);
	EXPECT(palisade_open(&bad, NULL), -PALISADE_E_ARG);
	CHECK(strstr(palisade_last_message(), "PALISADE_TIMEOUT_MS=12ms") != NULL, "message: %s",
	      palisade_last_message());
	unsetenv("PALISADE_TIMEOUT_MS");
	if (!a || !b)
		return;
	EXPECT(echo(a, "before freeze"), 0);
	ask("FREEZE");
	t0 = now_ms();
	EXPECT(echo(a, "frozen"), -PALISADE_E_NO_ANSWER);
	took = now_ms() - t0;
	/* Bounds wide enough for a loaded machine: the point is that it returns, and not at once. */
	CHECK(took >= 290 && took < 5000, "set_timeout(300): gave up after %lld ms", took);
	CHECK(strstr(palisade_last_message(), "within 300 ms") != NULL, "message: %s", palisade_last_message());
	t0 = now_ms();
	EXPECT(sign_ec(b, NULL), -PALISADE_E_NO_ANSWER);
	took = now_ms() - t0;
	CHECK(took >= 190 && took < 5000, "PALISADE_TIMEOUT_MS=200: gave up after %lld ms", took);
	ask("THAW");
	/* The connection was dropped: the next request reconnects and gets its own answer. */
	EXPECT(echo(a, "after thaw"), 0);
	EXPECT(sign_ec(b, NULL), 0);
	palisade_close(a);
	palisade_close(b);
	test_connect_timeout();
}

/* ---- a fake daemon for the faults a real one does not make ---- */

enum fault {
	F_VERSION,
	F_HUGE,
	F_CLOSE,
	F_WRONG_ID,
	F_SHORT_BODY,
	F_OUTPUT_BEYOND_BODY,
	F_BUSY,
	F_UNKNOWN_CODE,
	F_BAD_ERROR_BODY,
	F_TOO_MANY_CERTS,
	F_TRAILING,
	NFAULTS
};

static const int fault_want[NFAULTS] = {
	[F_VERSION] = -PALISADE_E_PROTOCOL,
	[F_HUGE] = -PALISADE_E_PROTOCOL,
	[F_CLOSE] = -PALISADE_E_IO,
	[F_WRONG_ID] = -PALISADE_E_PROTOCOL,
	[F_SHORT_BODY] = -PALISADE_E_IO,
	[F_OUTPUT_BEYOND_BODY] = -PALISADE_E_PROTOCOL,
	[F_BUSY] = -PALISADE_E_BUSY,
	[F_UNKNOWN_CODE] = -PALISADE_E_PROTOCOL,
	[F_BAD_ERROR_BODY] = -PALISADE_E_PROTOCOL,
	[F_TOO_MANY_CERTS] = -PALISADE_E_PROTOCOL,
	[F_TRAILING] = -PALISADE_E_PROTOCOL,
};

struct fake {
	int lfd;
};

static void le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void *fake_daemon(void *arg)
{
	struct fake *f = arg;

	for (int i = 0; i < NFAULTS; i++) {
		uint8_t req[4096] = {0}, resp[64];
		size_t n = 0;
		int c = accept(f->lfd, NULL, NULL);

		if (c < 0)
			return NULL;
		if (i != F_BUSY) {
			ssize_t k = recv(c, req, sizeof(req), 0); /* the whole (small) request */

			if (k < 12) {
				close(c);
				continue;
			}
		}
		uint8_t op = req[1] | 0x80;
		/* A default well-formed header echoing the request. */
		resp[0] = 1;
		resp[1] = op;
		resp[2] = resp[3] = 0;
		memcpy(resp + 4, req + 4, 4);
		switch (i) {
		case F_VERSION:
			resp[0] = 2;
			le32(resp + 8, 0);
			n = 12;
			break;
		case F_HUGE:
			le32(resp + 8, 0xfffffff0);
			n = 12;
			break;
		case F_CLOSE:
			break;
		case F_WRONG_ID:
			le32(resp + 4, 999);
			le32(resp + 8, 0);
			n = 12;
			break;
		case F_SHORT_BODY:
			le32(resp + 8, 10);
			memset(resp + 12, 0, 4);
			n = 16;
			break;
		case F_OUTPUT_BEYOND_BODY: /* status 0, output of 1000 bytes, none there */
			le32(resp + 8, 8);
			le32(resp + 12, 0);
			le32(resp + 16, 1000);
			n = 20;
			break;
		case F_BUSY: /* as the daemon refuses a connection: before the request, id 0 */
			resp[1] = 0x80;
			resp[2] = 5;
			le32(resp + 4, 0);
			le32(resp + 8, 8);
			le32(resp + 12, 4);
			memcpy(resp + 16, "full", 4);
			n = 20;
			break;
		case F_UNKNOWN_CODE:
			resp[2] = 0x2c;
			resp[3] = 0x01; /* 300 */
			le32(resp + 8, 4);
			le32(resp + 12, 0);
			n = 16;
			break;
		case F_BAD_ERROR_BODY: /* code NOT_FOUND, message length beyond the body */
			resp[2] = 7;
			le32(resp + 8, 4);
			le32(resp + 12, 50);
			n = 16;
			break;
		case F_TOO_MANY_CERTS: /* alg "x", flags, public {1}, 17 certificates */
			le32(resp + 8, 18);
			le32(resp + 12, 1);
			resp[16] = 'x';
			le32(resp + 17, 0);
			le32(resp + 21, 1);
			resp[25] = 1;
			le32(resp + 26, 17);
			n = 30;
			break;
		case F_TRAILING: /* a signature response with a byte after it */
			le32(resp + 8, 6);
			le32(resp + 12, 1);
			resp[16] = 0x30;
			resp[17] = 0;
			n = 18;
			break;
		}
		if (n)
			send(c, resp, n, MSG_NOSIGNAL);
		if (i == F_SHORT_BODY || i == F_BUSY)
			usleep(10000);
		close(c);
	}
	/* Then every code the daemon sends, each with the message "code N", on one connection
	 * while the client keeps it (it drops it after MALFORMED, VERSION, TOO_LARGE, BUSY). */
	int c = -1;

	for (int code = 1; code <= 24; code++) {
		uint8_t req[4096], resp[64];
		int n;

		for (;;) {
			if (c < 0 && (c = accept(f->lfd, NULL, NULL)) < 0)
				return NULL;
			if (recv(c, req, sizeof(req), 0) >= 12)
				break;
			close(c);
			c = -1;
		}
		n = snprintf((char *)resp + 16, sizeof(resp) - 16, "code %d", code);
		resp[0] = 1;
		resp[1] = req[1] | 0x80;
		resp[2] = (uint8_t)code;
		resp[3] = 0;
		memcpy(resp + 4, req + 4, 4);
		le32(resp + 8, (uint32_t)(4 + n));
		le32(resp + 12, (uint32_t)n);
		send(c, resp, 16 + (size_t)n, MSG_NOSIGNAL);
	}
	if (c >= 0)
		close(c);
	return NULL;
}

static void test_faults(void)
{
	char path[108];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct fake f;
	pthread_t t;
	palisade *p = NULL;
	palisade_key *k = NULL;
	uint8_t out[16];
	size_t out_len;
	int32_t status;

	snprintf(path, sizeof(path), "%s/fake.sock", env("T_FAKE_DIR"));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	f.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f.lfd < 0 || bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(f.lfd, 4) != 0) {
		fprintf(stderr, "fake daemon: %s\n", strerror(errno));
		failures++;
		return;
	}
	pthread_create(&t, NULL, fake_daemon, &f);
	EXPECT(palisade_open(&p, path), 0);
	for (int i = 0; i < NFAULTS && p; i++) {
		int r;

		out_len = sizeof(out);
		if (i == F_TOO_MANY_CERTS) {
			r = palisade_key_find(p, "k", &k);
		} else if (i == F_TRAILING) {
			r = palisade_sign(p, "k", PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest, 32, NULL, 0,
					  out, &out_len);
		} else {
			r = palisade_call(p, "pal-1", NULL, 0, &status, out, &out_len);
		}
		CHECK(r == fault_want[i], "fault %d: %d (%s), want %d (%s)", i, r, palisade_strerror(r),
		      fault_want[i], palisade_strerror(fault_want[i]));
		CHECK(palisade_last_message()[0] != 0, "fault %d: no message", i);
	}
	for (int code = 1; code <= 24 && p; code++) {
		char want[32];
		int r;

		out_len = sizeof(out);
		r = palisade_call(p, "pal-1", NULL, 0, &status, out, &out_len);
		snprintf(want, sizeof(want), "code %d", code);
		CHECK(r == -code && strcmp(palisade_last_message(), want) == 0 &&
			      strcmp(palisade_strerror(r), "unknown error") != 0,
		      "daemon code %d: %d (%s), message %s", code, r, palisade_strerror(r), palisade_last_message());
	}
	pthread_join(t, NULL);
	palisade_close(p);
	close(f.lfd);
	unlink(path);
}

int main(void)
{
	palisade *p = NULL;

	handle = env("T_HANDLE");
	key = env("T_KEY");
	pin_key = env("T_PIN_KEY");
	create_key = env("T_CREATE_KEY");
	env("PALISADE_SOCKET");

	test_open();
	if (palisade_open(&p, NULL) != 0) {
		fprintf(stderr, "cannot open: %s\n", palisade_last_message());
		return 1;
	}
	test_call(p);
	test_keys(p);
	test_create(p);
	test_threads(p);
	test_fork(p);
	test_restart(p);
	test_timeout();
	test_faults();
	palisade_close(p);
	if (failures) {
		fprintf(stderr, "test_palisade: %d checks failed\n", failures);
		return 1;
	}
	fprintf(stderr, "test_palisade: all checks passed\n");
	return 0;
}
