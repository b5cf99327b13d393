// SPDX-License-Identifier: Apache-2.0
/*
 * shm_rt: is a shared-memory channel worth building beside the lean protocol's socket?
 *
 * Two processes (a caller and a server, fork()ed) make N round trips of a 32-byte message:
 *   socket       over a Unix socket (the lean protocol's transport)
 *   futex        through a shared page, the waiter sleeping in futex(2) at once
 *   spin=S       through a shared page, the waiter spinning up to S µs before futex(2)
 *   spin=inf     through a shared page, the waiter spinning forever (the server burns a core)
 * and prints, for each, the median round trip and the CPU time both processes spent per round
 * trip (getrusage). Busy callers (back to back) and sparse callers (a pause between calls, as a
 * server between requests) are both measured: spinning only pays when the next message comes
 * within the spin.
 *
 *   make -C clients/c bench && build/shm_rt [N]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct chan {
	_Atomic uint32_t req, resp; /* sequence numbers: a new value is a message */
	_Atomic uint32_t req_sleep, resp_sleep; /* the waiter is (about to be) in futex_wait */
	uint8_t msg[32];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *w, uint32_t val)
{
	syscall(SYS_futex, w, FUTEX_WAIT, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* wait_for waits until *w != old: spinning up to spin_ns (-1: forever), then sleeping. */
static uint32_t wait_for(_Atomic uint32_t *w, _Atomic uint32_t *sleeping, uint32_t old, int64_t spin_ns)
{
	uint32_t v;
	uint64_t t0 = now_ns();

	for (unsigned i = 0;; i++) {
		if ((v = atomic_load(w)) != old)
			return v;
		if (spin_ns >= 0 && (i & 63) == 0 && (int64_t)(now_ns() - t0) >= spin_ns)
			break;
		__builtin_ia32_pause();
	}
	for (;;) {
		atomic_store(sleeping, 1);
		if ((v = atomic_load(w)) != old) {
			atomic_store(sleeping, 0);
			return v;
		}
		futex_wait(w, old);
		atomic_store(sleeping, 0);
		if ((v = atomic_load(w)) != old)
			return v;
	}
}

static void post(_Atomic uint32_t *w, _Atomic uint32_t *sleeping, uint32_t v)
{
	atomic_store(w, v);
	if (atomic_load(sleeping))
		futex_wake(w);
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double cpu_us(int who)
{
	struct rusage ru;

	getrusage(who, &ru);
	return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec * 1e6 +
	       (double)ru.ru_stime.tv_usec;
}

/* run measures n round trips; spin_ns -2 means the socket. pause_us between calls. */
static void run(const char *name, int64_t spin_ns, int n, unsigned pause_us)
{
	struct chan *c = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t *rt = calloc((size_t)n, sizeof(*rt));
	int sv[2];
	double self0, self1, kids0, kids1;
	pid_t pid;

	if (c == MAP_FAILED || !rt || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		perror("setup");
		exit(1);
	}
	memset(c, 0, sizeof(*c));
	kids0 = cpu_us(RUSAGE_CHILDREN);
	pid = fork();
	if (pid == 0) { /* the server: echo n messages */
		uint8_t buf[32];
		uint32_t seq = 0;

		close(sv[0]);
		for (int i = 0; i < n; i++) {
			if (spin_ns == -2) {
				if (read(sv[1], buf, 32) != 32 || write(sv[1], buf, 32) != 32)
					_exit(1);
			} else {
				seq = wait_for(&c->req, &c->req_sleep, seq, spin_ns);
				post(&c->resp, &c->resp_sleep, seq);
			}
		}
		_exit(0);
	}
	close(sv[1]);
	self0 = cpu_us(RUSAGE_SELF);
	for (int i = 0; i < n; i++) {
		uint8_t buf[32] = {0};
		uint64_t t = now_ns();

		if (spin_ns == -2) {
			if (write(sv[0], buf, 32) != 32 || read(sv[0], buf, 32) != 32) {
				perror("socket");
				exit(1);
			}
		} else {
			memcpy(c->msg, buf, 32);
			post(&c->req, &c->req_sleep, (uint32_t)i + 1);
			wait_for(&c->resp, &c->resp_sleep, (uint32_t)i, spin_ns);
		}
		rt[i] = now_ns() - t;
		if (pause_us)
			usleep(pause_us);
	}
	self1 = cpu_us(RUSAGE_SELF);
	waitpid(pid, NULL, 0);
	kids1 = cpu_us(RUSAGE_CHILDREN);
	qsort(rt, (size_t)n, sizeof(*rt), cmp);
	printf("| %s | %s | %.1f | %.1f | %.1f |\n", name, pause_us ? "sparse (1 ms apart)" : "busy (back to back)",
	       (double)rt[n / 2] / 1e3, (double)rt[n * 9 / 10] / 1e3,
	       (self1 - self0 + kids1 - kids0) / n - (pause_us ? 0 : 0));
	munmap(c, 4096);
	free(rt);
	close(sv[0]);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20000;

	printf("| channel | callers | median µs | p90 µs | CPU µs per round trip (both processes) |\n");
	printf("|---|---|---:|---:|---:|\n");
	for (int sparse = 0; sparse < 2; sparse++) {
		int m = sparse ? n / 20 : n;
		unsigned p = sparse ? 1000 : 0;

		run("Unix socket", -2, m, p);
		run("shared page, futex at once", 0, m, p);
		run("shared page, spin 20 µs then futex", 20000, m, p);
		run("shared page, spin 200 µs then futex", 200000, m, p);
		run("shared page, spin forever", -1, m, p);
	}
	return 0;
}
