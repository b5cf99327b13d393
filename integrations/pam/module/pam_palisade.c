/*
 * pam_palisade.so — a PAM authentication module whose password check runs in a Palisade PAL
 * (docs/ssh.md). The module reads the checking PAL's handle and the sealed verifier database
 * from its state directory (written by `palisade passwd`) and asks the PAL, through palisaded's
 * lean protocol (libpalisade), whether PAM_AUTHTOK is the user's password. The database is in
 * the clear only inside the PAL; lockouts are the PAL's µTPM counters.
 *
 *   auth required pam_palisade.so [socket=/run/palisade/lean.sock] [dir=/var/lib/palisade/pam]
 *                                 [daemon_uid=0] [nodelay] [debug] [use_first_pass|try_first_pass]
 *
 * It runs inside setuid programs (su, sudo) and sshd: paths come only from the pam.d line,
 * never from the environment; the daemon must be running as daemon_uid (SO_PEERCRED), so a
 * daemon a user started cannot answer "yes"; copies of the password are wiped with
 * explicit_bzero; PAM_AUTHTOK itself is never freed nor wiped. Unknown users cost a full
 * Argon2id check in the PAL, as known ones do. Only pam_sm_* are exported (pam_palisade.map).
 * From reading passwd.db to storing the new one it holds an exclusive flock(2) on the state
 * directory, as `palisade passwd` does, so concurrent writers keep each other's changes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define PAM_SM_AUTH
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include "palisade-client.h"

#define DEFAULT_SOCKET "/run/palisade/lean.sock"
#define DEFAULT_DIR "/var/lib/palisade/pam"
#define MAX_DB (256 * 1024)
#define MAX_HANDLE 64
#define MAX_USER 255
#define STATUS_WRONG 4
#define STATUS_LOCKED 5
#define FAIL_DELAY_US 2000000
/* How long a call may get no answer from palisaded before the login fails with
 * PAM_AUTHINFO_UNAVAIL: above the checking PAL's time limit (palisaded's default, 10 s, which
 * `palisade passwd` registers it with), so only a daemon that hangs reaches it. Without a bound
 * a stopped palisaded held su, login and sudo forever (sshd until its LoginGraceTime). */
#define CALL_TIMEOUT_MS 15000
/* How long a login waits for the state's lock (lock_state) before failing the same way. */
#define LOCK_TIMEOUT_MS CALL_TIMEOUT_MS

/* Built -fvisibility=hidden: the entry points are made visible here, and the version script
 * (pam_palisade.map) keeps everything else local. */
#define EXPORT __attribute__((visibility("default")))

struct opts {
	const char *socket;
	const char *dir;
	uid_t daemon_uid;
	int nodelay, debug, authtok_flag;
};

static void parse_opts(pam_handle_t *pamh, int argc, const char **argv, struct opts *o)
{
	o->socket = DEFAULT_SOCKET;
	o->dir = DEFAULT_DIR;
	o->daemon_uid = 0;
	o->nodelay = o->debug = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "socket=", 7) == 0) {
			o->socket = a + 7;
		} else if (strncmp(a, "dir=", 4) == 0) {
			o->dir = a + 4;
		} else if (strncmp(a, "daemon_uid=", 11) == 0) {
			char *end;
			errno = 0;
			unsigned long v = strtoul(a + 11, &end, 10);
			if (errno || *end || end == a + 11 || v > UINT32_MAX)
				pam_syslog(pamh, LOG_ERR, "bad option %s (want a uid)", a);
			else
				o->daemon_uid = (uid_t)v;
		} else if (strcmp(a, "nodelay") == 0) {
			o->nodelay = 1;
		} else if (strcmp(a, "debug") == 0) {
			o->debug = 1;
		} else if (strcmp(a, "use_first_pass") == 0 || strcmp(a, "try_first_pass") == 0) {
			/* pam_get_authtok reads these itself. */
		} else {
			/* As pam_unix: an unknown option is logged, not fatal. */
			pam_syslog(pamh, LOG_ERR, "unknown option: %s", a);
		}
	}
}

/* read_file reads at most max bytes of name in the directory dirfd into a malloc'd buffer. */
static int read_file(int dirfd, const char *name, size_t max, uint8_t **out, size_t *len)
{
	struct stat st;
	int fd, r = -1;
	uint8_t *b = NULL;

	*out = NULL;
	*len = 0;
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 || (size_t)st.st_size > max)
		goto out_close;
	b = malloc((size_t)st.st_size + 1);
	if (!b)
		goto out_close;
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto out_free;
		got += (size_t)n;
	}
	b[got] = 0;
	*out = b;
	*len = got;
	r = 0;
	goto out_close;
out_free:
	free(b);
