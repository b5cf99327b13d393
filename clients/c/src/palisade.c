// SPDX-License-Identifier: Apache-2.0
/*
 * libpalisade: the lean protocol (docs/protocol.md) from C.
 *
 * Layout of a handle: struct palisade holds the socket path and an atomic pointer to the
 * connection state (fd, lock, next request id) of the process that uses it. A fork() child
 * handler only bumps fork_generation; the first request of a child sees that the state
 * belongs to another generation, installs a fresh state with its own connection, and closes
 * (never shuts down) the inherited descriptor. The parent's state is abandoned in the child,
 * not freed: its lock may have been held by a thread that does not exist in the child, and
 * another thread of the child may still be reading the pointer.
 *
 * Every read of a response body goes through struct reader (rd_*), which checks each length
 * against what is left before use.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "palisade-client.h"

#define API __attribute__((visibility("default")))

/* Protocol constants (docs/protocol.md §2-§4). */
enum {
	HEADER_SIZE = 12,
	MAX_BODY = 4 << 20,
	MAX_NAME = 256,
	MAX_MESSAGE = 1024,
	MAX_PIN = 256,
	MAX_DIGEST = 4 << 10,
	MAX_ALG = 32,
	MAX_PUBLIC = 4 << 10,
	MAX_CERT = 64 << 10,
	MAX_CERTS = 16,
	MAX_FOUND = 4096,
	RESP_BIT = 0x80,
	OP_CALL = 0x02,
	OP_SIGN = 0x03,
	OP_KEY_INFO = 0x04,
	OP_FIND = 0x05,
	OP_KEY_CREATE = 0x06,
	CODE_BUSY = 5,
	MAX_DAEMON_CODE = 99,
};

struct conn_state {
	pthread_mutex_t mu;
	int fd;               /* -1: not connected */
	unsigned timeout_set; /* the fd's SO_RCVTIMEO/SO_SNDTIMEO, ms (apply_timeout) */
	unsigned generation;
	uint32_t next_id;
};

struct palisade {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	_Atomic(struct conn_state *) st;
	atomic_uint timeout_ms; /* 0: wait as long as it takes */
};

struct palisade_key {
	char name[MAX_NAME + 1];
	char alg[MAX_ALG + 1];
	uint32_t flags;
	uint8_t *body; /* the response body; public and certs point into it */
	const uint8_t *pub;
	size_t pub_len;
	size_t ncerts;
	const uint8_t *cert[MAX_CERTS];
	size_t cert_len[MAX_CERTS];
};

static atomic_uint fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Runs in the child of fork(): async-signal-safe, touches nothing but a counter. */
static void atfork_child(void)
{
	atomic_fetch_add(&fork_generation, 1);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

/* ---- errors ---- */

static __thread char last_message[MAX_MESSAGE + 1];

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_message, sizeof(last_message), fmt, ap);
	va_end(ap);
	return -code;
}

static const char *const messages[] = {
	[PALISADE_OK] = "success",
	[PALISADE_E_MALFORMED] = "the daemon could not decode the request",
	[PALISADE_E_VERSION] = "the daemon speaks another protocol version",
	[PALISADE_E_UNKNOWN_OP] = "the daemon does not know the operation",
	[PALISADE_E_TOO_LARGE] = "request larger than the protocol allows",
	[PALISADE_E_BUSY] = "the daemon has too many connections",
	[PALISADE_E_PERMISSION] = "permission denied",
	[PALISADE_E_NOT_FOUND] = "no such PAL",
	[PALISADE_E_TIMEOUT] = "the PAL call timed out",
	[PALISADE_E_TRAP] = "the PAL trapped",
	[PALISADE_E_OUT_OF_MEMORY] = "the PAL exhausted its memory limit",
	[PALISADE_E_INPUT_TOO_LARGE] = "input exceeds the PAL's limit",
	[PALISADE_E_OUTPUT_TOO_LARGE] = "output exceeds the PAL's limit",
	[PALISADE_E_UNAVAILABLE] = "the daemon or the PAL is unavailable",
	[PALISADE_E_CANCELED] = "the call was canceled",
	[PALISADE_E_INVALID] = "invalid argument",
	[PALISADE_E_INTERNAL] = "internal error in the daemon",
	[PALISADE_E_KEY_NOT_FOUND] = "no such key",
	[PALISADE_E_PIN_REQUIRED] = "the key needs a PIN",
	[PALISADE_E_PIN_INCORRECT] = "incorrect PIN",
	[PALISADE_E_LOCKED] = "the key is locked after too many incorrect PINs",
	[PALISADE_E_REFUSED] = "the signing PAL refused",
	[PALISADE_E_KEY_UNAVAILABLE] = "the key cannot be used",
	[PALISADE_E_NO_KEYS] = "the daemon serves no keys",
	[PALISADE_E_NOT_SUPPORTED] = "not supported by the PAL's engine",
	[PALISADE_E_KEY_EXISTS] = "a key of that name exists",
	[PALISADE_E_ARG] = "bad argument",
	[PALISADE_E_PATH] = "socket path empty or too long (108 bytes or more)",
	[PALISADE_E_CONNECT] = "cannot connect to palisaded",
	[PALISADE_E_IO] = "connection to palisaded lost during the request (it may have been done)",
	[PALISADE_E_PROTOCOL] = "malformed answer from palisaded",
	[PALISADE_E_NOMEM] = "out of memory",
	[PALISADE_E_BUFFER_TOO_SMALL] = "buffer too small",
	[PALISADE_E_NO_ANSWER] = "no answer from palisaded within the handle's timeout (the request may have been done)",
};

