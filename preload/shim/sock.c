/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sock.c - the socket calls on fsstack sockets.
 *
 * Each fss_op_<call> is what <call> does to an fd the ownership table says is
 * ours: control calls are one request to the daemon (client.c), data moves
 * through the slot's FIFOs, and blocking calls wait on the wake fd until the
 * slot's readiness allows progress.  Semantics follow the kernel's TCP
 * (errno values included) wherever the conformance suite can tell.
 */
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "client.h"
#include "epoll.h"

/* ---- user memory: EFAULT instead of a crash on bad sockaddr pointers ---- */

/*
 * Option values, lengths and addresses: the screen, then the guarded copy
 * (ucopy.c), as on the data path.  A copy through process_vm_readv/writev
 * costs two syscalls here (getpid and the copy, which pins the pages), and
 * every accept made three of them for its peer address.
 */
static long fss_copy_in(void *dst, const void *src, size_t len)
{
	if (len == 0)
		return 0;
	if (!fss_user_ok(src, len))
		return -EFAULT;
	return fss_ucopy(dst, src, len);
}

static long fss_copy_out(void *dst, const void *src, size_t len)
{
	if (len == 0)
		return 0;
	if (!fss_user_ok(dst, len))
		return -EFAULT;
	return fss_ucopy(dst, src, len);
}

/* An fss_sockaddr as the sockaddr of its family; returns its length. */
static socklen_t fss_sa_of(struct sockaddr_storage *ss, const void *data)
{
	struct fss_sockaddr fa;

	memcpy(&fa, data, sizeof(fa));
	memset(ss, 0, sizeof(*ss));
	if (fa.family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = fa.port;
		sin6->sin6_flowinfo = fa.flowinfo;
		memcpy(&sin6->sin6_addr, fa.addr, 16);
		sin6->sin6_scope_id = fa.scope_id;
		return sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = fa.port;
		memcpy(&sin->sin_addr, fa.addr, 4);
		return sizeof(*sin);
	}
}

/* Copies a sockaddr_in (sockaddr_in6 for an AF_INET6 socket: the daemon
 * sends the socket's family, IPv4 peers of a dual-stack socket
 * v4-mapped) out the way the kernel does: truncated to *alen, *alen set to
 * the full size. */
static long fss_addr_out(const struct fss_sockaddr *fa, struct sockaddr *addr, socklen_t *alen)
{
	struct sockaddr_storage ss;
	socklen_t len, full;
	long r;

	if (addr == NULL || alen == NULL)
		return 0;
	r = fss_copy_in(&len, alen, sizeof(len));
	if (r < 0)
		return r;
	if ((int)len < 0)
		return -EINVAL;
	full = fss_sa_of(&ss, fa);
	r = fss_copy_out(addr, &ss, len < full ? len : full);
	if (r < 0)
		return r;
	return fss_copy_out(alen, &full, sizeof(full));
}

/* The shortest sockaddr_in6 the kernel takes (RFC 2133's, no scope id). */
#define FSS_SIN6_LEN_RFC2133 24

/* A sockaddr from the application into the request's data, checked as
 * the kernel checks it for a socket of family. */
static long fss_addr_in(struct fss_req *req, int family, const struct sockaddr *addr, socklen_t len,
			bool bind)
{
	struct fss_sockaddr fa;
	long r;

	if ((int)len < 0)
		return -EINVAL;
	if (len < sizeof(sa_family_t))
		return -EINVAL;
	memset(&fa, 0, sizeof(fa));
	if (family == AF_INET6) {
		struct sockaddr_in6 sin6;

		/* inet6_bind, tcp_v6_connect: the length, then the family */
		if (len < FSS_SIN6_LEN_RFC2133)
			return -EINVAL;
		memset(&sin6, 0, sizeof(sin6));
		r = fss_copy_in(&sin6, addr, len < sizeof(sin6) ? len : sizeof(sin6));
		if (r < 0)
			return r;
		if (sin6.sin6_family != AF_INET6)
			return -EAFNOSUPPORT;
		if (bind && IN6_IS_ADDR_MULTICAST(&sin6.sin6_addr))
			return -EINVAL;
		fa.family = AF_INET6;
		fa.port = sin6.sin6_port;
		fa.flowinfo = sin6.sin6_flowinfo;
		memcpy(fa.addr, &sin6.sin6_addr, 16);
		if (len >= sizeof(sin6) && IN6_IS_ADDR_LINKLOCAL(&sin6.sin6_addr))
			fa.scope_id = sin6.sin6_scope_id;
	} else {
		struct sockaddr_in sin;

		memset(&sin, 0, sizeof(sin));
		r = fss_copy_in(&sin, addr, len < sizeof(sin) ? len : sizeof(sin));
		if (r < 0)
			return r;
		if (sin.sin_family != AF_INET) {
			/* bind accepts AF_UNSPEC with INADDR_ANY, as inet_bind does */
			if (!(bind && sin.sin_family == AF_UNSPEC && sin.sin_addr.s_addr == 0))
				return -EAFNOSUPPORT;
		}
		if (len < sizeof(sin))
			return -EINVAL;
		fa.family = AF_INET;
		fa.port = sin.sin_port;
		memcpy(fa.addr, &sin.sin_addr, 4);
	}
	memcpy(req->data, &fa, sizeof(fa));
	return 0;
}

/* ---- waiting ---------------------------------------------------------- */

struct fss_wait {
	struct fss_file *f;
	unsigned int mask;
};

static bool fss_wait__ready(void *arg)
{
	struct fss_wait *w = arg;

	return fss_client__events(w->f) & (w->mask | EPOLLERR | EPOLLHUP);
}

/*
 * Would the kernel restart a socket call the last signal interrupted?  Only
 * if that signal's handler had SA_RESTART; not knowing which signal it was,
 * restart only when every installed handler of a signal the caller's mask
 * (mask, NULL: none blocked) let through has SA_RESTART.
 * BUG(shim): with mixed handlers the call returns EINTR where the kernel
 * might have restarted it.
 */