out_close:
	close(fd);
	return r;
}

/* write_db replaces passwd.db in the directory dirfd with data, atomically (a temporary file
 * renamed over it) and durably (the file, then the directory, synced). */
static int write_db(int dirfd, const uint8_t *data, size_t len)
{
	char tmp[64];
	int fd;

	snprintf(tmp, sizeof(tmp), ".passwd.db.%ld", (long)getpid());
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		done += (size_t)n;
	}
	if (fsync(fd) != 0)
		goto fail;
	close(fd);
	if (renameat(dirfd, tmp, dirfd, "passwd.db") != 0) {
		unlinkat(dirfd, tmp, 0);
		return -1;
	}
	return fsync(dirfd);
fail:
	close(fd);
	unlinkat(dirfd, tmp, 0);
	return -1;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/*
 * lock_state opens the state directory and takes an exclusive flock(2) on it, the lock
 * `palisade passwd` takes too (integrations/pam State.Update); it returns the directory's
 * descriptor (closing it releases the lock), or -1 with errno set (ETIMEDOUT: still locked
 * after LOCK_TIMEOUT_MS). The lock is held from reading passwd.db to storing the database a
 * success after failures returns: without it, a login storing its moved failure baseline and
 * an enrolment (or another login) each store a database derived from the same old one, and
 * one change is lost. A holder keeps it for one call of the checking PAL, but one can be
 * stuck (a `palisade passwd` waiting on a hung palisaded, or stopped with ^Z), so the wait is
 * bounded as the call is: flock has no timeout, hence LOCK_NB polled with a growing sleep.
 */
static int lock_state(const char *dir)
{
	struct timespec t0, pause = { 0, 1000000 };
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			int e = errno;

			close(fd);
			errno = e;
			return -1;
		}
		if (ms_since(&t0) >= LOCK_TIMEOUT_MS) {
			close(fd);
			errno = ETIMEDOUT;
			return -1;
		}
		nanosleep(&pause, NULL);
		if (pause.tv_nsec < 32000000)
			pause.tv_nsec *= 2;
	}
	return fd;
}

/* daemon_is_trusted connects to the socket and checks the peer's uid (SO_PEERCRED). */
static int daemon_is_trusted(pam_handle_t *pamh, const char *path, uid_t want)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	int fd, ok = 0;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		pam_syslog(pamh, LOG_ERR, "socket path of %zu bytes (at most %zu)", strlen(path),
			   sizeof(sa.sun_path) - 1);
		return 0;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		pam_syslog(pamh, LOG_ERR, "cannot reach palisaded at %s: %m", path);
	} else if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
		pam_syslog(pamh, LOG_ERR, "SO_PEERCRED: %m");
	} else if (cred.uid != want) {
		pam_syslog(pamh, LOG_ERR, "the daemon at %s runs as uid %u, not %u: refusing it", path,
			   (unsigned)cred.uid, (unsigned)want);
	} else {
		ok = 1;
	}
	close(fd); /* closed, never shut down */
	return ok;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