API const char *palisade_strerror(int err)
{
	if (err < 0)
		err = -err;
	if ((size_t)err < sizeof(messages) / sizeof(messages[0]) && messages[err])
		return messages[err];
	return "unknown error";
}

API const char *palisade_last_message(void)
{
	return last_message;
}

/* ---- the bounded reader ---- */

struct reader {
	const uint8_t *p;
	size_t len; /* bytes left */
	int bad;
};

/* rd_take returns the next n bytes, or NULL (and marks the reader bad) if fewer are left. */
static const uint8_t *rd_take(struct reader *r, size_t n)
{
	const uint8_t *v;

	if (r->bad || n > r->len) {
		r->bad = 1;
		r->len = 0;
		return NULL;
	}
	v = r->p;
	r->p += n;
	r->len -= n;
	return v;
}

static uint32_t rd_u32(struct reader *r)
{
	const uint8_t *b = rd_take(r, 4);

	return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0;
}

/* rd_bytes reads u32 len ‖ bytes with len ≤ max. */
static const uint8_t *rd_bytes(struct reader *r, size_t max, size_t *len)
{
	uint32_t n = rd_u32(r);
	const uint8_t *b;

	*len = 0;
	if (r->bad)
		return NULL;
	if (n > max) {
		r->bad = 1;
		return NULL;
	}
	b = rd_take(r, n);
	if (b)
		*len = n;
	return b;
}

/* rd_cstring reads a string of at most max bytes without control characters into dst
 * (capacity max + 1), NUL-terminated. */
static void rd_cstring(struct reader *r, char *dst, size_t max)
{
	size_t n, i;
	const uint8_t *b = rd_bytes(r, max, &n);

	dst[0] = 0;
	if (!b)
		return;
	for (i = 0; i < n; i++) {
		if (b[i] < 0x20 || b[i] == 0x7f) {
			r->bad = 1;
			return;
		}
	}
	memcpy(dst, b, n);
	dst[n] = 0;
}

/* rd_done: 0 if the whole body was read without error. */
static int rd_done(const struct reader *r)
{
	return r->bad || r->len != 0 ? -1 : 0;
}

/* ---- the writer ---- */

struct writer {
	uint8_t *b;
	size_t len, cap;
};

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* w_init allocates a body of exactly cap bytes (the caller sums field sizes in size_t after
 * checking each against its limit, so cap cannot overflow). */
static int w_init(struct writer *w, size_t cap)
{
	w->b = malloc(cap ? cap : 1);
	w->len = 0;
	w->cap = cap;
	return w->b ? 0 : fail(PALISADE_E_NOMEM, "cannot allocate a request of %zu bytes", cap);
}

static void w_put(struct writer *w, const void *p, size_t n)
{
	if (n > w->cap - w->len)
		abort(); /* a sizing bug in this file: never send a short request */
	if (n)
		memcpy(w->b + w->len, p, n);
	w->len += n;
}

static void w_u16(struct writer *w, uint16_t v)
{
	uint8_t b[2];

	put_u16(b, v);
	w_put(w, b, 2);
}

