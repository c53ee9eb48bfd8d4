/* SPDX-License-Identifier: Apache-2.0 */
/*
 * init.c - staged initialisation, configuration and logging.
 *
 * The constructor resolves libc and reads the environment (FSS_STAGE_LIBC);
 * nothing else happens until the process creates its first AF_INET stream
 * socket, which attaches to the daemon (FSS_STAGE_ATTACHED) or, if the
 * daemon cannot be reached, says so once on stderr and settles on the kernel
 * (FSS_STAGE_KERNEL).  Programs that never open a TCP socket (a shell, ls)
 * never touch the daemon and never print anything.  No path in here exits
 * or aborts the host process.
 */
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "epoll.h"

struct fss_config fss_config;
_Atomic int fss_stage;
FSS_TLS struct fss_tls fss_tls;

/* Serialises the attach attempt and the fork handlers; never taken on the
 * passthrough path or the data path. */
static pthread_mutex_t fss_init_lock = PTHREAD_MUTEX_INITIALIZER;

void fss_log(const char *fmt, ...)
{
	int saved = errno;
	char buf[512];
	va_list ap;
	int n, m;

	n = snprintf(buf, sizeof(buf), "fsstack[%d]: ", (int)getpid());
	va_start(ap, fmt);
	m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!FSS_REAL(write)(STDERR_FILENO, buf, (size_t)n);
	errno = saved;
}

static void fss_config__read(struct fss_config *c)
{
	const char *v;

	memset(c, 0, sizeof(*c));
	v = getenv("FSSTACK_SOCKET");
	if (v == NULL || *v == '\0' || strlen(v) >= sizeof(c->socket_path))
		v = FSS_DEFAULT_SOCKET;	/* too long a path cannot be a sun_path */
	memcpy(c->socket_path, v, strlen(v) + 1);

	v = getenv("FSSTACK_FALLBACK");
	c->fallback = FSS_FALLBACK_KERNEL;
	if (v != NULL && strcmp(v, "fail") == 0)
		c->fallback = FSS_FALLBACK_FAIL;
	else if (v != NULL && *v != '\0' && strcmp(v, "kernel") != 0)
		fss_log("FSSTACK_FALLBACK=%s not understood (kernel|fail); using kernel", v);

	v = getenv("FSSTACK_DISABLE");
	c->disable = v != NULL && *v != '\0' && strcmp(v, "0") != 0;

	v = getenv("FSSTACK_DEBUG");
	c->debug = v != NULL ? atoi(v) : 0;

	v = getenv("FSSTACK_SPIN_US");
	c->spin_ns = FSS_SPIN_US_DEFAULT * 1000;
	if (v != NULL && *v != '\0') {
		char *end;
		long us = strtol(v, &end, 10);

		if (*end != '\0' || us < 0 || us > 1000000)
			fss_log("FSSTACK_SPIN_US=%s not understood (microseconds, 0 to 1000000); using %d", v,
				FSS_SPIN_US_DEFAULT);
		else
			c->spin_ns = (int64_t)us * 1000;
	}
}

/*
 * fork from a threaded process: the shim's global locks are taken around
 * fork (in this order, which no other path nests the other way) so the
 * child never inherits one held; per-socket and per-set locks, which
 * another thread may have held at the fork, are re-initialised in the child
 * (it is single-threaded there).
 */
static void fss_init__atfork_prepare(void)
{
	pthread_mutex_lock(&fss_init_lock);
	fss_file__pool_atfork_prepare();
	fss_client__atfork_prepare();
	fss_epoll__atfork_prepare();
}

static void fss_init__atfork_parent(void)
{
	fss_epoll__atfork_parent();
	fss_client__atfork_parent();
	fss_file__pool_atfork_parent();
	pthread_mutex_unlock(&fss_init_lock);
}

static void fss_init__reinit_file_locks(int fd, struct fss_file *f, void *arg)
{
	(void)fd;
	(void)arg;
	pthread_mutex_init(&f->rx_lock, NULL);
	pthread_mutex_init(&f->tx_lock, NULL);
}

static void fss_init__atfork_child(void)
{
	fss_epoll__atfork_child();
	fss_client__atfork_child();
	fss_file__pool_atfork_child();
	fss_fdtab__for_each(0, ~0u, fss_init__reinit_file_locks, NULL);
	pthread_mutex_init(&fss_init_lock, NULL);
}