EXPORT int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	struct opts o;
	const char *user = NULL, *pw = NULL;
	uint8_t *handle = NULL, *db = NULL, *req = NULL, *out = NULL;
	size_t handle_len, db_len = 0, req_len = 0, out_len;
	palisade *p = NULL;
	int32_t status;
	int r, dirfd = -1, ret = PAM_AUTHINFO_UNAVAIL;

	(void)flags;
	parse_opts(pamh, argc, argv, &o);
	r = pam_get_user(pamh, &user, NULL);
	if (r != PAM_SUCCESS)
		return r == PAM_CONV_AGAIN ? PAM_INCOMPLETE : r;
	if (!user || !*user || user[0] == '-' || user[0] == '+' || strlen(user) > MAX_USER) {
		pam_syslog(pamh, LOG_NOTICE, "bad username");
		return PAM_USER_UNKNOWN;
	}
	if (!o.nodelay)
		pam_fail_delay(pamh, FAIL_DELAY_US);
	r = pam_get_authtok(pamh, PAM_AUTHTOK, &pw, NULL);
	if (r != PAM_SUCCESS)
		return r == PAM_CONV_AGAIN ? PAM_INCOMPLETE : r;
	if (!pw)
		return PAM_AUTH_ERR;

	dirfd = lock_state(o.dir);
	if (dirfd < 0 && errno == ETIMEDOUT) {
		pam_syslog(pamh, LOG_ERR, "the state directory %s stayed locked for %d s (a palisade passwd or login stuck on palisaded?)",
			   o.dir, LOCK_TIMEOUT_MS / 1000);
		goto out;
	} else if (dirfd < 0) {
		pam_syslog(pamh, LOG_ERR, "cannot lock the state directory %s: %m (run palisade passwd)", o.dir);
		goto out;
	}
	if (read_file(dirfd, "handle", MAX_HANDLE, &handle, &handle_len) != 0) {
		pam_syslog(pamh, LOG_ERR, "no checking PAL in %s (run palisade passwd)", o.dir);
		goto out;
	}
	while (handle_len > 0 && (handle[handle_len - 1] == '\n' || handle[handle_len - 1] == '\r'))
		handle[--handle_len] = 0;
	if (read_file(dirfd, "passwd.db", MAX_DB, &db, &db_len) != 0) {
		pam_syslog(pamh, LOG_ERR, "no password database in %s (run palisade passwd)", o.dir);
		goto out;
	}
	if (db_len == 0) {
		/* No sealed database is empty: the file was truncated. (The PAL refuses to check
		 * against none, but this says which file and why.) */
		pam_syslog(pamh, LOG_ERR, "%s/passwd.db is empty, not a sealed database (truncated?): restore it", o.dir);
		goto out;
	}
	if (!daemon_is_trusted(pamh, o.socket, o.daemon_uid))
		goto out;

	/* 'C' ‖ u32 dblen ‖ db ‖ u8 userlen ‖ user ‖ password (integrations/pam/pal/checker.c) */
	size_t ulen = strlen(user), plen = strlen(pw);
	req_len = 1 + 4 + db_len + 1 + ulen + plen;
	req = malloc(req_len);
	out_len = MAX_DB + 4096;
	out = malloc(out_len);
	if (!req || !out) {
		ret = PAM_BUF_ERR;
		goto out;
	}
	req[0] = 'C';
	put32(req + 1, (uint32_t)db_len);
	memcpy(req + 5, db, db_len);
	req[5 + db_len] = (uint8_t)ulen;
	memcpy(req + 6 + db_len, user, ulen);
	memcpy(req + 6 + db_len + ulen, pw, plen);

	r = palisade_open(&p, o.socket);
	if (r == 0)
		r = palisade_set_timeout(p, CALL_TIMEOUT_MS);
	if (r == 0)
		r = palisade_call(p, (const char *)handle, req, req_len, &status, out, &out_len);
	if (r != 0) {
		pam_syslog(pamh, LOG_ERR, "checking PAL %s: %s: %s", (const char *)handle,
			   palisade_strerror(r), palisade_last_message());
		goto out;
	}
	switch (status) {
	case 0:
		/* A new database: the failure baseline moved. Not fatal if it cannot be stored:
		 * the old one only locks sooner. */
		if (out_len > 0 && write_db(dirfd, out, out_len) != 0)
			pam_syslog(pamh, LOG_WARNING, "cannot store the updated database in %s: %m", o.dir);
		if (o.debug)
			pam_syslog(pamh, LOG_DEBUG, "password accepted for %s", user);
		ret = PAM_SUCCESS;
		break;
	case STATUS_LOCKED:
		pam_syslog(pamh, LOG_NOTICE, "user %s is locked out after too many failures (palisade passwd --unlock)", user);
		ret = PAM_AUTH_ERR;
		break;
	case STATUS_WRONG: {
		const void *ruser = NULL, *rhost = NULL, *tty = NULL;
		pam_get_item(pamh, PAM_RUSER, &ruser);
		pam_get_item(pamh, PAM_RHOST, &rhost);
		pam_get_item(pamh, PAM_TTY, &tty);
		pam_syslog(pamh, LOG_NOTICE,
			   "authentication failure; logname=%s uid=%d euid=%d tty=%s ruser=%s rhost=%s user=%s",
			   "", (int)getuid(), (int)geteuid(), tty ? (const char *)tty : "",
			   ruser ? (const char *)ruser : "", rhost ? (const char *)rhost : "", user);
		ret = PAM_AUTH_ERR;
		break;
	}
	default:
		/* The PAL's output says why (its messages are short text): say, a database that
		 * does not unseal. */
		pam_syslog(pamh, LOG_ERR, "checking PAL status %d: %.*s", (int)status,
			   (int)(out_len < 200 ? out_len : 200), (const char *)out);
		ret = PAM_AUTHINFO_UNAVAIL;
	}
out:
	if (p)
		palisade_close(p);
	if (req) {
		explicit_bzero(req, req_len);
		free(req);
	}
	free(out);
	free(db);
	free(handle);
	if (dirfd >= 0)
		close(dirfd); /* releases the state's lock */
	/* pw is PAM_AUTHTOK, owned by libpam: neither freed nor wiped here. */
	return ret;
}

EXPORT int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh;
	(void)flags;
	(void)argc;
	(void)argv;
	return PAM_SUCCESS;
}
