// SPDX-License-Identifier: Apache-2.0
/*
 * fuzz_response: libFuzzer target for libpalisade's decoding of the daemon's answers (a
 * hostile or broken daemon). The input's first byte picks the operation (call, sign, key-info,
 * find, key-create); the rest is what the "daemon" answers, fed through a socketpair to a handle whose
 * connection is the other end. The library must return a code, never read out of bounds or
 * leak (AddressSanitizer, LeakSanitizer).
 *
 *   make -C clients/c fuzz && build/fuzz_response -max_total_time=20 fuzz/corpus
 *
 * The library is compiled into this file so the harness can hand a handle a connection.
 */
#include "../src/palisade.c"

static int count_keys(const char *name, const char *alg, void *arg)
{
	(void)name;
	(void)alg;
	++*(int *)arg;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	palisade p;
	struct conn_state *s;
	uint8_t out[64], digest[32] = {0};
	size_t out_len = sizeof(out);
	int32_t status;
	palisade_key *k = NULL;
	int n = 0;

	if (size < 1 || size > 60000) /* the answer must fit in the socket buffer */
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	if (size > 1 && send(sv[1], data + 1, size - 1, MSG_NOSIGNAL) != (ssize_t)(size - 1))
		abort();
	shutdown(sv[1], SHUT_WR); /* the daemon says nothing more */
	memset(&p, 0, sizeof(p));
	strcpy(p.path, "/nonexistent/fuzz.sock"); /* a reconnect fails fast */
	s = state_new(atomic_load(&fork_generation));
	if (!s)
		abort();
	s->fd = sv[0];
	atomic_init(&p.st, s);
	switch (data[0] % 5) {
	case 0:
		palisade_call(&p, "pal-1", "x", 1, &status, out, &out_len);
		break;
	case 1:
		palisade_sign(&p, "k", PALISADE_SCHEME_ECDSA, PALISADE_HASH_SHA256, digest, 32, "1", 1, out, &out_len);
		break;
	case 2:
		if (palisade_key_find(&p, "k", &k) == 0) {
			size_t len;

			palisade_key_public(k, &len);
			for (size_t i = 0; i < palisade_key_cert_count(k); i++)
				if (!palisade_key_cert(k, i, &len))
					abort();
			palisade_key_free(k);
		}
		break;
	case 3:
		palisade_keys_find(&p, "", count_keys, &n);
		break;
	case 4:
		if (palisade_key_create(&p, "k", "ecdsa-p256", &k) == 0) {
			size_t len;

			if (!palisade_key_public(k, &len) || len == 0)
				abort();
			palisade_key_free(k);
		}
		break;
	}
	s = atomic_load(&p.st);
	disconnect(s);
	pthread_mutex_destroy(&s->mu);
	free(s);
	close(sv[1]);
	return 0;
}