static bool fss_sig_restartable(const sigset_t *mask)
{
	bool any = false;
	int sig;

	for (sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;

		if (sig == SIGKILL || sig == SIGSTOP || (mask != NULL && sigismember(mask, sig) == 1) ||
		    sigaction(sig, NULL, &sa) < 0)
			continue;
		if (!(sa.sa_flags & SA_SIGINFO) &&
		    (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
			continue;
		if (!(sa.sa_flags & SA_RESTART))
			return false;
		any = true;
	}
	return any;
}

/* Milliseconds left of a timeout of ms started at t0 (CLOCK_MONOTONIC). */
static long fss_ms_left(const struct timespec *t0, long ms)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return ms - ((t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000);
}

/* Blocks until f's readiness has any of mask (or ERR/HUP): 0, -EINTR, or
 * -EAGAIN when the socket's timeout (ms, 0 = none) expires.  If restart, a
 * signal handled with SA_RESTART resumes the wait when there is no timeout,
 * as the kernel restarts the call (with a timeout it returns EINTR); a
 * connect is never restarted (its handshake goes on, connect says EINTR).
 * Signals are held from the first check on (or by the caller, from before
 * its request), so one that comes at any point ends the wait with EINTR
 * (client.c, "Signals on the blocking paths"). */
static long fss_wait_restart(struct fss_file *f, unsigned int mask, int timeout_ms, bool restart)
{
	struct fss_wait w = { f, mask };
	struct timespec t0;
	long r = 0, left = timeout_ms > 0 ? timeout_ms : -1;
	sigset_t old;
	bool held = fss_client__sig_hold(&old);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!fss_wait__ready(&w)) {
		r = fss_client__block(fss_wait__ready, &w, (int)left, true);
		if (r == -EINTR) {
			if (restart && timeout_ms <= 0 &&
			    fss_sig_restartable(fss_client__sig_caller()))
				continue;
			break;
		}
		if (r == -ETIMEDOUT) {
			r = -EAGAIN;
			break;
		}
		r = 0;
		if (timeout_ms > 0) {
			left = fss_ms_left(&t0, timeout_ms);
			if (left <= 0) {
				r = -EAGAIN;
				break;
			}
		}
	}
	fss_client__sig_release(held, &old);
	return r;
}

static long fss_wait(struct fss_file *f, unsigned int mask, int timeout_ms)
{
	return fss_wait_restart(f, mask, timeout_ms, true);
}

/* The slot's events word: FSS_EV_* flags and, in FSS_EV_STATE_MASK, the
 * state.  Code that looks at both takes them from one call, so that they
 * come from the same publish (fss_ev_state(ev)). */
static uint32_t fss_events_of(struct fss_file *f)
{
	return __atomic_load_n(&fss_client__slot(f)->events, __ATOMIC_ACQUIRE);
}

static uint32_t fss_state_of(struct fss_file *f)
{
	return fss_ev_state(fss_events_of(f));
}

/* Takes the pending error (SO_ERROR reads and clears it). */
static long fss_take_error(struct fss_file *f)
{
	struct fss_req req = { .op = FSS_OP_GETSOCKOPT, .sock = f->id,
			       .arg0 = SOL_SOCKET, .arg1 = SO_ERROR, .arg2 = sizeof(int) };
	struct fss_cmpl c;
	int err = 0;
	long r;

	r = fss_client__call(&req, &c);
	if (r < 0)
		return r;
	memcpy(&err, c.data, sizeof(err));
	return err;
}

static long fss_epipe(int flags)
{
	(void)flags;
	return -EPIPE;
}

/* Every send path ends here: EPIPE raises SIGPIPE unless MSG_NOSIGNAL, as
 * sk_stream_error does, whatever produced it (our state or the daemon's
 * so_error). */
static long fss_send_result(long r, int flags)
{
	if (r == -EPIPE && !(flags & MSG_NOSIGNAL))
		raise(SIGPIPE);
	return r;
}

/* ---- creation ---------------------------------------------------------- */

long fss_file__placeholder(int family, int type_flags)
{
	int fd;

	/* An unconnected kernel TCP socket: fstat, SO_TYPE, FD_CLOEXEC and
	 * F_GETFL answer truthfully, and if the fd leaks past exec it fails
	 * cleanly (ENOTCONN) instead of blocking. */
	fd = fss_sys__socket(family, SOCK_STREAM | (type_flags & (SOCK_CLOEXEC | SOCK_NONBLOCK)), 0);
	return fd < 0 ? -errno : fd;
}

/* Wraps daemon socket id in a new fd; on failure closes id in the daemon. */
static long fss_file__new(uint32_t id, int family, int type_flags)
{
	struct fss_file *f, *old;
	long fd, r;

	if (FSS_SOCK_SLOT(id) >= fss_client.sock_count || FSS_SOCK_GEN(id) == 0) {
		r = -EPROTO;
		goto err_id;
	}
	fd = fss_file__placeholder(family, type_flags);
	if (fd < 0) {
		r = fd;
		goto err_id;
	}
	f = fss_file__alloc();
	if (f == NULL) {
		r = -ENOMEM;
		goto err_fd;
	}
	f->id = id;
	f->family = family;
	if (type_flags & SOCK_NONBLOCK)
		atomic_store(&f->status_flags, O_NONBLOCK);
	r = fss_fdtab__xchg((int)fd, f, &old);
	if (r < 0)
		goto err_file;
	if (old != NULL)	/* a number we never saw closed: stale */
		fss_file__put(old);
	return fd;

err_file:
	f->id = 0;
	fss_file__put(f);
err_fd:
	fss_sys__close((int)fd);
err_id:
	{
		struct fss_req req = { .op = FSS_OP_CLOSE, .sock = id };

		fss_client__call(&req, NULL);
	}
	return r;
}

static void fss_dmopt__mark(struct fss_file *f, int level, int name);

/* IPV6_V6ONLY starts as net.ipv6.bindv6only of the process's namespace
 * says: the placeholder, a fresh kernel AF_INET6 socket, knows it, and the
 * daemon (whose default is 0) is told when it is 1. */
static void fss_v6only_default(int fd)
{
	struct fss_file *f = fss_file__get(fd);
	socklen_t len = sizeof(int);
	int on = 0;

	if (f == NULL)
		return;
	if (FSS_REAL(getsockopt)(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &len) == 0 && on) {
		struct fss_req req = { .op = FSS_OP_SETSOCKOPT, .sock = f->id, .arg0 = IPPROTO_IPV6,
				       .arg1 = IPV6_V6ONLY, .arg2 = sizeof(int) };

		memcpy(req.data, &on, sizeof(on));
		if (fss_client__call(&req, NULL) == 0)
			fss_dmopt__mark(f, IPPROTO_IPV6, IPV6_V6ONLY);
	}
	fss_file__put(f);
}

long fss_op_socket(int domain, int type, int protocol)
{
	struct fss_req req = { .op = FSS_OP_SOCKET, .arg0 = domain,
			       .arg1 = type & 0xf, .arg2 = protocol };
	struct fss_cmpl c;
	long r;

	if (type & ~(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC))
		return -EINVAL;
	if (fss_client__dead())
		return -ENETDOWN;	/* the daemon went away: no new fsstack sockets */
	r = fss_client__call(&req, &c);
	if (r < 0)
		return r;
	r = fss_file__new(c.sock, domain, type);
	if (r >= 0 && domain == AF_INET6)
		fss_v6only_default((int)r);
	return r;
}

static bool fss_tx_empty(void *arg)
{
	struct fss_file *f = arg;

	if (fss_client__tx_free(f) == fss_client.tx_size)
		return true;
	fss_client__tx_nospace(f);	/* the daemon publishes what it drains */
	return fss_client__tx_free(f) == fss_client.tx_size ||
	       (fss_events_of(f) & (FSS_EV_ERR | FSS_EV_HUP));
}

/* SO_LINGER {1, n}: close waits (up to n seconds) for queued bytes to leave,
 * as the kernel's does.  The daemon's own buffers are not waited for. */
static void fss_linger(struct fss_file *f)
{
	struct timespec t0;
	long ms, left;
	sigset_t old;
	bool held;

	if (!atomic_load(&f->linger_on) || atomic_load(&f->linger_secs) <= 0 ||
	    fss_state_of(f) != FSS_ST_CONNECTED)
		return;
	ms = (long)atomic_load(&f->linger_secs) * 1000;
	held = fss_client__sig_hold(&old);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (left = ms; left > 0 && !fss_client__dead() && !fss_tx_empty(f);) {
		if (fss_client__block(fss_tx_empty, f, (int)left, true) == -EINTR)
			break;
		left = fss_ms_left(&t0, ms);
	}
	fss_client__sig_release(held, &old);
}

/* The last reference in this process is gone. */
void fss_file__release(struct fss_file *f)
{
	if (f->id != 0 && fss_client.attached && !fss_client__dead())
		fss_linger(f);
	fss_epoll__file_gone(f);
	if (f->id != 0 && fss_client.attached) {
		struct fss_req req = { .op = FSS_OP_CLOSE, .sock = f->id };

		/* A connection's CLOSE is posted, not waited for: the kernel's
		 * close returns before the FIN goes out too.  A listener's is
		 * waited for, so that once close() returns (and, say, the
		 * process exits) a connect to its port is refused. */
		if (!fss_client__dead() && fss_state_of(f) == FSS_ST_LISTENING)
			fss_client__call(&req, NULL);
		else
			fss_client__post(&req);
	}
	fss_file__free(f);
}

/* ---- control ----------------------------------------------------------- */

/* ---- handover to the kernel ---------------------------------------------
 *
 * The daemon answers BIND and CONNECT with -FSS_HANDOVER_ERRNO when the
 * address is not its own (loopback, another interface's address; a
 * destination its interface does not reach): the socket's traffic does not
 * belong to fsstack.  As OpenOnload does, the shim then makes the socket a
 * kernel socket: the call runs on the placeholder, which already holds the
 * options the kernel keeps (fss_phopts), O_NONBLOCK and FD_CLOEXEC; the
 * options the daemon held are copied onto it first; every fd naming the
 * socket leaves the ownership table (so from then on every call goes to
 * libc); its epoll items become registrations in the sets' real epoll fds
 * (fss_epoll__handover); and the daemon's socket is closed.
 */
_Static_assert(FSS_HANDOVER_ERRNO == EXDEV, "FSS_HANDOVER_ERRNO is EXDEV");

/* Options the daemon serves, copied onto the placeholder at a handover.
 * SO_RCVBUF/SO_SNDBUF are not: setting them would lock the kernel's
 * buffer sizes (BUG in README). */
static const struct { int level, name; } fss_dmopts[] = {
	{ SOL_SOCKET, SO_REUSEADDR }, { SOL_SOCKET, SO_REUSEPORT },
	{ SOL_SOCKET, SO_KEEPALIVE }, { IPPROTO_TCP, TCP_NODELAY },
	{ IPPROTO_TCP, TCP_KEEPIDLE }, { IPPROTO_TCP, TCP_KEEPINTVL },
	{ IPPROTO_TCP, TCP_KEEPCNT }, { IPPROTO_TCP, TCP_DEFER_ACCEPT },
	{ IPPROTO_IPV6, IPV6_V6ONLY },
};

/* Remembers that a daemon-served option was set on f (for a handover). */
static void fss_dmopt__mark(struct fss_file *f, int level, int name)
{
	size_t i;

	for (i = 0; i < sizeof(fss_dmopts) / sizeof(fss_dmopts[0]); i++)
		if (fss_dmopts[i].level == level && fss_dmopts[i].name == name)
			atomic_fetch_or(&f->dmopts, 1u << i);
}

/* Gives the placeholder the state the daemon and the shim hold. */
static long fss_handover__prepare(struct fss_file *f, int fd)
{
	struct linger lg;
	size_t i;
	int fl;

	unsigned int set = atomic_load(&f->dmopts);

	for (i = 0; i < sizeof(fss_dmopts) / sizeof(fss_dmopts[0]); i++) {
		struct fss_req req = { .op = FSS_OP_GETSOCKOPT, .sock = f->id,
				       .arg0 = fss_dmopts[i].level, .arg1 = fss_dmopts[i].name,
				       .arg2 = sizeof(int) };
		struct fss_cmpl c;
		int v;

		if (!(set & (1u << i)) || fss_client__call(&req, &c) < 0 || c.val0 != sizeof(int))
			continue;	/* never set: the kernel's default is the daemon's */
		memcpy(&v, c.data, sizeof(v));
		(void)FSS_REAL(setsockopt)(fd, fss_dmopts[i].level, fss_dmopts[i].name,
						   &v, sizeof(v));
	}
	if (atomic_load(&f->linger_on)) {
		lg.l_onoff = 1;
		lg.l_linger = atomic_load(&f->linger_secs);
		(void)FSS_REAL(setsockopt)(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	fl = FSS_REAL(fcntl)(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	fl = fss_file__nonblock(f) ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	if (FSS_REAL(fcntl)(fd, F_SETFL, fl) < 0)
		return -errno;
	return 0;
}

static void fss_handover__forget(int fd, struct fss_file *s, void *arg)
{
	struct fss_file *old;

	if (s == arg && fss_fdtab__xchg(fd, NULL, &old) == 0 && old != NULL) {
		if (old == arg)
			fss_file__put(old);
		else	/* re-pointed meanwhile: put it back */
			fss_fdtab__xchg(fd, old, &old);
	}
}

/* The placeholder of f (named by fd) now carries the socket: every fd of
 * f leaves the table, its epoll items move to the kernel, and the daemon's
 * socket goes when the caller drops its reference. */
static void fss_handover(struct fss_file *f, int fd)
{
	struct fss_ephand *eps = fss_epoll__handover_take(f);

	fss_handover__forget(fd, f, f);
	/* dups (dup, dup2, F_DUPFD): the caller's reference is the last one
	 * unless other fds (or calls in flight) name f */
	if (atomic_load(&f->refs) > 1)
		fss_fdtab__for_each(0, FSS_FDTAB_MAX - 1, fss_handover__forget, f);
	fss_epoll__handover_give(eps);
	fss_debug(2, "fd %d handed over to the kernel (bind)", fd);
}

/* connect() to a destination the daemon does not reach: on the kernel. */
static long fss_connect_kernel(struct fss_file *f, int fd, const struct fss_req *req,
			       const struct fss_cmpl *c)
{
	static const struct fss_sockaddr none;
	struct sockaddr_storage sa, local;
	struct fss_ephand *eps;
	socklen_t salen, llen;
	long r;

	r = fss_handover__prepare(f, fd);
	if (r < 0)
		return r;
	/* what bind asked for, or zero */
	if (memcmp(c->data, &none, sizeof(none)) != 0) {
		llen = fss_sa_of(&local, c->data);
		if (FSS_REAL(bind)(fd, (struct sockaddr *)&local, llen) < 0)
			return -errno;
	}
	salen = fss_sa_of(&sa, req->data);
	/* Out of the table before a blocking connect, so other threads find a
	 * kernel socket; the epoll items are registered with the kernel after
	 * it, so that an unconnected socket's OUT|HUP is not reported as a new
	 * event (the kernel reports what is ready at the ADD). */
	eps = fss_epoll__handover_take(f);
	fss_handover__forget(fd, f, f);
	if (atomic_load(&f->refs) > 1)
		fss_fdtab__for_each(0, FSS_FDTAB_MAX - 1, fss_handover__forget, f);
	r = FSS_REAL(connect)(fd, (struct sockaddr *)&sa, salen) < 0 ? -errno : 0;
	fss_epoll__handover_give(eps);
	fss_debug(2, "fd %d handed over to the kernel (connect: %ld)", fd, r);
	return r;
}

long fss_op_bind(struct fss_file *f, int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
	struct fss_req req = { .op = FSS_OP_BIND, .sock = f->id };
	struct sockaddr_storage sa;
	socklen_t salen;
	long r;

	r = fss_addr_in(&req, f->family, FSS_CSA(addr), len, true);
	if (r < 0)
		return r;
	r = fss_client__call(&req, NULL);
	if (r != -FSS_HANDOVER_ERRNO)
		return r;
	/* Not the stack's address (loopback, another interface): bind the
	 * placeholder.  Only a successful bind makes it a kernel socket, so a
	 * refused one leaves the fsstack socket as it was. */
	r = fss_handover__prepare(f, fd);
	if (r < 0)
		return r;
	salen = fss_sa_of(&sa, req.data);
	if (FSS_REAL(bind)(fd, (struct sockaddr *)&sa, salen) < 0)
		return -errno;
	fss_handover(f, fd);
	return 0;
}

/*
 * The daemon listens on INADDR_ANY but does not reach loopback: kernel
 * sockets of this namespace connecting to 127.0.0.1:port would find
 * nothing.  The placeholder listens there too (127.0.0.1 only: what comes
 * from the wire is the stack's, and a kernel listener on 0.0.0.0 would
 * catch what the steering passes to the kernel), with the daemon-held
 * options it would have after a handover (SO_REUSEPORT for workers that
 * each bind).  It is O_NONBLOCK in the kernel from now on, so that accept
 * can try it without blocking; the application's flag stays in the file.
 * A refused kernel bind (something else listens there) leaves the
 * listener on fsstack only.
 */
static void fss_klisten(struct fss_file *f, int fd, int backlog)
{
	struct fss_req req = { .op = FSS_OP_GETSOCKNAME, .sock = f->id };
	struct sockaddr_storage sa;
	struct fss_sockaddr fa;
	struct fss_cmpl c;
	socklen_t salen;
	int fl;

	if (atomic_load(&f->klisten)) {		/* listen again: the backlog */
		(void)fss_sys__listen(fd, backlog);
		return;
	}
	if (fss_client__call(&req, &c) < 0)
		return;
	memcpy(&fa, c.data, sizeof(fa));
	/* 127.0.0.1, or ::1 for an AF_INET6 listener (dual stack or not) */
	memset(fa.addr, 0, sizeof(fa.addr));
	fa.scope_id = 0;
	if (fa.family == AF_INET6)
		fa.addr[15] = 1;
	else {
		fa.addr[0] = 127;
		fa.addr[3] = 1;
	}
	salen = fss_sa_of(&sa, &fa);
	if (fss_handover__prepare(f, fd) < 0 ||
	    (fl = FSS_REAL(fcntl)(fd, F_GETFL)) < 0 ||
	    FSS_REAL(fcntl)(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    FSS_REAL(bind)(fd, (struct sockaddr *)&sa, salen) < 0 ||
	    fss_sys__listen(fd, backlog) < 0) {
		fss_debug(1, "fd %d: no kernel listener on loopback port %u: errno %d", fd,
			  ntohs(fa.port), errno);
		return;
	}
	atomic_store(&f->klisten, 1);
	fss_epoll__klisten(f);
	fss_debug(2, "fd %d also listens on the kernel at loopback port %u", fd, ntohs(fa.port));
}

long fss_op_listen(struct fss_file *f, int fd, int backlog)
{
	struct fss_req req = { .op = FSS_OP_LISTEN, .sock = f->id, .arg0 = backlog };
	struct fss_cmpl c;
	long r;

	r = fss_client__call(&req, &c);
	if (r == 0 && (c.flags & FSS_CMPL_LISTEN_LOOPBACK))
		fss_klisten(f, fd, backlog);
	return r;
}

/* accept on the kernel listener of a klisten placeholder (O_NONBLOCK in
 * the kernel): a plain kernel fd, or -EAGAIN. */
static long fss_accept_kernel(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	int r = fss_sys__accept4(fd, addr, len, flags);

	return r < 0 ? -errno : r;
}

/* Blocks until the fsstack queue or the kernel's (fd) has a connection:
 * the kernel listener and this thread's wait fd in one ppoll, as poll.c
 * does.  0, -EINTR, or -EAGAIN when timeout_ms (0 = none) expires. */
static long fss_wait_klisten(struct fss_file *f, int fd, int timeout_ms)
{
	struct fss_wait w = { f, EPOLLIN };
	struct pollfd p[2];
	struct timespec ts, t0, *tsp = NULL;
	long r = 0, left = timeout_ms;
	sigset_t old;
	bool held;
	int wfd, k;

	wfd = fss_client__wait_fd();
	if (wfd < 0)
		return wfd;
	/* held from the first check; ppoll sleeps with the caller's mask
	 * (client.c, "Signals on the blocking paths") */
	held = fss_client__sig_hold(&old);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		p[0].fd = fd;
		p[0].events = POLLIN;
		p[1].fd = wfd;
		p[1].events = POLLIN;
		p[0].revents = p[1].revents = 0;
		if (timeout_ms > 0) {
			ts.tv_sec = left / 1000;
			ts.tv_nsec = (left % 1000) * 1000000;
			tsp = &ts;
		}
		fss_client__sleep_begin();
		if (fss_wait__ready(&w) || fss_client__dead()) {
			fss_client__sleep_end();
			break;
		}
		k = FSS_REAL(ppoll)(p, 2, tsp, fss_client__sig_caller());
		fss_client__sleep_end();
		if (k < 0 && errno == EINTR) {
			if (timeout_ms <= 0 && fss_sig_restartable(fss_client__sig_caller()))
				continue;
			r = -EINTR;
			break;
		}
		if (k < 0) {
			r = -errno;
			break;
		}
		if (p[1].revents)
			fss_client__wait_consume();
		if (p[0].revents || fss_wait__ready(&w))
			break;
		if (timeout_ms > 0) {
			left = fss_ms_left(&t0, timeout_ms);
			if (left <= 0) {
				r = -EAGAIN;
				break;
			}
		}
	}
	fss_client__sig_release(held, &old);
	return r;
}

long fss_op_accept4(struct fss_file *f, int fd, __SOCKADDR_ARG addr, socklen_t *len, int flags)
{
	struct fss_req req = { .op = FSS_OP_ACCEPT, .sock = f->id };
	struct fss_sockaddr peer;
	struct fss_cmpl c;
	long r, nfd;
	sigset_t old;
	bool held = false, ringed = false;
	struct fss_await aw;

	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
		return -EINVAL;
	/* blocking: signals are held from before the ACCEPT round trip, so
	 * that one handled during it ends the wait that follows with EINTR
	 * (client.c, "Signals on the blocking paths") */
	if (!fss_file__nonblock(f))
		held = fss_client__sig_hold(&old);
	/* a thread in accept (its round trip, its wait) is one the daemon may
	 * fill the ring for: it will look at the listener again */
	fss_client__accept_wait_begin(f, fss_client__accept_weight(f), &aw);
	for (;;) {
		/* the daemon serves this CPU's shard first (local listen table) */
		int cpu = sched_getcpu();
		bool kl = atomic_load(&f->klisten);

		/* a kernel listener too: the two queues take turns, so that
		 * neither starves the other */
		if (kl && (atomic_fetch_add(&f->kturn, 1) & 1)) {
			r = fss_accept_kernel(fd, FSS_SA(addr), len, flags);
			if (r != -EAGAIN)
				goto kernel;
		}
		/* this process's accept ring first: no round trip */
		r = fss_client__accept_ring(f, &c);
		if (r > 0) {
			ringed = true;
			r = 0;
			break;
		}
		if (r == 0) {
			if (cpu >= 0) {
				req.flags |= FSS_REQ_CPU;
				req.arg0 = cpu;
			}
			r = fss_client__call(&req, &c);
		}
		if (r != -EAGAIN)
			break;
		if (kl) {
			r = fss_accept_kernel(fd, FSS_SA(addr), len, flags);
			if (r != -EAGAIN)
				goto kernel;
		}
		if (fss_file__nonblock(f))
			break;
		if (kl)
			r = fss_wait_klisten(f, fd, atomic_load(&f->rcvtimeo_ms));
		else
			r = fss_wait(f, EPOLLIN, atomic_load(&f->rcvtimeo_ms));
		if (r < 0)
			break;
		if (!(fss_events_of(f) & FSS_EV_LISTENING)) {
			r = -EINVAL;
			break;
		}
	}
	fss_client__accept_wait_end(&aw);
	fss_client__sig_release(held, &old);
	if (r < 0)
		return r;
	nfd = fss_file__new(c.sock, f->family, flags);
	if (ringed)
		fss_client__accept_done();
	if (nfd < 0)
		return nfd;
	memcpy(&peer, c.data, sizeof(peer));
	r = fss_addr_out(&peer, FSS_SA(addr), len);
	if (r < 0) {
		/* the connection is taken; like the kernel, a bad address
		 * pointer loses it */
		close((int)nfd);
		return r;
	}
	return nfd;
kernel:	/* from the kernel listener: a plain kernel fd, or its error */
	fss_client__accept_wait_end(&aw);
	fss_client__sig_release(held, &old);
	return r;
}

long fss_op_accept(struct fss_file *f, int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
	return fss_op_accept4(f, fd, addr, len, 0);
}

/* Where a connect in flight stands: -EALREADY still in flight, 0 connected,
 * or -error (taken, so SO_ERROR reads 0 afterwards, as in the kernel). */
static long fss_connect_outcome(struct fss_file *f)
{
	uint32_t ev = fss_events_of(f), st = fss_ev_state(ev);
	long r;

	if (st == FSS_ST_CONNECTING && !(ev & (FSS_EV_ERR | FSS_EV_HUP)))
		return -EALREADY;
	atomic_store(&f->connecting, 0);
	if ((ev & FSS_EV_CONNECTED) && !(ev & FSS_EV_ERR))
		return 0;
	r = fss_take_error(f);
	return r > 0 ? -r : (r < 0 ? r : -ECONNREFUSED);
}

long fss_op_connect(struct fss_file *f, int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
	struct fss_req req = { .op = FSS_OP_CONNECT, .sock = f->id };
	struct fss_cmpl c;
	long r;
	sigset_t old;
	bool held = false;

	r = fss_addr_in(&req, f->family, FSS_CSA(addr), len, false);
	if (r < 0)
		return r;
	if (atomic_load(&f->connecting)) {
		/* a connect after EINPROGRESS reports the outcome once */
		r = fss_connect_outcome(f);
		if (r != -EALREADY || !fss_file__nonblock(f))
			goto wait;
		return r;
	}
	/* blocking: signals are held from before the CONNECT round trip
	 * (client.c, "Signals on the blocking paths") */
	if (!fss_file__nonblock(f))
		held = fss_client__sig_hold(&old);
	r = fss_client__call(&req, &c);
	if (r == -FSS_HANDOVER_ERRNO) {
		/* the kernel's connect waits on the placeholder, with the
		 * caller's own mask (a signal held during the round trip is
		 * handled first, as if it came before the call) */
		fss_client__sig_release(held, &old);
		return fss_connect_kernel(f, fd, &req, &c);
	}
	if (r != -EINPROGRESS)
		goto out;
	atomic_store(&f->connecting, 1);
	if (fss_file__nonblock(f))
		goto out;
wait:
	for (;;) {
		r = fss_connect_outcome(f);
		if (r != -EALREADY)
			break;
		r = fss_wait_restart(f, EPOLLOUT, atomic_load(&f->sndtimeo_ms), false);
		if (r == -EAGAIN) {
			r = -EINPROGRESS;	/* SO_SNDTIMEO expired, as in the kernel */
			break;
		}
		if (r < 0)
			break;
	}
out:
	fss_client__sig_release(held, &old);
	return r;
}

static long fss_name(struct fss_file *f, uint32_t op, struct sockaddr *addr, socklen_t *len)
{
	struct fss_req req = { .op = op, .sock = f->id };
	struct fss_sockaddr fa;
	struct fss_cmpl c;
	long r;

	if (addr == NULL || len == NULL)
		return -EFAULT;
	r = fss_client__call(&req, &c);
	if (r < 0)
		return r;
	memcpy(&fa, c.data, sizeof(fa));
	return fss_addr_out(&fa, addr, len);
}

long fss_op_getsockname(struct fss_file *f, int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
	(void)fd;
	return fss_name(f, FSS_OP_GETSOCKNAME, FSS_SA(addr), len);
}

long fss_op_getpeername(struct fss_file *f, int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
	(void)fd;
	return fss_name(f, FSS_OP_GETPEERNAME, FSS_SA(addr), len);
}

long fss_op_shutdown(struct fss_file *f, int fd, int how)
{
	struct fss_req req = { .op = FSS_OP_SHUTDOWN, .sock = f->id, .arg0 = how };

	long r;

	if (how < SHUT_RD || how > SHUT_RDWR)
		return -EINVAL;
	r = fss_client__call(&req, NULL);
	if (r == 0 && atomic_load(&f->klisten))
		(void)fss_sys__shutdown(fd, how);	/* the kernel listener as well */
	return r;
}

/*
 * Options the daemon does not serve but servers set, kept on the kernel
 * placeholder: the kernel validates them, rounds them (SO_SNDTIMEO to
 * jiffies) and reads them back exactly as it would for a real socket.
 * They are accepted, not applied to the fsstack connection, except the
 * timeouts, which the shim's blocking calls honour.
 */
static const struct { int level, name; } fss_phopts[] = {
	{ SOL_SOCKET, SO_RCVTIMEO }, { SOL_SOCKET, SO_SNDTIMEO },
	{ SOL_SOCKET, SO_RCVLOWAT }, { SOL_SOCKET, SO_SNDLOWAT },
	{ SOL_SOCKET, SO_PRIORITY },
	{ IPPROTO_TCP, TCP_CORK }, { IPPROTO_TCP, TCP_QUICKACK },
	{ IPPROTO_TCP, TCP_USER_TIMEOUT }, { IPPROTO_TCP, TCP_MAXSEG },
	{ IPPROTO_TCP, TCP_NOTSENT_LOWAT }, { IPPROTO_TCP, TCP_SYNCNT },
	{ IPPROTO_TCP, TCP_LINGER2 }, { IPPROTO_TCP, TCP_WINDOW_CLAMP },
	{ IPPROTO_TCP, TCP_FASTOPEN }, { IPPROTO_TCP, TCP_CONGESTION },
	{ IPPROTO_IP, IP_TOS }, { IPPROTO_IP, IP_TTL },
	{ IPPROTO_IPV6, IPV6_TCLASS }, { IPPROTO_IPV6, IPV6_UNICAST_HOPS },
};

static bool fss_phopt(int level, int name)
{
	size_t i;

	for (i = 0; i < sizeof(fss_phopts) / sizeof(fss_phopts[0]); i++)
		if (fss_phopts[i].level == level && fss_phopts[i].name == name)
			return true;
	return false;
}

/* Reads a timeout back from the placeholder into f (milliseconds). */
static void fss_timeo_sync(struct fss_file *f, int fd, int name)
{
	struct timeval tv = { 0, 0 };
	socklen_t len = sizeof(tv);
	long ms;

	if (FSS_REAL(getsockopt)(fd, SOL_SOCKET, name, &tv, &len) < 0)
		return;
	ms = tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
	atomic_store(name == SO_RCVTIMEO ? &f->rcvtimeo_ms : &f->sndtimeo_ms,
		     ms > 0x7fffffff ? 0x7fffffff : (int)ms);
}

/*
 * Options whose every in-range value the daemon takes on any socket
 * (sockopt.go): a server sets them on each connection it accepts (redis:
 * TCP_NODELAY, SO_KEEPALIVE and three keepalive timers), and a round trip
 * each cost more than the rest of the connection. They are checked here
 * as the kernel checks them and posted without waiting: requests are
 * served in order, so a later getsockopt sees the value. Returns 1 to
 * post, 0 to ask the daemon, or -EINVAL.
 */
static int fss_sockopt__postable(int level, int name, const void *val, socklen_t len)
{
	int v, max = 0;

	if (level == SOL_SOCKET && name == SO_KEEPALIVE)
		max = -1;
	else if (level == IPPROTO_TCP && name == TCP_NODELAY)
		max = -1;
	else if (level == IPPROTO_TCP && (name == TCP_KEEPIDLE || name == TCP_KEEPINTVL))
		max = 32767;	/* MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL */
	else if (level == IPPROTO_TCP && name == TCP_KEEPCNT)
		max = 127;	/* MAX_TCP_KEEPCNT */
	else
		return 0;
	if (len < sizeof(int))
		return -EINVAL;
	memcpy(&v, val, sizeof(v));
	if (max > 0 && (v < 1 || v > max))
		return -EINVAL;
	return 1;
}

long fss_op_setsockopt(struct fss_file *f, int fd, int level, int name,
		       const void *val, socklen_t len)
{
	struct fss_req req = { .op = FSS_OP_SETSOCKOPT, .sock = f->id,
			       .arg0 = level, .arg1 = name, .arg2 = (int32_t)len };
	long r;

	if (fss_phopt(level, name)) {
		if (FSS_REAL(setsockopt)(fd, level, name, val, len) < 0)
			return -errno;
		if (level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO))
			fss_timeo_sync(f, fd, name);
		return 0;
	}
	if ((int)len < 0)
		return -EINVAL;
	if (len > FSS_OPT_MAX)
		return -EINVAL;
	r = fss_copy_in(req.data, val, len);
	if (r < 0)
		return r;
	r = fss_sockopt__postable(level, name, req.data, len);
	if (r < 0)
		return r;
	if (r > 0) {
		r = fss_client__post(&req);
		if (r == 0)
			fss_dmopt__mark(f, level, name);
		return r;
	}
	r = fss_client__call(&req, NULL);
	if (r == 0 && level == SOL_SOCKET && name == SO_LINGER && len >= sizeof(struct linger)) {
		struct linger lg;

		memcpy(&lg, req.data, sizeof(lg));
		atomic_store(&f->linger_secs, lg.l_linger);
		atomic_store(&f->linger_on, lg.l_onoff != 0);
	}
	if (r == 0)
		fss_dmopt__mark(f, level, name);
	return r;
}

static const uint8_t fss_tcp_state[] = {
	[FSS_ST_FREE] = TCP_CLOSE, [FSS_ST_OPEN] = TCP_CLOSE,
	[FSS_ST_LISTENING] = TCP_LISTEN, [FSS_ST_CONNECTING] = TCP_SYN_SENT,
	[FSS_ST_CONNECTED] = TCP_ESTABLISHED, [FSS_ST_CLOSED] = TCP_CLOSE,
};

long fss_op_getsockopt(struct fss_file *f, int fd, int level, int name,
		       void *val, socklen_t *lenp)
{
	struct fss_req req = { .op = FSS_OP_GETSOCKOPT, .sock = f->id,
			       .arg0 = level, .arg1 = name };
	struct fss_cmpl c;
	socklen_t len;
	long r;

	(void)fd;
	r = fss_copy_in(&len, lenp, sizeof(len));
	if (r < 0)
		return r;
	if ((int)len < 0)
		return -EINVAL;
	if (fss_phopt(level, name)) {
		if (level == IPPROTO_TCP && name == TCP_MAXSEG &&
		    fss_state_of(f) == FSS_ST_CONNECTED) {
			int mss = 1460;	/* the placeholder never connected */

			if (len > sizeof(mss))
				len = sizeof(mss);
			r = fss_copy_out(val, &mss, len);
			return r < 0 ? r : fss_copy_out(lenp, &len, sizeof(len));
		}
		r = FSS_REAL(getsockopt)(fd, level, name, val, lenp);
		return r < 0 ? -errno : 0;
	}
	if (level == IPPROTO_TCP && name == TCP_INFO) {
		/* synthesised: state and the basics, zeros elsewhere */
		struct tcp_info ti;
		uint32_t st = fss_state_of(f);

		memset(&ti, 0, sizeof(ti));
		ti.tcpi_state = st < sizeof(fss_tcp_state) ? fss_tcp_state[st] : TCP_CLOSE;
		ti.tcpi_rcv_mss = ti.tcpi_snd_mss = 1460;
		if (len > sizeof(ti))
			len = sizeof(ti);
		r = fss_copy_out(val, &ti, len);
		return r < 0 ? r : fss_copy_out(lenp, &len, sizeof(len));
	}
	req.arg2 = len > FSS_OPT_MAX ? FSS_OPT_MAX : (int32_t)len;
	r = fss_client__call(&req, &c);
	if (r < 0)
		return r;
	if (c.val0 < 0 || c.val0 > FSS_OPT_MAX)
		return -EPROTO;
	if ((socklen_t)c.val0 < len)
		len = (socklen_t)c.val0;
	r = fss_copy_out(val, c.data, len);
	return r < 0 ? r : fss_copy_out(lenp, &len, sizeof(len));
}

/* ---- receive ----------------------------------------------------------- */

/*
 * recvmsg's core.  Empty FIFO: end of stream (RDEOF/HUP) reads 0, a pending
 * error is returned once, a socket that is not connected is ENOTCONN, and
 * otherwise the call waits (or EAGAIN).  MSG_WAITALL keeps going until the
 * buffer is full, end of stream, an error, or a signal after some data.
 */
#define FSS_IOV_LOCAL 64

/*
 * The application's iovec array, copied in with the checks the kernel's
 * import_iovec makes: EINVAL for a bad count or length, EFAULT for an array
 * that cannot be read or a buffer the screen rejects.  *out is local (up to
 * FSS_IOV_LOCAL entries) or malloc'd (fss_iov_release frees it); it is the
 * caller's to advance.  mine: uiov is the shim's own array (read, send).
 */
static long fss_iov_import(const struct iovec *uiov, int iovcnt, bool mine, struct iovec *local,
			   struct iovec **out, size_t *total)
{
	struct iovec *v = local;
	int i;

	*out = local;
	*total = 0;
	if (iovcnt < 0 || iovcnt > 1024)
		return -EINVAL;
	if (!fss_user_ok(uiov, (size_t)iovcnt * sizeof(*uiov)))
		return -EFAULT;
	if (iovcnt > FSS_IOV_LOCAL) {
		v = malloc((size_t)iovcnt * sizeof(*v));
		if (v == NULL)
			return -ENOMEM;
	}
	*out = v;
	if (mine)	/* the shim's own (read, write, ...): no need to guard */
		memcpy(v, uiov, (size_t)iovcnt * sizeof(*v));
	else if (fss_ucopy(v, uiov, (size_t)iovcnt * sizeof(*v)) < 0)
		return -EFAULT;
	for (i = 0; i < iovcnt; i++) {
		if ((ssize_t)v[i].iov_len < 0)
			return -EINVAL;
		if (!fss_user_ok(v[i].iov_base, v[i].iov_len))
			return -EFAULT;
		*total += v[i].iov_len;
	}
	return 0;
}

static void fss_iov_release(struct iovec *v, struct iovec *local)
{
	if (v != local)
		free(v);
}

/* cur: the private iovec array, advanced here (MSG_WAITALL). */
static long fss_recvv_core(struct fss_file *f, struct iovec *cur, int iovcnt, size_t want,
			   int flags)
{
	size_t total = 0;
	long r, done = 0;
	int n = iovcnt;

	if (flags & MSG_OOB)
		return -EINVAL;		/* no urgent data, as with SO_OOBINLINE off and none sent */
	if (want == 0)
		return 0;

	for (;;) {
		r = fss_client__recv(f, cur, n, flags);
		if (r > 0) {
			done += r;
			total += (size_t)r;
			if (!(flags & MSG_WAITALL) || (flags & MSG_PEEK) || total == want)
				return done;
			while (r > 0) {	/* advance the private iovec copy */
				size_t k = (size_t)r < cur->iov_len ? (size_t)r : cur->iov_len;

				cur->iov_base = (char *)cur->iov_base + k;
				cur->iov_len -= k;
				r -= (long)k;
				if (cur->iov_len == 0) {
					cur++;
					n--;
				}
			}
			continue;
		}
		if (r != -EAGAIN)
			return done ? done : r;
		{
			uint32_t ev = fss_events_of(f), st;

			if (ev & FSS_EV_ERR) {
				r = fss_take_error(f);
				if (r != 0)
					return done ? done : (r > 0 ? -r : r);
			}
			if (ev & (FSS_EV_RDEOF | FSS_EV_HUP)) {
				/* bytes are published before RDEOF: look once more */
				r = fss_client__recv(f, cur, n, flags);
				if (r > 0)
					return done + r;
				return done;
			}
			if (fss_client__dead())
				return done ? done : -ECONNRESET;
			st = fss_ev_state(ev);
			if (st != FSS_ST_CONNECTED && st != FSS_ST_CONNECTING)
				return done ? done : -ENOTCONN;
		}
		if (fss_file__nonblock(f) || (flags & MSG_DONTWAIT))
			return done ? done : -EAGAIN;
		r = fss_wait(f, EPOLLIN | EPOLLRDHUP, atomic_load(&f->rcvtimeo_ms));
		if (r < 0)
			return done ? done : r;
	}
}

static long fss_recvv(struct fss_file *f, const struct iovec *uiov, int iovcnt, bool mine,
		      int flags)
{
	struct iovec local[FSS_IOV_LOCAL], *iov;
	size_t want;
	long r;

	r = fss_iov_import(uiov, iovcnt, mine, local, &iov, &want);
	if (r == 0)
		r = fss_recvv_core(f, iov, iovcnt, want, flags);
	fss_iov_release(iov, local);
	return r;
}

static long fss_recv1(struct fss_file *f, void *buf, size_t len, int flags)
{
	struct iovec iov = { buf, len };

	return fss_recvv(f, &iov, 1, true, flags);
}

long fss_op_read(struct fss_file *f, int fd, void *buf, size_t count)
{
	(void)fd;
	return fss_recv1(f, buf, count, 0);
}

long fss_op_readv(struct fss_file *f, int fd, const struct iovec *iov, int iovcnt)
{
	(void)fd;
	return fss_recvv(f, iov, iovcnt, false, 0);
}

long fss_op_recv(struct fss_file *f, int fd, void *buf, size_t len, int flags)
{
	(void)fd;
	return fss_recv1(f, buf, len, flags);
}

long fss_op_recvfrom(struct fss_file *f, int fd, void *buf, size_t len, int flags,
		     __SOCKADDR_ARG addr, socklen_t *alen)
{
	long r;

	(void)fd;
	r = fss_recv1(f, buf, len, flags);
	if (r >= 0 && FSS_SA(addr) != NULL && alen != NULL) {
		socklen_t zero = 0;	/* TCP leaves the source address out */

		fss_copy_out(alen, &zero, sizeof(zero));
	}
	return r;
}

long fss_op_recvmsg(struct fss_file *f, int fd, struct msghdr *msg, int flags)
{
	struct msghdr m;
	long r;

	(void)fd;
	if (!fss_user_ok(msg, sizeof(*msg)) || fss_ucopy(&m, msg, sizeof(m)) < 0)
		return -EFAULT;
	if (m.msg_iovlen > 1024)
		return -EMSGSIZE;
	r = fss_recvv(f, m.msg_iov, (int)m.msg_iovlen, false, flags);
	if (r >= 0) {
		m.msg_namelen = 0;
		m.msg_controllen = 0;
		m.msg_flags = 0;
		if (fss_ucopy(&msg->msg_namelen, &m.msg_namelen, sizeof(m.msg_namelen)) < 0 ||
		    fss_ucopy(&msg->msg_controllen, &m.msg_controllen, sizeof(m.msg_controllen)) < 0 ||
		    fss_ucopy(&msg->msg_flags, &m.msg_flags, sizeof(m.msg_flags)) < 0)
			return -EFAULT;
	}
	return r;
}

long fss_op_recvmmsg(struct fss_file *f, int fd, struct mmsghdr *vec, unsigned int vlen,
		     int flags, struct timespec *tmo)
{
	unsigned int i;
	long r;

	(void)tmo;	/* BUG(shim): the recvmmsg timeout is not applied */
	for (i = 0; i < vlen; i++) {
		r = fss_op_recvmsg(f, fd, &vec[i].msg_hdr, i ? flags | MSG_DONTWAIT : flags);
		if (r < 0)
			return i ? (long)i : r;
		vec[i].msg_len = (unsigned int)r;
		if (r == 0)
			return i + 1;
	}
	return vlen;
}

long fss_op___read_chk(struct fss_file *f, int fd, void *buf, size_t nbytes, size_t buflen)
{
	if (nbytes > buflen)
		__chk_fail();
	return fss_op_read(f, fd, buf, nbytes);
}

long fss_op___recv_chk(struct fss_file *f, int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		__chk_fail();
	return fss_op_recv(f, fd, buf, len, flags);
}

long fss_op___recvfrom_chk(struct fss_file *f, int fd, void *buf, size_t len, size_t buflen,
			   int flags, __SOCKADDR_ARG addr, socklen_t *alen)
{
	if (len > buflen)
		__chk_fail();
	return fss_op_recvfrom(f, fd, buf, len, flags, addr, alen);
}

/* ---- send -------------------------------------------------------------- */

/* Why nothing can be sent now, or 0 if the caller should wait for room. */
static long fss_send_blocked(struct fss_file *f, int flags)
{
	uint32_t ev = fss_events_of(f), st;
	long r;

	if (fss_client__dead())
		return fss_epipe(flags);
	if (ev & FSS_EV_ERR) {
		r = fss_take_error(f);
		if (r != 0)
			return r > 0 ? -r : r;
	}
	if (ev & (FSS_EV_WREOF | FSS_EV_HUP))
		return fss_epipe(flags);
	st = fss_ev_state(ev);
	if (st == FSS_ST_CONNECTING)
		return 0;
	if (!(ev & FSS_EV_CONNECTED))
		return fss_epipe(flags);	/* tcp_sendmsg on a closed socket */
	return 0;
}

/* Blocking sends queue everything (or stop at a signal with a partial count),
 * as the kernel's do; non-blocking ones take what fits. */
static long fss_sendv_core(struct fss_file *f, struct iovec *cur, int iovcnt, size_t want,
			   int flags)
{
	long r, done = 0;
	int n = iovcnt;

	if (flags & MSG_OOB)
		return -EOPNOTSUPP;	/* BUG(shim): no urgent data */
	r = fss_send_blocked(f, flags);
	if (r < 0)
		return r;
	if (want == 0)
		return 0;
	for (;;) {
		if (fss_state_of(f) == FSS_ST_CONNECTING)
			r = -EAGAIN;
		else if (atomic_load_explicit(&f->tx_nospace, memory_order_relaxed) &&
			 !fss_client__tx_writable(f))
			r = -EAGAIN;	/* full until a third is free, as the kernel */
		else
			r = fss_client__send(f, cur, n, flags);
		if (r == -EAGAIN)
			atomic_store_explicit(&f->tx_nospace, 1, memory_order_relaxed);
		else
			atomic_store_explicit(&f->tx_nospace, 0, memory_order_relaxed);
		if (r > 0) {
			done += r;
			if ((size_t)done == want)
				return done;
			while (r > 0) {
				size_t k = (size_t)r < cur->iov_len ? (size_t)r : cur->iov_len;

				cur->iov_base = (char *)cur->iov_base + k;
				cur->iov_len -= k;
				r -= (long)k;
				if (cur->iov_len == 0) {
					cur++;
					n--;
				}
			}
			continue;
		}
		if (r != -EAGAIN)
			return done ? done : r;
		r = fss_send_blocked(f, flags);
		if (r < 0)
			return done ? done : r;
		if (fss_file__nonblock(f) || (flags & MSG_DONTWAIT))
			return done ? done : -EAGAIN;
		r = fss_wait(f, EPOLLOUT, atomic_load(&f->sndtimeo_ms));
		if (r < 0)
			return done ? done : r;
	}
}

static long fss_sendv(struct fss_file *f, const struct iovec *uiov, int iovcnt, bool mine,
		      int flags)
{
	struct iovec local[FSS_IOV_LOCAL], *iov;
	size_t want;
	long r;

	r = fss_iov_import(uiov, iovcnt, mine, local, &iov, &want);
	if (r == 0)
		r = fss_sendv_core(f, iov, iovcnt, want, flags);
	fss_iov_release(iov, local);
	return fss_send_result(r, flags);
}

long fss_op_write(struct fss_file *f, int fd, const void *buf, size_t count)
{
	struct iovec iov = { (void *)buf, count };

	(void)fd;
	return fss_sendv(f, &iov, 1, true, 0);
}

long fss_op_writev(struct fss_file *f, int fd, const struct iovec *iov, int iovcnt)
{
	(void)fd;
	return fss_sendv(f, iov, iovcnt, false, 0);
}

long fss_op_send(struct fss_file *f, int fd, const void *buf, size_t len, int flags)
{
	struct iovec iov = { (void *)buf, len };

	(void)fd;
	return fss_sendv(f, &iov, 1, true, flags);
}

long fss_op_sendto(struct fss_file *f, int fd, const void *buf, size_t len, int flags,
		   __CONST_SOCKADDR_ARG addr, socklen_t alen)
{
	/* a connected TCP socket ignores the address, but the kernel still
	 * copies it in first */
	if (FSS_CSA(addr) != NULL) {
		struct sockaddr_storage ss;
		long r;

		if (alen > sizeof(ss))
			return -EINVAL;
		r = fss_copy_in(&ss, FSS_CSA(addr), alen);
		if (r < 0)
			return r;
	}
	return fss_op_send(f, fd, buf, len, flags);
}

long fss_op_sendmsg(struct fss_file *f, int fd, const struct msghdr *msg, int flags)
{
	struct msghdr m;

	(void)fd;
	if (!fss_user_ok(msg, sizeof(*msg)) || fss_ucopy(&m, msg, sizeof(m)) < 0)
		return -EFAULT;
	if (m.msg_iovlen > 1024)
		return -EMSGSIZE;
	return fss_sendv(f, m.msg_iov, (int)m.msg_iovlen, false, flags);
}

long fss_op_sendmmsg(struct fss_file *f, int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
	unsigned int i;
	long r;

	for (i = 0; i < vlen; i++) {
		r = fss_op_sendmsg(f, fd, &vec[i].msg_hdr, flags);
		if (r < 0)
			return i ? (long)i : r;
		vec[i].msg_len = (unsigned int)r;
	}
	return vlen;
}

static long fss_sendfile_core(struct fss_file *f, int in_fd, off64_t *offset, size_t count);

long fss_op_sendfile64(struct fss_file *f, int out_fd, int in_fd, off64_t *offset, size_t count)
{
	(void)out_fd;
	return fss_send_result(fss_sendfile_core(f, in_fd, offset, count), 0);
}

static long fss_sendfile_core(struct fss_file *f, int in_fd, off64_t *offset, size_t count)
{
	long r, done = 0;

	if (offset != NULL && !fss_user_ok(offset, sizeof(*offset)))
		return -EFAULT;
	r = fss_send_blocked(f, 0);
	if (r < 0)
		return r;
	while ((size_t)done < count) {
		r = fss_client__send_file(f, in_fd, offset, count - (size_t)done);
		if (r > 0) {
			done += r;
			continue;
		}
		if (r == 0)		/* end of the file */
			break;
		if (r != -EAGAIN)
			return done ? done : r;
		r = fss_send_blocked(f, 0);
		if (r < 0)
			return done ? done : r;
		if (fss_file__nonblock(f))
			return done ? done : -EAGAIN;
		r = fss_wait(f, EPOLLOUT, atomic_load(&f->sndtimeo_ms));
		if (r < 0)
			return done ? done : r;
	}
	return done;
}

long fss_op_sendfile(struct fss_file *f, int out_fd, int in_fd, off_t *offset, size_t count)
{
	return fss_op_sendfile64(f, out_fd, in_fd, (off64_t *)offset, count);
}

/* ---- splice ------------------------------------------------------------ */

/*
 * splice(2) with an fsstack socket on one end and a pipe on the other, as
 * the kernel's do_splice, tcp_splice_read and splice_to_socket behave:
 * the socket's O_NONBLOCK (or SO_RCVTIMEO/SO_SNDTIMEO) governs waiting on
 * the socket, SPLICE_F_NONBLOCK or the pipe's O_NONBLOCK waiting on the
 * pipe; EOF reads 0; a socket that cannot send is EPIPE (+ SIGPIPE, which
 * splice cannot suppress).  Bytes are copied between the FIFO and the pipe
 * (not moved page by page), and only what the pipe took or gave moves the
 * FIFO, so a full or empty pipe loses nothing.  haproxy's option splice-*
 * runs on this.
 */
static long fss_splice_read(struct fss_file *f, int pfd, size_t len, bool pipe_nb)
{
	long r;

	for (;;) {
		r = fss_client__recv_to_pipe(f, pfd, len, pipe_nb);
		if (r != -ENODATA)
			return r;
		{
			uint32_t ev = fss_events_of(f), st;

			if (ev & FSS_EV_ERR) {
				r = fss_take_error(f);
				if (r != 0)
					return r > 0 ? -r : r;
			}
			if (ev & (FSS_EV_RDEOF | FSS_EV_HUP)) {
				r = fss_client__recv_to_pipe(f, pfd, len, pipe_nb);
				return r == -ENODATA ? 0 : r;
			}
			if (fss_client__dead())
				return -ECONNRESET;
			st = fss_ev_state(ev);
			if (st != FSS_ST_CONNECTED && st != FSS_ST_CONNECTING)
				return -ENOTCONN;
		}
		if (fss_file__nonblock(f))
			return -EAGAIN;
		r = fss_wait(f, EPOLLIN | EPOLLRDHUP, atomic_load(&f->rcvtimeo_ms));
		if (r < 0)
			return r;
	}
}

static long fss_splice_write(struct fss_file *f, int pfd, size_t len, bool pipe_nb)
{
	long r, done = 0;

	r = fss_send_blocked(f, 0);
	if (r < 0)
		return r;
	while ((size_t)done < len) {
		if (fss_state_of(f) == FSS_ST_CONNECTING)
			r = -ENOSPC;
		else	/* once some moved, an empty pipe ends the call */
			r = fss_client__send_from_pipe(f, pfd, len - (size_t)done, pipe_nb || done > 0);
		if (r > 0) {
			done += r;
			continue;
		}
		if (r == 0 || r == -EAGAIN)	/* pipe empty: no writers, or now */
			return done ? done : r;
		if (r != -ENOSPC)
			return done ? done : r;
		if (done)
			return done;
		r = fss_send_blocked(f, 0);
		if (r < 0)
			return r;
		if (fss_file__nonblock(f))
			return -EAGAIN;
		r = fss_wait(f, EPOLLOUT, atomic_load(&f->sndtimeo_ms));
		if (r < 0)
			return r;
	}
	return done;
}

long fss_op_splice(struct fss_file *f, bool sock_in, int fd_in, loff_t *off_in, int fd_out,
		   loff_t *off_out, size_t len, unsigned int flags)
{
	int pfd = sock_in ? fd_out : fd_in, fl;
	struct stat st;

	if (len == 0)
		return 0;
	if (flags & ~(unsigned int)(SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT))
		return -EINVAL;
	fl = FSS_REAL(fcntl)(pfd, F_GETFL);
	if (fl < 0)
		return -errno;
	/* the kernel's FMODE_READ / FMODE_WRITE checks come first */
	if (sock_in ? (fl & O_ACCMODE) == O_RDONLY : (fl & O_ACCMODE) == O_WRONLY)
		return -EBADF;
	if (fss_fdtab__peek(pfd) != NULL || fstat(pfd, &st) < 0 || !S_ISFIFO(st.st_mode))
		return -EINVAL;		/* neither end is a pipe */
	if (sock_in) {
		if (off_out != NULL)
			return -ESPIPE;
		if (off_in != NULL)
			return -EINVAL;	/* a socket has no pread */
		return fss_splice_read(f, pfd, len, (flags & SPLICE_F_NONBLOCK) || (fl & O_NONBLOCK));
	}
	if (off_in != NULL)
		return -ESPIPE;
	if (off_out != NULL)
		return -EINVAL;
	return fss_send_result(fss_splice_write(f, pfd, len, (flags & SPLICE_F_NONBLOCK) || (fl & O_NONBLOCK)), 0);
}

/* ---- fcntl / ioctl ----------------------------------------------------- */

long fss_op_fcntl(struct fss_file *f, int fd, int cmd, long arg)
{
	long r;

	switch (cmd) {
	case F_SETFL:
		/* mirror onto the placeholder so F_GETFL stays the kernel's
		 * (a kernel listener stays O_NONBLOCK: fss_klisten) */
		r = FSS_REAL(fcntl)(fd, F_SETFL,
				    (void *)(atomic_load(&f->klisten) ? arg | O_NONBLOCK : arg));
		if (r < 0)
			return -errno;
		atomic_store(&f->status_flags, (int)arg & O_NONBLOCK);
		return r;
	case F_GETFL:
		r = FSS_REAL(fcntl)(fd, F_GETFL);
		if (r < 0)
			return -errno;
		if (atomic_load(&f->klisten))
			r = (r & ~O_NONBLOCK) | (atomic_load(&f->status_flags) & O_NONBLOCK);
		return r;
	case F_DUPFD:
	case F_DUPFD_CLOEXEC: {
		struct fss_file *old;

		r = FSS_REAL(fcntl)(fd, cmd, (void *)arg);
		if (r < 0)
			return -errno;
		fss_file__ref(f);
		if (fss_fdtab__xchg((int)r, f, &old) < 0) {
			fss_file__put(f);
			fss_sys__close((int)r);
			return -EMFILE;
		}
		if (old != NULL)
			fss_file__put(old);
		return r;
	}
	default:
		r = FSS_REAL(fcntl)(fd, cmd, (void *)arg);
		return r < 0 ? -errno : r;
	}
}

long fss_op_ioctl(struct fss_file *f, int fd, unsigned long req, void *arg)
{
	long r;
	int v;

	switch (req) {
	case FIONBIO:
		r = fss_copy_in(&v, arg, sizeof(v));
		if (r < 0)
			return r;
		if (FSS_REAL(ioctl)(fd, FIONBIO, atomic_load(&f->klisten) ? &(int){ 1 } : arg) < 0)
			return -errno;
		if (v)
			atomic_fetch_or(&f->status_flags, O_NONBLOCK);
		else
			atomic_fetch_and(&f->status_flags, ~O_NONBLOCK);
		return 0;
	case FIONREAD:		/* == SIOCINQ */
		if (fss_state_of(f) == FSS_ST_LISTENING)
			return -EINVAL;
		v = (int)fss_client__readable(f);
		return fss_copy_out(arg, &v, sizeof(v));
	case SIOCOUTQ: {
		struct fss_sock *s = fss_client__slot(f);

		v = (int)(__atomic_load_n(&s->tx_tail, __ATOMIC_RELAXED) -
			  fss_load_acquire(&s->tx_head));
		return fss_copy_out(arg, &v, sizeof(v));
	}
	default:
		r = FSS_REAL(ioctl)(fd, req, arg);
		return r < 0 ? -errno : r;
	}
}