static void w_u32(struct writer *w, uint32_t v)
{
	uint8_t b[4];

	put_u32(b, v);
	w_put(w, b, 4);
}

static void w_u64(struct writer *w, uint64_t v)
{
	w_u32(w, (uint32_t)v);
	w_u32(w, (uint32_t)(v >> 32));
}

static void w_bytes(struct writer *w, const void *p, size_t n)
{
	w_u32(w, (uint32_t)n);
	w_put(w, p, n);
}

/* ---- connections ---- */

static int check_path(const char *path)
{
	size_t n;

	if (!path)
		return fail(PALISADE_E_PATH, "no socket path");
	n = strnlen(path, sizeof(((struct sockaddr_un *)0)->sun_path));
	if (n == 0 || n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return fail(PALISADE_E_PATH, "socket path must be 1 to %zu bytes",
			    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	return 0;
}

/* set_timeouts gives fd's blocking sends and receives, and connect(), a limit of ms (0: none). */
static int set_timeouts(int fd, unsigned ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		return -errno;
	return 0;
}

/* dial connects to path. With a timeout, it is set before connect(): a daemon that hangs
 * stops accepting, its listen queue fills up, and a Unix socket's connect() then blocks
 * until SO_SNDTIMEO. */
static int dial(const char *path, int *fd_out, unsigned timeout)
{
	struct sockaddr_un sa;
	int fd, err;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path)); /* checked by check_path */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(PALISADE_E_CONNECT, "socket: %s", strerror(errno));
	if (timeout && (err = set_timeouts(fd, timeout)) != 0) {
		close(fd);
		return fail(PALISADE_E_CONNECT, "socket timeouts: %s", strerror(-err));
	}
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		if (errno == EINTR)
			continue;
		err = errno;
		close(fd);
		if (err == EAGAIN || err == EWOULDBLOCK)
			return fail(PALISADE_E_NO_ANSWER, "palisaded at %s accepted no connection within "
				    "%u ms (its queue of connections is full: is it hung?)", path, timeout);
		return fail(PALISADE_E_CONNECT, "cannot reach palisaded at %s: %s (is it running? "
			    "is the lean protocol on?)", path, strerror(err));
	}
	*fd_out = fd;
	return 0;
}

static struct conn_state *state_new(unsigned generation)
{
	struct conn_state *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (pthread_mutex_init(&s->mu, NULL) != 0) {
		free(s);
		return NULL;
	}
	s->fd = -1;
	s->generation = generation;
	s->next_id = 1;
	return s;
}

/* state_of returns the connection state of the calling process, replacing an inherited one. */
static struct conn_state *state_of(palisade *p)
{
	unsigned gen = atomic_load(&fork_generation);
	struct conn_state *s = atomic_load(&p->st), *ns;

	while (s->generation != gen) {
		ns = state_new(gen);
		if (!ns)
			return NULL;
		if (atomic_compare_exchange_strong(&p->st, &s, ns)) {
			/* Close, never shutdown: the parent still uses the connection. The old state is
			 * left allocated (see the top of this file). */
			if (s->fd >= 0)
				close(s->fd);
			return ns;
		}
		pthread_mutex_destroy(&ns->mu);
		free(ns); /* another thread of the child installed one: s is now it */
	}
	return s;
}