void fss_init__libc(void)
{
	static _Atomic int once;
	int expected = 0;

	fss_real__resolve();
	if (!atomic_compare_exchange_strong(&once, &expected, 1)) {
		/* another thread is reading the config; wait for it */
		while (atomic_load_explicit(&fss_stage, memory_order_acquire) < FSS_STAGE_LIBC)
			sched_yield();
		return;
	}
	fss_tls.depth++;
	fss_config__read(&fss_config);
	pthread_atfork(fss_init__atfork_prepare, fss_init__atfork_parent,
		       fss_init__atfork_child);
	fss_tls.depth--;
	atomic_store_explicit(&fss_stage, FSS_STAGE_LIBC, memory_order_release);
}

__attribute__((constructor)) static void fss_init__constructor(void)
{
	int saved = errno;

	if (atomic_load_explicit(&fss_stage, memory_order_acquire) < FSS_STAGE_LIBC)
		fss_init__libc();
	errno = saved;
}

int fss_init__attach(void)
{
	int st = atomic_load_explicit(&fss_stage, memory_order_acquire);
	long r;

	if (FSS_LIKELY(st >= FSS_STAGE_KERNEL))
		return st;
	if (st < FSS_STAGE_LIBC)
		fss_init__libc();

	pthread_mutex_lock(&fss_init_lock);
	st = atomic_load_explicit(&fss_stage, memory_order_acquire);
	if (st >= FSS_STAGE_KERNEL)
		goto out;
	if (fss_config.disable) {
		st = FSS_STAGE_KERNEL;
		goto publish;
	}
	r = fss_client__attach(fss_config.socket_path);
	if (r == 0) {
		st = FSS_STAGE_ATTACHED;
		fss_debug(1, "attached to %s", fss_config.socket_path);
		goto publish;
	}
	st = FSS_STAGE_KERNEL;
	if (fss_config.fallback == FSS_FALLBACK_FAIL)
		fss_log("cannot attach to the fsstack daemon at %s: %s; "
			"FSSTACK_FALLBACK=fail, so TCP sockets fail with %s",
			fss_config.socket_path, strerror((int)-r), strerror(FSS_FAIL_ERRNO));
	else
		fss_log("cannot attach to the fsstack daemon at %s: %s; "
			"falling back to the kernel's TCP stack",
			fss_config.socket_path, strerror((int)-r));
publish:
	atomic_store_explicit(&fss_stage, st, memory_order_release);
out:
	pthread_mutex_unlock(&fss_init_lock);
	return st;
}

static void fss_init__zero_refs(int fd, struct fss_file *f, void *arg)
{
	(void)fd;
	(void)arg;
	atomic_store_explicit(&f->refs, 0, memory_order_relaxed);
}

static void fss_init__count_refs(int fd, struct fss_file *f, void *arg)
{
	(void)fd;
	(void)arg;
	atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

pid_t fss_init__fork(void)
{
	uint64_t token = 0;
	bool attached;
	long r = -1;
	pid_t pid;

	attached = atomic_load_explicit(&fss_stage, memory_order_acquire) == FSS_STAGE_ATTACHED &&
		   !fss_client__dead();
	if (attached) {
		/* the daemon holds a reference on every socket for the child,
		 * except connections still in accept rings: none is taken
		 * until the fork is done (client.c, "Accept rings") */
		fss_client__accept_lock();
		r = fss_client__fork_prepare(&token);
		if (r < 0)
			fss_log("fork: the daemon refused to prepare the child's sockets: %s",
				strerror((int)-r));
	}
	pid = FSS_REAL(fork)();
	if (pid != 0) {
		int saved = errno;

		if (attached)
			fss_client__accept_done();

		if (attached && r >= 0)
			fss_client__fork_commit(token, pid > 0 ? pid : -1);
		errno = saved;
		return pid;
	}
	if (!attached)
		return 0;
	fss_client__accept_reinit();
	/* Only this thread survived: references other threads held on
	 * sockets are gone with them, so count the fd table again. */
	fss_fdtab__for_each(0, ~0u, fss_init__zero_refs, NULL);
	fss_fdtab__for_each(0, ~0u, fss_init__count_refs, NULL);
	/* The child is a new client (DESIGN.md decision 10). */
	r = r < 0 ? r : fss_client__reattach_child(fss_config.socket_path, token);
	if (r < 0)
		fss_log("fork: the child could not attach to the fsstack daemon (%s); "
			"its fsstack sockets fail", strerror((int)-r));
	return 0;
}