static void disconnect(struct conn_state *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/* apply_timeout makes each blocking send and receive on s's connection give up after ms
 * (SO_SNDTIMEO, SO_RCVTIMEO; 0: never), once per connection and value rather than a poll()
 * per wait: a request is one send and two or three receives, and on these machines every
 * system call counts. So the bound is on each wait for the daemon, not on the request as a
 * whole: a daemon that hangs fails the request after ms; one that trickles bytes could take
 * longer. */
static int apply_timeout(struct conn_state *s, unsigned ms)
{
	int r;

	if (s->timeout_set == ms)
		return 0;
	if ((r = set_timeouts(s->fd, ms)) != 0)
		return r;
	s->timeout_set = ms;
	return 0;
}

/* send_all writes the header and the body; *sent says whether any byte went out. */
static int send_all(int fd, const uint8_t *hdr, const uint8_t *body, size_t body_len, int *sent)
{
	struct iovec iov[2] = {{(void *)hdr, HEADER_SIZE}, {(void *)body, body_len}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
	ssize_t n;

	*sent = 0;
	while (iov[0].iov_len + iov[1].iov_len > 0) {
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
		*sent = 1;
		for (int i = 0; i < 2 && n > 0; i++) {
			size_t k = (size_t)n < iov[i].iov_len ? (size_t)n : iov[i].iov_len;

			iov[i].iov_base = (uint8_t *)iov[i].iov_base + k;
			iov[i].iov_len -= k;
			n -= (ssize_t)k;
		}
		if (iov[0].iov_len == 0) {
			msg.msg_iov = &iov[1];
			msg.msg_iovlen = 1;
		}
	}
	return 0;
}

/* recv_all reads exactly n bytes: 0, or -errno, or -EPIPE at end of stream, or -ETIMEDOUT
 * when the connection's timeout (apply_timeout) passed with nothing to read. */
static int recv_all(int fd, uint8_t *b, size_t n)
{
	ssize_t k;

	while (n > 0) {
		k = recv(fd, b, n, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
		if (k == 0)
			return -EPIPE;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* read_failed is the error of a request whose answer could not be read (r from recv_all). An
 * answer that did not come in time is PALISADE_E_NO_ANSWER; the caller drops the connection
 * either way, so that a late answer is never read as the next request's. */
static int read_failed(palisade *p, int r, unsigned timeout)
{
	if (r == -ETIMEDOUT)
		return fail(PALISADE_E_NO_ANSWER, "no answer from palisaded at %s within %u ms (the "
			    "request may have been done; the connection is dropped)", p->path, timeout);
	return fail(PALISADE_E_IO, "reading from palisaded at %s: %s", p->path,
		    r == -EPIPE ? "connection closed" : strerror(-r));
}

/*
 * round_trip sends one request and reads its response. On success *body (malloc'd, the
 * caller frees) and *body_len hold the response body and the return value is 0 or the
 * daemon's error code, negated, with last_message set from the error body.
 */
static int round_trip(palisade *p, uint8_t op, const uint8_t *req, size_t req_len, uint8_t **body,
		      size_t *body_len)
{
	struct conn_state *s;
	uint8_t hdr[HEADER_SIZE], rh[HEADER_SIZE];
	uint32_t id, len;
	uint16_t code;
	int r, sent, fresh, attempt;
	uint8_t *b = NULL;
	unsigned timeout = atomic_load(&p->timeout_ms);

	*body = NULL;
	*body_len = 0;
	last_message[0] = 0;
	if (req_len > MAX_BODY)
		return fail(PALISADE_E_TOO_LARGE, "request of %zu bytes (the lean protocol allows %d)",
			    req_len, MAX_BODY);
	s = state_of(p);
	if (!s)
		return fail(PALISADE_E_NOMEM, "cannot allocate a connection");
	pthread_mutex_lock(&s->mu);
	for (attempt = 0;; attempt++) {
		fresh = s->fd < 0;
		if (fresh && (r = dial(p->path, &s->fd, timeout)) != 0)
			goto out;
		if (fresh)
			s->timeout_set = timeout; /* dial set it */
		if ((r = apply_timeout(s, timeout)) != 0) {
			r = fail(PALISADE_E_IO, "setting the timeout of the connection to palisaded: %s",
				 strerror(-r));
			goto out_disconnect;
		}
		id = s->next_id++;
		hdr[0] = PALISADE_PROTOCOL_VERSION;
		hdr[1] = op;
		put_u16(hdr + 2, 0);
		put_u32(hdr + 4, id);
		put_u32(hdr + 8, (uint32_t)req_len);
		r = send_all(s->fd, hdr, req, req_len, &sent);
		if (r == 0)
			break;
		disconnect(s);
		if (r == -ETIMEDOUT) {
			r = fail(PALISADE_E_NO_ANSWER, "palisaded at %s took no request for %u ms", p->path, timeout);
			goto out;
		}
		/* Nothing reached a daemon that closed this connection (a restart): send again once
		 * on a new connection. */
		if (!sent && !fresh && attempt == 0)
			continue;
		r = fail(PALISADE_E_IO, "sending to palisaded at %s: %s", p->path, strerror(-r));
		goto out;
	}
	if ((r = recv_all(s->fd, rh, HEADER_SIZE)) != 0) {
		r = read_failed(p, r, timeout);
		goto out_disconnect;
	}
	code = (uint16_t)(rh[2] | rh[3] << 8);
	len = (uint32_t)rh[8] | (uint32_t)rh[9] << 8 | (uint32_t)rh[10] << 16 | (uint32_t)rh[11] << 24;
	{
		uint32_t rid = (uint32_t)rh[4] | (uint32_t)rh[5] << 8 | (uint32_t)rh[6] << 16 |
			       (uint32_t)rh[7] << 24;
		/* A daemon refusing a connection (BUSY) answers before reading: op 0x80, id 0. */
		int busy = code == CODE_BUSY && rid == 0;

		if (rh[0] != PALISADE_PROTOCOL_VERSION || len > MAX_BODY ||
		    (!busy && (rh[1] != (op | RESP_BIT) || rid != id))) {
			r = fail(PALISADE_E_PROTOCOL, "bad response header (version %u, op %#x, id %u, "
				 "length %u) to request %u op %#x", rh[0], rh[1], rid, len, id, op);
			goto out_disconnect;
		}
	}
	b = malloc(len ? len : 1);
	if (!b) {
		r = fail(PALISADE_E_NOMEM, "cannot allocate a response of %u bytes", len);
		goto out_disconnect;
	}
	if ((r = recv_all(s->fd, b, len)) != 0) {
		r = read_failed(p, r, timeout);
		goto out_disconnect;
	}
	if (code != 0) {
		struct reader rd = {b, len, 0};
		size_t n;
		const uint8_t *m = rd_bytes(&rd, MAX_MESSAGE, &n);

		if (!m || rd_done(&rd) != 0) {
			r = fail(PALISADE_E_PROTOCOL, "malformed error body (code %u)", code);
			goto out_disconnect;
		}
		memcpy(last_message, m, n);
		last_message[n] = 0;
		r = code <= MAX_DAEMON_CODE ? -(int)code : fail(PALISADE_E_PROTOCOL, "unknown code %u", code);
		free(b);
		b = NULL;
		/* The daemon closes after these; the next request reconnects. */
		if (code == PALISADE_E_MALFORMED || code == PALISADE_E_VERSION ||
		    code == PALISADE_E_TOO_LARGE || code == CODE_BUSY || code > MAX_DAEMON_CODE)
			disconnect(s);
		goto out;
	}
	*body = b;
	*body_len = len;
	b = NULL;
	r = 0;
	goto out;
out_disconnect:
	disconnect(s);
out:
	free(b);
	pthread_mutex_unlock(&s->mu);
	return r;
}

/* protocol_error drops p's connection after an answer that did not decode: a daemon that
 * sends one is not trusted with the next request. */
static int protocol_error(palisade *p, const char *what)
{
	struct conn_state *s = state_of(p);

	if (s) {
		pthread_mutex_lock(&s->mu);
		disconnect(s);
		pthread_mutex_unlock(&s->mu);
	}
	return fail(PALISADE_E_PROTOCOL, "malformed %s response from palisaded at %s", what, p->path);
}

/* ---- API ---- */

API int palisade_open(palisade **out, const char *socket_path)
{
	char buf[PATH_MAX];
	const char *env;
	palisade *p;
	struct conn_state *s;
	int r, fd;
	unsigned timeout = 0;

	if (!out)
		return fail(PALISADE_E_ARG, "palisade_open: out is NULL");
	*out = NULL;
	pthread_once(&atfork_once, register_atfork);
	if (!socket_path) {
		if ((env = secure_getenv("PALISADE_LEAN_SOCKET")) && *env) {
			socket_path = env;
		} else if ((env = secure_getenv("PALISADE_SOCKET")) && *env) {
			const char *slash = strrchr(env, '/');
			size_t dir = slash ? (size_t)(slash - env) : 0;

			if (dir + sizeof("/lean.sock") > sizeof(buf))
				return fail(PALISADE_E_PATH, "$PALISADE_SOCKET is too long");
			memcpy(buf, env, dir);
			if (slash)
				memcpy(buf + dir, "/lean.sock", sizeof("/lean.sock"));
			else
				memcpy(buf, "lean.sock", sizeof("lean.sock"));
			socket_path = buf;
		} else {
			socket_path = PALISADE_DEFAULT_LEAN_SOCKET;
		}
	}
	if ((r = check_path(socket_path)) != 0)
		return r;
	if ((env = secure_getenv("PALISADE_TIMEOUT_MS")) && *env) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(env, &end, 10);
		if (errno || *end || *env == '-' || v > UINT_MAX)
			return fail(PALISADE_E_ARG, "$PALISADE_TIMEOUT_MS=%s: want a number of milliseconds "
				    "(0: no timeout)", env);
		timeout = (unsigned)v;
	}
	if ((r = dial(socket_path, &fd, timeout)) != 0)
		return r;
	p = calloc(1, sizeof(*p));
	s = state_new(atomic_load(&fork_generation));
	if (!p || !s) {
		close(fd);
		free(p);
		free(s);
		return fail(PALISADE_E_NOMEM, "palisade_open");
	}
	memcpy(p->path, socket_path, strlen(socket_path) + 1);
	s->fd = fd;
	s->timeout_set = timeout;
	atomic_init(&p->st, s);
	atomic_init(&p->timeout_ms, timeout);
	*out = p;
	return 0;
}

API int palisade_set_timeout(palisade *p, unsigned ms)
{
	if (!p)
		return fail(PALISADE_E_ARG, "palisade_set_timeout: p is NULL");
	atomic_store(&p->timeout_ms, ms);
	return 0;
}

API void palisade_close(palisade *p)
{
	struct conn_state *s;

	if (!p)
		return;
	s = atomic_load(&p->st);
	if (s->generation == atomic_load(&fork_generation)) {
		disconnect(s);
		pthread_mutex_destroy(&s->mu);
		free(s);
	} else if (s->fd >= 0) {
		close(s->fd); /* inherited: close our descriptor, leave the parent's lock alone */
	}
	free(p);
}

/* parse_handle reads "pal-" followed by 1 to 16 hex digits. */
static int parse_handle(const char *h, uint64_t *v)
{
	size_t i, n;

	if (!h || strncmp(h, "pal-", 4) != 0)
		return fail(PALISADE_E_ARG, "PAL handle must be pal- and hex digits");
	h += 4;
	n = strnlen(h, 17);
	if (n == 0 || n > 16)
		return fail(PALISADE_E_ARG, "PAL handle must be pal- and 1 to 16 hex digits");
	*v = 0;
	for (i = 0; i < n; i++) {
		char c = h[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return fail(PALISADE_E_ARG, "PAL handle holds %#x, not a hex digit", (unsigned char)c);
		*v = *v << 4 | d;
	}
	return 0;
}

/* copy_out copies n bytes to out (capacity *out_len), the size query convention. */
static int copy_out(const uint8_t *src, size_t n, void *out, size_t *out_len)
{
	size_t cap = *out_len;

	*out_len = n;
	if (!out || cap < n)
		return fail(PALISADE_E_BUFFER_TOO_SMALL, "%zu bytes needed, buffer has %zu", n, out ? cap : 0);
	if (n)
		memcpy(out, src, n);
	return 0;
}

API int palisade_call(palisade *p, const char *handle, const void *input, size_t input_len,
		      int32_t *status, void *out, size_t *out_len)
{
	struct writer w;
	struct reader rd;
	uint64_t h = 0;
	uint8_t *body;
	size_t body_len, n;
	const uint8_t *o;
	uint32_t st;
	int r;

	if (!p || !status || !out_len || (!input && input_len))
		return fail(PALISADE_E_ARG, "palisade_call: NULL argument");
	if ((r = parse_handle(handle, &h)) != 0)
		return r;
	if (input_len > MAX_BODY - 12)
		return fail(PALISADE_E_TOO_LARGE, "input of %zu bytes (the lean protocol allows %d)",
			    input_len, MAX_BODY - 12);
	if ((r = w_init(&w, 12 + input_len)) != 0)
		return r;
	w_u64(&w, h);
	w_bytes(&w, input, input_len);
	r = round_trip(p, OP_CALL, w.b, w.len, &body, &body_len);
	free(w.b);
	if (r != 0)
		return r;
	rd = (struct reader){body, body_len, 0};
	st = rd_u32(&rd);
	o = rd_bytes(&rd, MAX_BODY, &n);
	if (rd_done(&rd) != 0) {
		free(body);
		return protocol_error(p, "call");
	}
	*status = (int32_t)st;
	r = copy_out(o, n, out, out_len);
	free(body);
	return r;
}

/* check_name checks a key name or prefix: at most MAX_NAME bytes, no control characters. */
static int check_name(const char *name, int allow_empty, size_t *len)
{
	size_t i;

	if (!name)
		name = "";
	*len = strnlen(name, MAX_NAME + 1);
	if (*len > MAX_NAME)
		return fail(PALISADE_E_ARG, "key name longer than %d bytes", MAX_NAME);
	if (*len == 0 && !allow_empty)
		return fail(PALISADE_E_ARG, "empty key name");
	for (i = 0; i < *len; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return fail(PALISADE_E_ARG, "key name holds control character %#x", (unsigned char)name[i]);
	return 0;
}

API int palisade_sign(palisade *p, const char *name, uint16_t scheme, uint16_t hash,
		      const void *digest, size_t digest_len, const void *pin, size_t pin_len,
		      void *sig, size_t *sig_len)
{
	struct writer w;
	struct reader rd;
	uint8_t *body;
	size_t body_len, nlen, n;
	const uint8_t *s;
	int r;

	if (!p || !name || !sig_len || (!digest && digest_len) || (!pin && pin_len))
		return fail(PALISADE_E_ARG, "palisade_sign: NULL argument");
	if ((r = check_name(name, 0, &nlen)) != 0)
		return r;
	if (digest_len > MAX_DIGEST || pin_len > MAX_PIN)
		return fail(PALISADE_E_ARG, "digest of %zu bytes (max %d) or PIN of %zu bytes (max %d)",
			    digest_len, MAX_DIGEST, pin_len, MAX_PIN);
	if ((r = w_init(&w, 4 + nlen + 4 + 4 + digest_len + 4 + pin_len)) != 0)
		return r;
	w_bytes(&w, name, nlen);
	w_u16(&w, scheme);
	w_u16(&w, hash);
	w_bytes(&w, digest, digest_len);
	w_bytes(&w, pin, pin_len);
	r = round_trip(p, OP_SIGN, w.b, w.len, &body, &body_len);
	explicit_bzero(w.b, w.len); /* it held the PIN */
	free(w.b);
	if (r != 0)
		return r;
	rd = (struct reader){body, body_len, 0};
	s = rd_bytes(&rd, PALISADE_MAX_SIGNATURE, &n);
	if (rd_done(&rd) != 0) {
		free(body);
		return protocol_error(p, "sign");
	}
	r = copy_out(s, n, sig, sig_len);
	free(body);
	return r;
}

/*
 * key_of decodes a key-info body (key-info and key-create answer with it) into *out, which
 * takes ownership of body (freed on failure too).
 */
static int key_of(palisade *p, const char *name, size_t nlen, uint8_t *body, size_t body_len,
		  const char *op, palisade_key **out)
{
	struct reader rd;
	palisade_key *k;
	uint32_t ncerts;
	size_t i;

	k = calloc(1, sizeof(*k));
	if (!k) {
		free(body);
		return fail(PALISADE_E_NOMEM, "%s", op);
	}
	k->body = body;
	memcpy(k->name, name, nlen);
	rd = (struct reader){body, body_len, 0};
	rd_cstring(&rd, k->alg, MAX_ALG);
	k->flags = rd_u32(&rd);
	k->pub = rd_bytes(&rd, MAX_PUBLIC, &k->pub_len);
	ncerts = rd_u32(&rd);
	if (ncerts > MAX_CERTS)
		rd.bad = 1;
	for (i = 0; i < ncerts && !rd.bad; i++)
		k->cert[i] = rd_bytes(&rd, MAX_CERT, &k->cert_len[i]);
	k->ncerts = rd.bad ? 0 : ncerts;
	if (rd_done(&rd) != 0 || k->pub_len == 0) {
		palisade_key_free(k);
		return protocol_error(p, op);
	}
	*out = k;
	return 0;
}

API int palisade_key_find(palisade *p, const char *name, palisade_key **out)
{
	struct writer w;
	uint8_t *body;
	size_t body_len, nlen;
	int r;

	if (!p || !name || !out)
		return fail(PALISADE_E_ARG, "palisade_key_find: NULL argument");
	*out = NULL;
	if ((r = check_name(name, 0, &nlen)) != 0)
		return r;
	if ((r = w_init(&w, 4 + nlen)) != 0)
		return r;
	w_bytes(&w, name, nlen);
	r = round_trip(p, OP_KEY_INFO, w.b, w.len, &body, &body_len);
	free(w.b);
	if (r != 0)
		return r;
	return key_of(p, name, nlen, body, body_len, "key-info", out);
}

API int palisade_key_create(palisade *p, const char *name, const char *alg, palisade_key **out)
{
	struct writer w;
	palisade_key *k = NULL;
	uint8_t *body;
	size_t body_len, nlen, alen, i;
	int r;

	if (out)
		*out = NULL;
	if (!p || !name || !alg)
		return fail(PALISADE_E_ARG, "palisade_key_create: NULL argument");
	if ((r = check_name(name, 0, &nlen)) != 0)
		return r;
	/* The daemon judges which algorithms exist (PALISADE_E_INVALID); the library checks only
	 * what the protocol's field allows. */
	alen = strnlen(alg, MAX_ALG + 1);
	if (alen == 0 || alen > MAX_ALG)
		return fail(PALISADE_E_ARG, "algorithm of %zu bytes (1 to %d)", alen, MAX_ALG);
	for (i = 0; i < alen; i++)
		if ((unsigned char)alg[i] < 0x20 || alg[i] == 0x7f)
			return fail(PALISADE_E_ARG, "algorithm holds control character %#x", (unsigned char)alg[i]);
	if ((r = w_init(&w, 4 + nlen + 4 + alen)) != 0)
		return r;
	w_bytes(&w, name, nlen);
	w_bytes(&w, alg, alen);
	r = round_trip(p, OP_KEY_CREATE, w.b, w.len, &body, &body_len);
	free(w.b);
	if (r != 0)
		return r;
	/* The key exists now: a protocol error below does not undo that. */
	if ((r = key_of(p, name, nlen, body, body_len, "key-create", &k)) != 0)
		return r;
	if (out)
		*out = k;
	else
		palisade_key_free(k);
	return 0;
}

API void palisade_key_free(palisade_key *k)
{
	if (!k)
		return;
	free(k->body);
	free(k);
}

API const char *palisade_key_name(const palisade_key *k)
{
	return k ? k->name : NULL;
}

API const char *palisade_key_alg(const palisade_key *k)
{
	return k ? k->alg : NULL;
}

API int palisade_key_has_pin(const palisade_key *k)
{
	return k && (k->flags & 1);
}

API const uint8_t *palisade_key_public(const palisade_key *k, size_t *len)
{
	if (!k || !len)
		return NULL;
	*len = k->pub_len;
	return k->pub;
}

API size_t palisade_key_cert_count(const palisade_key *k)
{
	return k ? k->ncerts : 0;
}

API const uint8_t *palisade_key_cert(const palisade_key *k, size_t i, size_t *len)
{
	if (!k || !len || i >= k->ncerts)
		return NULL;
	*len = k->cert_len[i];
	return k->cert[i];
}

API int palisade_keys_find(palisade *p, const char *prefix,
			   int (*fn)(const char *name, const char *alg, void *arg), void *arg)
{
	struct writer w;
	struct reader rd;
	uint8_t *body;
	size_t body_len, nlen;
	uint32_t n, i;
	char name[MAX_NAME + 1], alg[MAX_ALG + 1];
	int r;

	if (!p || !fn)
		return fail(PALISADE_E_ARG, "palisade_keys_find: NULL argument");
	if ((r = check_name(prefix, 1, &nlen)) != 0)
		return r;
	if ((r = w_init(&w, 4 + nlen)) != 0)
		return r;
	w_bytes(&w, prefix ? prefix : "", nlen);
	r = round_trip(p, OP_FIND, w.b, w.len, &body, &body_len);
	free(w.b);
	if (r != 0)
		return r;
	/* Decode everything before the first callback: a malformed answer calls nobody. */
	rd = (struct reader){body, body_len, 0};
	n = rd_u32(&rd);
	if (n > MAX_FOUND)
		rd.bad = 1;
	for (i = 0; i < n && !rd.bad; i++) {
		rd_cstring(&rd, name, MAX_NAME);
		rd_cstring(&rd, alg, MAX_ALG);
	}
	if (rd_done(&rd) != 0) {
		free(body);
		return protocol_error(p, "find");
	}
	rd = (struct reader){body, body_len, 0};
	n = rd_u32(&rd);
	for (i = 0, r = 0; i < n && r == 0; i++) {
		rd_cstring(&rd, name, MAX_NAME);
		rd_cstring(&rd, alg, MAX_ALG);
		r = fn(name, alg, arg);
	}
	free(body);
	return r;
}
