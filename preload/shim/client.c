/* SPDX-License-Identifier: Apache-2.0 */
/*
 * client.c - this process as a client of the fsstack daemon: attach, the
 * request/completion rings, the FIFOs, kicks and sleeping.
 *
 *   app thread --(req ring, req_lock)--> daemon --(cmpl ring, routed by
 *                                                   req_id)--> that thread
 *   app thread --(tx FIFO + kick bit + doorbell if daemon sleeps)--> daemon
 *   daemon --(rx FIFO, slot events, ev_seq, wake fd if shim_waiters)--> app
 *
 * Every layout and memory order comes from fsstack_abi.h and
 * docs/SHIM_PROTOCOL.md.
 *
 * Sleeping.  The daemon writes 1 to the wake eventfd when it publishes a
 * change while shim_waiters > 0.  The shim never reads (drains) that
 * eventfd: it registers it with EPOLLET, in every application epoll set that
 * holds an fsstack socket and in one private epoll fd per blocking thread,
 * so each write is an edge that every sleeper sees, however many there are.
 * (A drained, level-triggered fd would let one thread swallow the wake-up
 * another thread's epoll needed.)  The control connection is registered the
 * same way: EOF on it means the daemon is gone, and every waiter wakes.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "client.h"

struct fss_client fss_client;

/* Per-thread private epoll fd holding the wake fd and the control
 * connection (EPOLLET), for blocking calls, poll and select.  Written only by
 * its thread; wait_gen is the client generation it was built for. */
static FSS_TLS int fss_wait_ep = -1;
static FSS_TLS uint32_t fss_wait_gen;
static pthread_key_t fss_wait_key;
static pthread_once_t fss_wait_once = PTHREAD_ONCE_INIT;


/* ---- small helpers --------------------------------------------------- */

static bool fss_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* Moves an internal fd out of the application's way: high, close-on-exec. */
int fss_client__hide_fd(int fd)
{
	struct rlimit rl;
	long base = 256;
	int nfd;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (long)rl.rlim_cur > 512)
		base = (long)rl.rlim_cur - 256;
	nfd = FSS_REAL(fcntl)(fd, F_DUPFD_CLOEXEC, (void *)base);
	if (nfd < 0)
		nfd = FSS_REAL(fcntl)(fd, F_DUPFD_CLOEXEC, (void *)3L);
	if (nfd < 0) {
		FSS_REAL(fcntl)(fd, F_SETFD, (void *)(long)FD_CLOEXEC);
		return fd;
	}
	fss_sys__close(fd);
	return nfd;
}

bool fss_client__internal_fd(int fd)
{
	return fss_client.attached &&
	       (fd == fss_client.ctl_fd || fd == fss_client.doorbell_fd ||
		fd == fss_client.wake_fd || (fd >= 0 && fd == fss_wait_ep));
}

int fss_client__internal_fds(int *fds)
{
	int n = 0;

	if (!fss_client.attached)
		return 0;
	fds[n++] = fss_client.ctl_fd;
	fds[n++] = fss_client.doorbell_fd;
	fds[n++] = fss_client.wake_fd;
	if (fss_wait_ep >= 0)
		fds[n++] = fss_wait_ep;
	return n;
}

static void fss_client__eventfd_write(int fd)
{
	uint64_t one = 1;

	(void)!FSS_REAL(write)(fd, &one, sizeof(one));
}

/* The daemon is gone for good: say so once, fail everything from now on. */
static void fss_client__mark_dead(const char *why)
{
	if (atomic_exchange(&fss_client.dead, 1) == 0)
		fss_log("the fsstack daemon %s; fsstack sockets of this process fail from now on", why);
}

bool fss_client__dead(void)
{
	if (atomic_load_explicit(&fss_client.dead, memory_order_relaxed))
		return true;
	if (__atomic_load_n(&fss_client.hdr->daemon_state, __ATOMIC_ACQUIRE) == FSS_DAEMON_GONE) {
		fss_client__mark_dead("dropped this client or is shutting down");
		return true;
	}
	return false;
}

/* ---- attach ------------------------------------------------------------ */

static long fss_client__check_seg(const struct fss_seg_hdr *h, uint64_t seg_size,
				  uint32_t client_id)
{
	uint64_t fifo_bytes;

	if (memcmp(h->magic, FSS_SEG_MAGIC, 8) != 0 || h->abi_version != FSS_ABI_VERSION ||
	    h->hdr_size != sizeof(struct fss_seg_hdr) || h->seg_size != seg_size ||
	    h->sock_size != sizeof(struct fss_sock) || h->msg_size != sizeof(struct fss_req) ||
	    h->client_id != client_id)
		return -EPROTO;
	if (!fss_pow2(h->req_entries) || !fss_pow2(h->cmpl_entries) ||
	    h->cmpl_entries < h->req_entries || !fss_pow2(h->rx_fifo_size) ||
	    !fss_pow2(h->tx_fifo_size) || h->sock_count == 0 || h->sock_count % 64 != 0 ||
	    h->sock_count > FSS_MAX_SOCKS)
		return -EPROTO;
	fifo_bytes = (uint64_t)h->sock_count * ((uint64_t)h->rx_fifo_size + h->tx_fifo_size);
	if (h->req_off + sizeof(struct fss_ring) + (uint64_t)h->req_entries * 64 > seg_size ||
	    h->cmpl_off + sizeof(struct fss_ring) + (uint64_t)h->cmpl_entries * 64 > seg_size ||
	    h->ready_map_off + h->sock_count / 8 > seg_size ||
	    h->kick_map_off + h->sock_count / 8 > seg_size ||
	    h->sock_off + (uint64_t)h->sock_count * sizeof(struct fss_sock) > seg_size ||
	    h->fifo_off + fifo_bytes > seg_size ||
	    (h->req_off | h->cmpl_off | h->ready_map_off | h->kick_map_off | h->sock_off) % 64 ||
	    h->fifo_off % 4096)
		return -EPROTO;
	return 0;
}

/* Connects, says hello, receives the segment and the two eventfds, maps the
 * segment.  Fills *c only on success. */
static long fss_client__open(const char *path, uint32_t hello_flags, struct fss_client *c)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * FSS_ATTACH_NFDS)];
		struct cmsghdr align;
	} cbuf;
	struct timeval tv = { .tv_sec = 5 };
	struct fss_hello_reply reply;
	struct fss_hello hello;
	struct sockaddr_un sun;
	struct cmsghdr *cm;
	struct msghdr msg;
	struct iovec iov;
	int fds[FSS_ATTACH_NFDS] = { -1, -1, -1 };
	int sk, nfds = 0, i;
	void *seg = MAP_FAILED;
	ssize_t n;
	long r;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	sk = fss_sys__socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sk < 0)
		return -errno;
	/* a daemon that accepts but never answers must not hang the host */
	FSS_REAL(setsockopt)(sk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	FSS_REAL(setsockopt)(sk, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path));
	if (FSS_REAL(connect)(sk, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		r = -errno;
		goto err_sk;
	}

	memset(&hello, 0, sizeof(hello));
	memcpy(hello.magic, FSS_HELLO_MAGIC, FSS_MAGIC_LEN);
	hello.abi_version = FSS_ABI_VERSION;
	hello.size = sizeof(hello);
	hello.pid = (int32_t)getpid();
	hello.flags = hello_flags;
	n = FSS_REAL(send)(sk, &hello, sizeof(hello), MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(hello)) {
		r = n < 0 ? -errno : -EPROTO;
		goto err_sk;
	}

	memset(&reply, 0, sizeof(reply));
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = &reply;
	iov.iov_len = sizeof(reply);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf.buf;
	msg.msg_controllen = sizeof(cbuf.buf);
	n = FSS_REAL(recvmsg)(sk, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0) {
		r = errno == EAGAIN ? -ETIMEDOUT : -errno;
		goto err_sk;
	}
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (i = 0; (size_t)i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (nfds < FSS_ATTACH_NFDS)
				fds[nfds++] = fd;
			else
				fss_sys__close(fd);
		}
	}
	if (n < 16 || memcmp(reply.magic, FSS_REPLY_MAGIC, FSS_MAGIC_LEN) != 0) {
		r = -EPROTO;
		goto err_fds;
	}
	if (reply.status != 0) {
		r = reply.status < 0 ? reply.status : -EPROTO;
		goto err_fds;
	}
	if ((size_t)n < sizeof(reply) || reply.abi_version != FSS_ABI_VERSION ||
	    nfds != FSS_ATTACH_NFDS || reply.seg_size < sizeof(struct fss_seg_hdr) ||
	    reply.client_id == 0) {
		r = -EPROTO;
		goto err_fds;
	}
	seg = mmap(NULL, reply.seg_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   fds[FSS_FD_SEGMENT], 0);
	if (seg == MAP_FAILED) {
		r = -errno;
		goto err_fds;
	}
	r = fss_client__check_seg(seg, reply.seg_size, reply.client_id);
	if (r < 0)
		goto err_seg;
	fss_sys__close(fds[FSS_FD_SEGMENT]);

	memset(c, 0, sizeof(*c));
	c->ctl_fd = fss_client__hide_fd(sk);
	c->doorbell_fd = fss_client__hide_fd(fds[FSS_FD_DOORBELL]);
	c->wake_fd = fss_client__hide_fd(fds[FSS_FD_WAKE]);
	c->seg = seg;
	c->seg_size = reply.seg_size;
	c->hdr = seg;
	c->req = fss_ring_at(seg, c->hdr->req_off);
	c->cmpl = fss_ring_at(seg, c->hdr->cmpl_off);
	c->kick_map = (uint64_t *)((char *)seg + c->hdr->kick_map_off);
	c->ready_map = (uint64_t *)((char *)seg + c->hdr->ready_map_off);
	c->req_entries = c->hdr->req_entries;
	c->cmpl_entries = c->hdr->cmpl_entries;
	c->sock_count = c->hdr->sock_count;
	c->rx_size = c->hdr->rx_fifo_size;
	c->tx_size = c->hdr->tx_fifo_size;
	c->client_id = reply.client_id;
	return 0;

err_seg:
	munmap(seg, reply.seg_size);
err_fds:
	for (i = 0; i < nfds; i++)
		fss_sys__close(fds[i]);
err_sk:
	fss_sys__close(sk);
	return r;
}

static void fss_client__install(const struct fss_client *c)
{
	uint32_t gen = fss_client.generation + 1;

	fss_client.ctl_fd = c->ctl_fd;
	fss_client.doorbell_fd = c->doorbell_fd;
	fss_client.wake_fd = c->wake_fd;
	fss_client.seg = c->seg;
	fss_client.seg_size = c->seg_size;
	fss_client.hdr = c->hdr;
	fss_client.req = c->req;
	fss_client.cmpl = c->cmpl;
	fss_client.kick_map = c->kick_map;
	fss_client.ready_map = c->ready_map;
	fss_client.req_entries = c->req_entries;
	fss_client.cmpl_entries = c->cmpl_entries;
	fss_client.sock_count = c->sock_count;
	fss_client.rx_size = c->rx_size;
	fss_client.tx_size = c->tx_size;
	fss_client.client_id = c->client_id;
	atomic_store(&fss_client.dead, 0);
	fss_client.attached = true;
	atomic_store_explicit(&fss_client.generation, gen, memory_order_release);
}

long fss_client__attach(const char *path)
{
	struct fss_client c;
	long r;

	r = fss_client__open(path, FSS_HELLO_WAKE_ACK | FSS_HELLO_HANDOVER | FSS_HELLO_TX_NOSPACE | FSS_HELLO_ACCEPT_RING, &c);
	if (r < 0)
		return r;
	pthread_mutex_init(&fss_client.req_lock, NULL);
	pthread_mutex_init(&fss_client.cmpl_lock, NULL);
	fss_client__install(&c);
	return 0;
}

/* ---- per-thread wait epoll -------------------------------------------- */

static void fss_wait__destroy(void *arg)
{
	(void)arg;
	if (fss_wait_ep >= 0)
		fss_sys__close(fss_wait_ep);
	fss_wait_ep = -1;
}

static void fss_wait__key_init(void)
{
	pthread_key_create(&fss_wait_key, fss_wait__destroy);
}

/* This thread's private epoll fd (see the file comment), or -errno. */
static int fss_wait__ep(void)
{
	uint32_t gen = atomic_load_explicit(&fss_client.generation, memory_order_acquire);
	struct epoll_event ev;
	int ep;

	if (FSS_LIKELY(fss_wait_ep >= 0 && fss_wait_gen == gen))
		return fss_wait_ep;
	if (fss_wait_ep >= 0)		/* built for the parent before fork */
		fss_sys__close(fss_wait_ep);
	fss_wait_ep = -1;
	pthread_once(&fss_wait_once, fss_wait__key_init);
	ep = FSS_REAL(epoll_create1)(EPOLL_CLOEXEC);
	if (ep < 0)
		return -errno;
	ep = fss_client__hide_fd(ep);
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = FSS_TAG_WAKE;
	if (fss_sys__epoll_ctl(ep, EPOLL_CTL_ADD, fss_client.wake_fd, &ev) < 0)
		goto err;
	ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
	ev.data.u64 = FSS_TAG_CTL;
	if (fss_sys__epoll_ctl(ep, EPOLL_CTL_ADD, fss_client.ctl_fd, &ev) < 0)
		goto err;
	fss_wait_ep = ep;
	fss_wait_gen = gen;
	pthread_setspecific(fss_wait_key, (void *)1);
	return ep;
err:
	fss_sys__close(ep);
	return -errno;
}

/* EOF (or any byte) on the control connection: the daemon is gone. */
static void fss_client__check_ctl(void)
{
	char b;
	ssize_t n = FSS_REAL(recv)(fss_client.ctl_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n >= 0 || (errno != EAGAIN && errno != EINTR))
		fss_client__mark_dead("went away (its connection closed)");
}

/* Before a wait that found nothing sleeps, it watches the header's ev_seq
 * (any readiness change the daemon publishes) for up to the configured
 * spin, yielding the CPU between looks: a change that comes meanwhile is
 * taken without the daemon's write to the wake fd and without the
 * sleep's context switch, which cost the daemon 9% of its CPU and the
 * application a switch per request when it served one connection's
 * request at a time (redis).  Kernel fds in the same wait are looked at
 * only after the spin, so it is kept short.  The caller holds the
 * application's signals (a handler that ran during the spin would
 * otherwise not end the wait with EINTR); one that comes and that the
 * sleep would take (not blocked in mask, the sleep's mask) ends the spin,
 * so the sleep says EINTR at once.  Returns whether something changed. */
bool fss_client__spin(int64_t timeout_ns, const sigset_t *mask)
{
	int64_t spin = fss_config.spin_ns, until;
	sigset_t pend;
	uint32_t seq;

	if (spin <= 0 || fss_client.hdr == NULL || fss_client__dead())
		return false;
	if (timeout_ns > 0 && timeout_ns < spin)
		spin = timeout_ns;
	seq = __atomic_load_n(&fss_client.hdr->ev_seq, __ATOMIC_ACQUIRE);
	until = fss_now_ns() + spin;
	while (fss_now_ns() < until) {
		for (int i = 0; i < 64; i++) {
			if (__atomic_load_n(&fss_client.hdr->ev_seq, __ATOMIC_ACQUIRE) != seq)
				return true;
			__builtin_ia32_pause();
		}
		sched_yield();
		if (sigpending(&pend) == 0) {
			for (int sig = 1; sig < NSIG; sig++) {
				if (sigismember(&pend, sig) == 1 && (mask == NULL || sigismember(mask, sig) != 1))
					return false;
			}
		}
	}
	return __atomic_load_n(&fss_client.hdr->ev_seq, __ATOMIC_ACQUIRE) != seq;
}

void fss_client__sleep_begin(void)
{
	__atomic_fetch_add(&fss_client.hdr->shim_waiters, 1, __ATOMIC_SEQ_CST);
	fss_fence();
}

/* The attach said FSS_HELLO_WAKE_ACK: the daemon writes the wake fd once per
 * acknowledged wake-up (the header's wake coalescing rule), so every
 * wake-up must be acknowledged, fenced before the re-check that follows. */
static void fss_client__ack_wake(void)
{
	__atomic_store_n(&fss_client.hdr->wake_ack,
			 __atomic_load_n(&fss_client.hdr->wake_seq, __ATOMIC_ACQUIRE), __ATOMIC_SEQ_CST);
	fss_fence();
}

/* Every caller re-checks what it waits for after this. */
void fss_client__sleep_end(void)
{
	__atomic_fetch_sub(&fss_client.hdr->shim_waiters, 1, __ATOMIC_SEQ_CST);
	fss_client__ack_wake();
}

/* Every consumer of the wake fd's edges passes them here, sleeping or not:
 * an edge taken without an acknowledgement (epoll_wait's look at the kernel
 * fds once fsstack items are ready, poll's drain of the wait fd) would leave
 * wake_ack behind wake_seq for good, and the daemon would never write the
 * wake fd again (nginx's workers then slept forever). */
void fss_client__saw_event(uint64_t tag)
{
	if (tag == FSS_TAG_WAKE)
		fss_client__ack_wake();
	else if (tag == FSS_TAG_CTL)
		fss_client__check_ctl();
}

/*
 * Signals on the blocking paths.  A signal handled while a blocking call
 * runs in the shim but outside its sleeping syscall (a request's round
 * trip, the re-check before the sleep, the loop after a wake-up that was
 * not for this waiter) would be lost: the handler runs, and the shim goes
 * back to sleep where the kernel's call would have said EINTR.  So a
 * blocking path holds the application's asynchronous signals from before
 * its last check (or its request) to its return, and sleeps with the
 * caller's own mask put back atomically by the sleeping syscall
 * (epoll_pwait, ppoll): a signal that came meanwhile is delivered inside
 * that syscall, which says EINTR.  Non-blocking calls and calls that find
 * what they want at once never pay for it.  The faults (SIGSEGV, SIGBUS,
 * ...) are not held: a fault with its signal blocked kills the process
 * (ucopy.c's guarded copies rely on the handler).
 */
static FSS_TLS const sigset_t *fss_sig_caller;	/* the caller's mask while held */

bool fss_client__sig_hold(sigset_t *old)
{
	sigset_t all;

	if (fss_sig_caller != NULL)
		return false;	/* an outer blocking path holds them */
	sigfillset(&all);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGTRAP);
	sigdelset(&all, SIGSYS);
	if (pthread_sigmask(SIG_BLOCK, &all, old) != 0)
		return false;
	fss_sig_caller = old;
	return true;
}

void fss_client__sig_release(bool held, const sigset_t *old)
{
	if (!held)
		return;
	fss_sig_caller = NULL;
	pthread_sigmask(SIG_SETMASK, old, NULL);	/* what came meanwhile is delivered now */
}

const sigset_t *fss_client__sig_caller(void)
{
	return fss_sig_caller;
}

long fss_client__block(bool (*ready)(void *arg), void *arg, int timeout_ms, bool intr)
{
	/* an interruptible sleep under a hold puts the caller's mask back for
	 * the sleep only; any other sleep keeps the thread's mask (under a
	 * hold, signals stay pending until the interruptible sleep) */
	const sigset_t *mask = intr ? fss_sig_caller : NULL;
	struct epoll_event evs[4];
	int ep, n, i;

	ep = fss_wait__ep();
	if (ep < 0)
		return ep;
	fss_client__sleep_begin();
	if (ready(arg) || fss_client__dead()) {
		fss_client__sleep_end();
		return 0;
	}
	n = FSS_REAL(epoll_pwait)(ep, evs, 4, timeout_ms, mask);
	fss_client__sleep_end();
	if (n < 0 && errno != EINTR) {
		/* the application closed this thread's wait fd (closefrom in
		 * another thread, a raw close syscall): forget the number,
		 * which may be the application's by now, and build a new one */
		fss_wait_ep = -1;
		return 0;
	}
	if (n < 0)
		return intr ? -EINTR : 0;
	if (n == 0)
		return -ETIMEDOUT;
	for (i = 0; i < n; i++)
		fss_client__saw_event(evs[i].data.u64);
	return 0;
}

/* ---- requests ---------------------------------------------------------- */

/*
 * Rings the doorbell if the daemon sleeps for a reason in want: the thread
 * that clears daemon_sleeping (compare-and-swap to 0) writes the eventfd,
 * every other one sees 0 and does not.  One write per sleep, however many
 * requests and kicks follow before the daemon's loop runs again (a server
 * answering a dozen clients in one pass of its event loop rang a dozen
 * times, each a syscall, while the first wake-up was still on its way).
 * Nothing is lost: a poster that sees 0 made its request or kick visible
 * before it looked (sequentially consistent), and the daemon serves
 * everything after the write that woke it; a daemon that cleared the flag
 * itself is awake and re-checks before it sleeps again.
 */
static void fss_client__ring(uint32_t want)
{
	uint32_t v;

	fss_fence();
	v = __atomic_load_n(&fss_client.hdr->daemon_sleeping, __ATOMIC_SEQ_CST);
	while (v & want)
		if (__atomic_compare_exchange_n(&fss_client.hdr->daemon_sleeping, &v, 0, false,
						__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
			fss_client__eventfd_write(fss_client.doorbell_fd);
			return;
		}
}

static void fss_client__doorbell(void)
{
	fss_client__ring(FSS_DSLEEP_REQ | FSS_DSLEEP_CMPL);
}

void fss_client__poke(void)
{
	if (__atomic_load_n(&fss_client.hdr->shim_waiters, __ATOMIC_SEQ_CST) > 0)
		fss_client__eventfd_write(fss_client.wake_fd);
}

void fss_client__kick(uint32_t slot)
{
	__atomic_fetch_or(&fss_client.kick_map[slot / 64], 1ull << (slot % 64), __ATOMIC_SEQ_CST);
	fss_client__doorbell();
}

/*
 * Requests and completions, any number of threads at once:
 *
 *   caller: register a waiter (req_id) --> post under req_lock -->
 *           whoever holds cmpl_lock takes every completion and routes it
 *           to its waiter (done = 1), then pokes the wake fd if it routed
 *           one to another thread --> the caller sees done, returns.
 *
 * Lock order: req_lock, then cmpl_lock (post drains completions while it
 * waits for room on the request ring).  Completions nobody waits for (those
 * of posted requests, or of calls abandoned by a fork) are dropped.
 */
struct fss_waiter {
	uint64_t req_id;		/* fixed */
	_Atomic int done;		/* set (release) by the router */
	struct fss_cmpl cmpl;		/* written by the router before done */
	struct fss_waiter *next;	/* under cmpl_lock */
};

static bool fss_waiter__ready(void *arg)
{
	struct fss_waiter *w = arg;

	return atomic_load_explicit(&w->done, memory_order_acquire) ||
	       fss_load_acquire(&fss_client.cmpl->prod) !=
	       __atomic_load_n(&fss_client.cmpl->cons, __ATOMIC_RELAXED);
}

/* Takes every completion, hands each to its waiter.  Holds cmpl_lock.
 * Returns how many went to a waiter other than self. */
static int fss_client__route_locked(struct fss_waiter *self)
{
	struct fss_ring *cq = fss_client.cmpl;
	uint32_t cons = __atomic_load_n(&cq->cons, __ATOMIC_RELAXED);
	uint32_t prod = fss_load_acquire(&cq->prod);
	int others = 0;

	for (; cons != prod; cons++) {
		const struct fss_cmpl *c = fss_ring_entry(cq, fss_client.cmpl_entries, cons);
		struct fss_waiter **pp, *w;

		for (pp = &fss_client.waiters; (w = *pp) != NULL; pp = &w->next) {
			if (w->req_id != c->req_id)
				continue;
			*pp = w->next;
			memcpy(&w->cmpl, c, sizeof(*c));
			atomic_store_explicit(&w->done, 1, memory_order_release);
			others += w != self;
			break;
		}
	}
	if (prod == __atomic_load_n(&cq->cons, __ATOMIC_RELAXED))
		return others;		/* nothing taken */
	fss_store_release(&cq->cons, prod);
	/* The daemon stops taking requests while the completion ring is full
	 * and sleeps with FSS_DSLEEP_CMPL set: room on the ring is what it
	 * waits for, and only this doorbell tells it (fsstack_abi.h, ring
	 * rules).  Without it a request ring filled behind a full completion
	 * ring (800 CLOSEs nobody waits for) never drains: the poster waits
	 * for room on the request ring forever. */
	fss_client__ring(FSS_DSLEEP_CMPL);
	return others;
}

static void fss_client__route(struct fss_waiter *self)
{
	int others;

	pthread_mutex_lock(&fss_client.cmpl_lock);
	others = fss_client__route_locked(self);
	pthread_mutex_unlock(&fss_client.cmpl_lock);
	if (others > 0)
		fss_client__poke();	/* their owners may be asleep */
}

/* Puts req on the request ring, waiting for room (and routing completions
 * meanwhile: the daemon stops taking requests while the completion ring is
 * full).  Holds req_lock. */
static long fss_client__post_locked(struct fss_req *req)
{
	struct fss_ring *rq = fss_client.req;
	uint32_t prod;

	prod = __atomic_load_n(&rq->prod, __ATOMIC_RELAXED);
	while (prod - fss_load_acquire(&rq->cons) >= fss_client.req_entries) {
		struct fss_waiter none = { .req_id = 0 };

		if (fss_client__dead())
			return -ECONNRESET;
		fss_client__route(NULL);
		fss_client__block(fss_waiter__ready, &none, 100, false);
	}
	memcpy(fss_ring_entry(rq, fss_client.req_entries, prod), req, sizeof(*req));
	fss_store_release(&rq->prod, prod + 1);
	fss_client__doorbell();
	return 0;
}

static void fss_waiter__drop(struct fss_waiter *w)
{
	struct fss_waiter **pp;

	pthread_mutex_lock(&fss_client.cmpl_lock);
	for (pp = &fss_client.waiters; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	pthread_mutex_unlock(&fss_client.cmpl_lock);
}

/* One request, one completion; returns cmpl.result.  Threads overlap. */
long fss_client__call(struct fss_req *req, struct fss_cmpl *out)
{
	struct fss_waiter w = { .req_id = 0 };
	long r;

	if (fss_client__dead())
		return -ECONNRESET;
	req->req_id = atomic_fetch_add(&fss_client.next_req_id, 1) + 1;
	w.req_id = req->req_id;
	pthread_mutex_lock(&fss_client.cmpl_lock);	/* registered before posting */
	w.next = fss_client.waiters;
	fss_client.waiters = &w;
	pthread_mutex_unlock(&fss_client.cmpl_lock);

	pthread_mutex_lock(&fss_client.req_lock);
	r = fss_client__post_locked(req);
	pthread_mutex_unlock(&fss_client.req_lock);
	if (r < 0)
		goto drop;
	for (;;) {
		if (pthread_mutex_trylock(&fss_client.cmpl_lock) == 0) {
			int others = fss_client__route_locked(&w);

			pthread_mutex_unlock(&fss_client.cmpl_lock);
			if (others > 0)
				fss_client__poke();
		}
		if (atomic_load_explicit(&w.done, memory_order_acquire))
			break;
		if (fss_client__dead()) {
			r = -ECONNRESET;
			goto drop;
		}
		/* never spin: sleep until a completion, a routed answer, or
		 * 100 ms, and then look at the control connection directly in
		 * case the daemon died while nobody was watching it, and ring
		 * the doorbell whatever daemon_sleeping says: a request whose
		 * wake-up got lost (a bug on either side) then waits 100 ms,
		 * not forever with the caller's signals held */
		if (fss_client__block(fss_waiter__ready, &w, 100, false) == -ETIMEDOUT) {
			fss_client__check_ctl();
			if (!fss_client__dead())
				fss_client__eventfd_write(fss_client.doorbell_fd);
		}
	}
	if (out != NULL)
		*out = w.cmpl;
	return w.cmpl.result;
drop:
	fss_waiter__drop(&w);
	return r;
}

/* A request whose result nobody needs (CLOSE): posted, not waited for. */
long fss_client__post(struct fss_req *req)
{
	long r;

	if (fss_client__dead())
		return -ECONNRESET;
	req->req_id = atomic_fetch_add(&fss_client.next_req_id, 1) + 1;
	pthread_mutex_lock(&fss_client.req_lock);
	r = fss_client__post_locked(req);
	pthread_mutex_unlock(&fss_client.req_lock);
	/* nobody waits for this completion: take what is there now, so a
	 * run of CLOSEs does not leave the completion ring full (and the
	 * daemon stalled) until the next call */
	if (r == 0 && pthread_mutex_trylock(&fss_client.cmpl_lock) == 0) {
		int others = fss_client__route_locked(NULL);

		pthread_mutex_unlock(&fss_client.cmpl_lock);
		if (others > 0)
			fss_client__poke();
	}
	return r;
}

/* ---- fork -------------------------------------------------------------- */

void fss_client__atfork_prepare(void)
{
	if (!fss_client.attached)
		return;
	pthread_mutex_lock(&fss_client.req_lock);
	pthread_mutex_lock(&fss_client.cmpl_lock);
}

void fss_client__atfork_parent(void)
{
	if (!fss_client.attached)
		return;
	pthread_mutex_unlock(&fss_client.cmpl_lock);
	pthread_mutex_unlock(&fss_client.req_lock);
}

void fss_client__atfork_child(void)
{
	if (!fss_client.attached)
		return;
	pthread_mutex_init(&fss_client.req_lock, NULL);
	pthread_mutex_init(&fss_client.cmpl_lock, NULL);
	fss_client.waiters = NULL;	/* their threads did not come along */
}

long fss_client__fork_prepare(uint64_t *token)
{
	struct fss_req req = { .op = FSS_OP_FORK_PREPARE };
	struct fss_cmpl c;
	long r;

	r = fss_client__call(&req, &c);
	if (r >= 0)
		memcpy(token, c.data, sizeof(*token));
	return r;
}

void fss_client__fork_commit(uint64_t token, pid_t child)
{
	struct fss_req req = { .op = FSS_OP_FORK_COMMIT, .arg0 = (int32_t)child };

	memcpy(req.data, &token, sizeof(token));
	fss_client__call(&req, NULL);
}

/*
 * In the child: the segment, eventfds and control connection are the
 * parent's.  Drop them (the parent keeps its own copies open), attach as a
 * new client, and claim the references the parent prepared: same slots,
 * same generations, so every inherited fss_file stays valid as it is.
 */
long fss_client__reattach_child(const char *path, uint64_t token)
{
	struct fss_req req = { .op = FSS_OP_FORK_INHERIT };
	struct fss_client c;
	long r;

	void *old = fss_client.seg;
	size_t old_size = fss_client.seg_size;

	fss_sys__close(fss_client.ctl_fd);
	fss_sys__close(fss_client.doorbell_fd);
	fss_sys__close(fss_client.wake_fd);
	/* The parent's segment must not be written from here: replace it, in
	 * place, with private zeroed memory, so that until (or unless) the new
	 * segment is installed every stray access sees a dead, empty client. */
	atomic_store(&fss_client.dead, 1);
	mmap(old, old_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

	r = fss_client__open(path, FSS_HELLO_FORK_CHILD | FSS_HELLO_WAKE_ACK | FSS_HELLO_HANDOVER | FSS_HELLO_TX_NOSPACE | FSS_HELLO_ACCEPT_RING, &c);
	if (r < 0)
		return r;
	fss_client__install(&c);
	munmap(old, old_size);
	memcpy(req.data, &token, sizeof(token));
	return fss_client__call(&req, NULL);
}

/* ---- slots and data ---------------------------------------------------- */

struct fss_sock *fss_client__slot(const struct fss_file *f)
{
	return fss_sock_at(fss_client.seg, fss_client.hdr, FSS_SOCK_SLOT(f->id));
}

uint32_t fss_client__tx_free(struct fss_file *f)
{
	struct fss_sock *s = fss_client__slot(f);

	return fss_client.tx_size - (__atomic_load_n(&s->tx_tail, __ATOMIC_RELAXED) -
				     fss_load_acquire(&s->tx_head));
}

/*
 * Someone may wait for room in f's tx FIFO: raise FSS_SF_TX_NOSPACE, so the
 * daemon publishes the room its next reads free (fsstack_abi.h, section 5).
 * The fence orders the flag before the caller's next look at tx_head: either
 * that look sees the room, or the daemon's read, after it, sees the flag.
 */
void fss_client__tx_nospace(struct fss_file *f)
{
	__atomic_fetch_or(&fss_client__slot(f)->s_flags, FSS_SF_TX_NOSPACE, __ATOMIC_SEQ_CST);
	fss_fence();
}

/* The poll rule for OUT (a third of the FIFO free, sk_stream_is_writeable);
 * a FIFO that fails it raises FSS_SF_TX_NOSPACE before the second look. */
bool fss_client__tx_writable(struct fss_file *f)
{
	if (fss_client__tx_free(f) * 3 >= fss_client.tx_size)
		return true;
	fss_client__tx_nospace(f);
	return fss_client__tx_free(f) * 3 >= fss_client.tx_size;
}

/*
 * tcp_poll(), computed from the slot.  This is fss_sock_poll() of the
 * header except where the kernel differs from it: a socket that never
 * connected (or whose connection is over) is OUT|HUP, a socket shut down
 * for writing stays OUT (a write fails at once), OUT needs a third of the
 * tx FIFO free (sk_stream_is_writeable), a connection that is over is
 * IN|RDHUP|OUT|HUP (tcp_done shuts both directions), and a connecting
 * socket reports nothing but errors.
 */
unsigned int fss_client__events(struct fss_file *f)
{
	struct fss_sock *s;
	uint32_t ev, st, mask = 0;

	if (fss_client__dead())
		return EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLOUT;
	s = fss_client__slot(f);
	ev = fss_load_acquire(&s->events);
	st = fss_ev_state(ev);	/* one load: state and events agree */
	if (st == FSS_ST_LISTENING || (ev & FSS_EV_LISTENING)) {
		/* the shared queue, or this process's accept ring */
		if (fss_load_acquire(&s->accept_pending) > 0 ||
		    fss_load_acquire(&s->rx_tail) != __atomic_load_n(&s->rx_head, __ATOMIC_RELAXED))
			mask |= EPOLLIN;
		if (ev & FSS_EV_ERR)
			mask |= EPOLLERR;
		return mask;
	}
	if ((ev & FSS_EV_HUP) || st == FSS_ST_OPEN || st == FSS_ST_CLOSED)
		mask |= EPOLLHUP;
	/* a connection that is over (reset, refused) is shut both ways */
	if ((ev & FSS_EV_RDEOF) || st == FSS_ST_CLOSED)
		mask |= EPOLLIN | EPOLLRDHUP;
	if (st != FSS_ST_CONNECTING) {
		if (fss_load_acquire(&s->rx_tail) != __atomic_load_n(&s->rx_head, __ATOMIC_RELAXED))
			mask |= EPOLLIN;
		if ((ev & (FSS_EV_WREOF | FSS_EV_HUP)) || fss_client__tx_writable(f))
			mask |= EPOLLOUT;
	}
	if (ev & FSS_EV_ERR)
		mask |= EPOLLERR;
	return mask;
}

/*
 * Accept rings (FSS_HELLO_ACCEPT_RING; the header's struct fss_accept_rec).
 * The daemon accepts on this process's behalf and writes a record into the
 * listener slot's rx FIFO; accept takes it here, without a round trip.
 * One lock for every ring of the process, held from the take until the
 * record's fd exists (fss_client__accept_done) and by fork around the
 * daemon's FORK_PREPARE (init.c): a fork sees each record untaken (the
 * daemon keeps it for the parent) or as an fd (the child inherits it).
 */
static pthread_mutex_t fss_accept_lock = PTHREAD_MUTEX_INITIALIZER;

void fss_client__accept_lock(void)
{
	pthread_mutex_lock(&fss_accept_lock);
}

void fss_client__accept_done(void)
{
	pthread_mutex_unlock(&fss_accept_lock);
}

void fss_client__accept_reinit(void)
{
	pthread_mutex_init(&fss_accept_lock, NULL);
}

/*
 * 1: took a record into c (sock, val0 = shard, data = peer), with the
 * accept lock held: the caller makes the fd, then fss_client__accept_done.
 * 0: the ring is empty and the shared queue is not (or the socket does not
 * listen): ask the daemon (FSS_OP_ACCEPT).  -EAGAIN: both are empty, as the
 * daemon would answer; no round trip.  -EIO: the daemon broke the ring.
 */
long fss_client__accept_ring(struct fss_file *f, struct fss_cmpl *c)
{
	struct fss_sock *s;
	struct fss_accept_rec rec;
	const uint8_t *fifo;
	uint32_t head, used;
	uint32_t ev;

	if (fss_client__dead())
		return 0;
	s = fss_client__slot(f);
	fifo = fss_rx_fifo(fss_client.seg, fss_client.hdr, FSS_SOCK_SLOT(f->id));
	fss_client__accept_lock();
	for (;;) {
		struct fss_accept_rec *p;
		uint32_t id;
		bool mine;

		head = __atomic_load_n(&s->rx_head, __ATOMIC_RELAXED);
		used = fss_load_acquire(&s->rx_tail) - head;
		if (used == 0)
			break;
		if (used > fss_client.rx_size || used % FSS_ACCEPT_REC_SIZE != 0 ||
		    head % FSS_ACCEPT_REC_SIZE != 0 || fss_client.rx_size % FSS_ACCEPT_REC_SIZE != 0) {
			fss_client__accept_done();
			return -EIO;
		}
		/* 64-byte records at 64-byte offsets: none straddles the end */
		p = (struct fss_accept_rec *)(void *)(fifo + head % fss_client.rx_size);
		id = __atomic_load_n(&p->sock, __ATOMIC_ACQUIRE);
		/* claimed against the daemon's take-back (FSS_ACCEPT_STOLEN) */
		mine = id != 0 && id != FSS_ACCEPT_STOLEN &&
		       __atomic_compare_exchange_n(&p->sock, &id, 0, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		memcpy(&rec, p, sizeof(rec));
		fss_store_release(&s->rx_head, head + FSS_ACCEPT_REC_SIZE);
		if (!mine)
			continue;	/* taken back for another holder: the next one */
		c->result = 0;
		c->sock = id;
		c->val0 = rec.shard;
		memcpy(c->data, &rec.peer, sizeof(rec.peer));
		return 1;
	}
	fss_client__accept_done();
	ev = fss_load_acquire(&s->events);
	if (fss_ev_state(ev) == FSS_ST_LISTENING && fss_load_acquire(&s->accept_pending) == 0)
		return -EAGAIN;
	return 0;
}

/*
 * accept_waiters (the header's fss_sock): a thread about to sleep waiting
 * for a listener, or inside accept, counts itself there (before its last
 * look at readiness, so that either the daemon sees it waiting and fills
 * the ring, an edge following, or it sees what the daemon published).  The
 * weight is how many records the thread may be given: 1 for a thread in a
 * blocking accept on a listener no epoll set watches (a prefork worker,
 * busy with its connection until it accepts again), FSS_ACCEPT_RING_MAX
 * for an event loop (an epoll wait on the listener, an accept on one an
 * epoll set watches), which comes back to the listener soon.
 * fss_client__accept_weight gives it; begin fills aw for
 * fss_client__accept_wait_end, false (and aw empty) when f does not
 * listen.
 */
int fss_client__accept_weight(struct fss_file *f)
{
	return atomic_load(&f->ep_watch) > 0 ? FSS_ACCEPT_RING_MAX : 1;
}

bool fss_client__accept_wait_begin(struct fss_file *f, int weight, struct fss_await *aw)
{
	struct fss_sock *s;

	aw->s = NULL;
	if (!fss_client__listening(f))
		return false;
	s = fss_client__slot(f);
	aw->s = s;
	aw->gen = fss_load_acquire(&s->gen);
	aw->weight = weight;
	__atomic_add_fetch(&s->accept_waiters, weight, __ATOMIC_SEQ_CST);
	return true;
}

/* The slot may have been freed and given to another socket while the
 * thread slept (the listener closed by another thread): the daemon zeroed
 * the word then, and the new generation's count is not ours to lower. */
void fss_client__accept_wait_end(struct fss_await *aw)
{
	if (aw->s != NULL && fss_load_acquire(&aw->s->gen) == aw->gen)
		__atomic_sub_fetch(&aw->s->accept_waiters, aw->weight, __ATOMIC_SEQ_CST);
	aw->s = NULL;
}

void fss_client__accept_waits_end(struct fss_await *aw, int n)
{
	for (int i = 0; i < n; i++)
		fss_client__accept_wait_end(&aw[i]);
}

bool fss_client__listening(struct fss_file *f)
{
	return !fss_client__dead() &&
	       fss_ev_state(fss_load_acquire(&fss_client__slot(f)->events)) == FSS_ST_LISTENING;
}

uint32_t fss_client__event_seq(struct fss_file *f)
{
	return fss_load_acquire(&fss_client__slot(f)->ev_seq);
}

long fss_client__readable(struct fss_file *f)
{
	struct fss_sock *s = fss_client__slot(f);

	return (uint32_t)(fss_load_acquire(&s->rx_tail) - __atomic_load_n(&s->rx_head, __ATOMIC_RELAXED));
}

long fss_client__recv(struct fss_file *f, const struct iovec *iov, int iovcnt, int flags)
{
	struct fss_sock *s = fss_client__slot(f);
	uint32_t head, avail, done = 0;
	const uint8_t *fifo = fss_rx_fifo(fss_client.seg, fss_client.hdr, FSS_SOCK_SLOT(f->id));
	int i;

	pthread_mutex_lock(&f->rx_lock);
	head = __atomic_load_n(&s->rx_head, __ATOMIC_RELAXED);
	avail = fss_load_acquire(&s->rx_tail) - head;
	if (avail > fss_client.rx_size) {	/* the daemon broke the FIFO */
		pthread_mutex_unlock(&f->rx_lock);
		return -EIO;
	}
	for (i = 0; i < iovcnt && done < avail; i++)
		done += iov[i].iov_len < avail - done ? (uint32_t)iov[i].iov_len : avail - done;
	/* a bad buffer: EFAULT, nothing consumed (tcp_recvmsg) */
	if (fss_ucopy_ring_to_iov(iov, iovcnt, fifo, fss_client.rx_size, head, done) < 0) {
		pthread_mutex_unlock(&f->rx_lock);
		return -EFAULT;
	}
	if (done > 0 && !(flags & MSG_PEEK)) {
		fss_store_release(&s->rx_head, head + done);
		fss_fence();
		if (__atomic_load_n(&s->d_flags, __ATOMIC_ACQUIRE) & FSS_DF_RX_WAIT)
			fss_client__kick(FSS_SOCK_SLOT(f->id));
	}
	pthread_mutex_unlock(&f->rx_lock);
	return done > 0 ? (long)done : -EAGAIN;
}

/* Where the next tx bytes go: a contiguous run of *len free bytes. */
static uint8_t *fss_client__tx_space(struct fss_file *f, uint32_t *tail, uint32_t *len)
{
	struct fss_sock *s = fss_client__slot(f);
	uint32_t used, off;

	*tail = __atomic_load_n(&s->tx_tail, __ATOMIC_RELAXED);
	used = *tail - fss_load_acquire(&s->tx_head);
	if (used >= fss_client.tx_size) {
		/* full: the caller answers EAGAIN (or ENOSPC), and may wait */
		fss_client__tx_nospace(f);
		used = *tail - fss_load_acquire(&s->tx_head);
	}
	if (used >= fss_client.tx_size) {
		*len = 0;
		return NULL;
	}
	off = *tail & (fss_client.tx_size - 1);
	*len = fss_client.tx_size - used;
	if (*len > fss_client.tx_size - off)
		*len = fss_client.tx_size - off;
	return fss_tx_fifo(fss_client.seg, fss_client.hdr, FSS_SOCK_SLOT(f->id)) + off;
}

static void fss_client__tx_commit(struct fss_file *f, uint32_t tail, uint32_t n)
{
	struct fss_sock *s = fss_client__slot(f);

	fss_store_release(&s->tx_tail, tail + n);
	fss_fence();
	if (__atomic_load_n(&s->d_flags, __ATOMIC_ACQUIRE) & FSS_DF_TX_WAIT)
		fss_client__kick(FSS_SOCK_SLOT(f->id));
}

/* Copies what fits, then publishes it at once: a bad buffer anywhere is
 * EFAULT with nothing queued, as tcp_sendmsg drops the chunk it was copying. */
long fss_client__send(struct fss_file *f, const struct iovec *iov, int iovcnt, int flags)
{
	uint32_t size = fss_client.tx_size, tail, room, done = 0;
	uint8_t *fifo = fss_tx_fifo(fss_client.seg, fss_client.hdr, FSS_SOCK_SLOT(f->id));
	int i;

	(void)flags;
	pthread_mutex_lock(&f->tx_lock);
	if (fss_client__tx_space(f, &tail, &room) == NULL)
		room = 0;
	else
		room = fss_client__tx_free(f);
	for (i = 0; i < iovcnt && done < room; i++)
		done += iov[i].iov_len < room - done ? (uint32_t)iov[i].iov_len : room - done;
	if (fss_ucopy_iov_to_ring(fifo, size, tail, iov, iovcnt, done) < 0) {
		pthread_mutex_unlock(&f->tx_lock);
		return -EFAULT;
	}
	if (done > 0)
		fss_client__tx_commit(f, tail, done);
	pthread_mutex_unlock(&f->tx_lock);
	return done > 0 ? (long)done : -EAGAIN;
}

long fss_client__send_file(struct fss_file *f, int in_fd, off64_t *offset, size_t count)
{
	uint32_t tail, len;
	uint8_t *dst;
	ssize_t n;

	pthread_mutex_lock(&f->tx_lock);
	dst = fss_client__tx_space(f, &tail, &len);
	if (dst == NULL) {
		pthread_mutex_unlock(&f->tx_lock);
		return -EAGAIN;
	}
	if (len > count)
		len = (uint32_t)count;
	/* straight from the file into the FIFO: no bounce buffer */
	if (offset != NULL)
		n = pread64(in_fd, dst, len, *offset);
	else
		n = FSS_REAL(read)(in_fd, dst, len);
	if (n < 0) {
		n = -errno;
	} else if (n > 0) {
		fss_client__tx_commit(f, tail, (uint32_t)n);
		if (offset != NULL)
			*offset += n;
	}
	pthread_mutex_unlock(&f->tx_lock);
	return n;
}

/* splice(2) halves.  The pipe side is the application's pipe: bytes move
 * between it and the FIFO with one copy, and only what the pipe took (or
 * gave) moves the FIFO's index, so nothing is lost on a full or empty pipe.
 * nowait: RWF_NOWAIT, the pipe's side of SPLICE_F_NONBLOCK. */

/* rx FIFO -> pipe: -ENODATA when the FIFO is empty, else the write's
 * result (-EAGAIN: the pipe is full). */
long fss_client__recv_to_pipe(struct fss_file *f, int pipe_fd, size_t count, bool nowait)
{
	struct fss_sock *s = fss_client__slot(f);
	uint32_t mask = fss_client.rx_size - 1, head, avail, off;
	uint8_t *fifo = fss_rx_fifo(fss_client.seg, fss_client.hdr, FSS_SOCK_SLOT(f->id));
	struct iovec iov[2];
	ssize_t n;

	pthread_mutex_lock(&f->rx_lock);
	head = __atomic_load_n(&s->rx_head, __ATOMIC_RELAXED);
	avail = fss_load_acquire(&s->rx_tail) - head;
	if (avail > fss_client.rx_size) {	/* the daemon broke the FIFO */
		pthread_mutex_unlock(&f->rx_lock);
		return -EIO;
	}
	if (avail == 0) {
		pthread_mutex_unlock(&f->rx_lock);
		return -ENODATA;
	}
	if (avail > count)
		avail = (uint32_t)count;
	off = head & mask;
	iov[0].iov_base = fifo + off;
	iov[0].iov_len = avail < fss_client.rx_size - off ? avail : fss_client.rx_size - off;
	iov[1].iov_base = fifo;
	iov[1].iov_len = avail - iov[0].iov_len;
	n = pwritev2(pipe_fd, iov, iov[1].iov_len ? 2 : 1, -1, nowait ? RWF_NOWAIT : 0);
	if (n < 0) {
		n = -errno;
	} else if (n > 0) {
		fss_store_release(&s->rx_head, head + (uint32_t)n);
		fss_fence();
		if (__atomic_load_n(&s->d_flags, __ATOMIC_ACQUIRE) & FSS_DF_RX_WAIT)
			fss_client__kick(FSS_SOCK_SLOT(f->id));
	}
	pthread_mutex_unlock(&f->rx_lock);
	return n;
}

/* pipe -> tx FIFO: -ENOSPC when the FIFO is full, else the read's result
 * (0: the pipe is empty and has no writers; -EAGAIN: empty). */
long fss_client__send_from_pipe(struct fss_file *f, int pipe_fd, size_t count, bool nowait)
{
	uint32_t tail, len;
	struct iovec iov;
	uint8_t *dst;
	ssize_t n;

	pthread_mutex_lock(&f->tx_lock);
	dst = fss_client__tx_space(f, &tail, &len);
	if (dst == NULL) {
		pthread_mutex_unlock(&f->tx_lock);
		return -ENOSPC;
	}
	iov.iov_base = dst;
	iov.iov_len = len < count ? len : count;
	n = preadv2(pipe_fd, &iov, 1, -1, nowait ? RWF_NOWAIT : 0);
	if (n < 0)
		n = -errno;
	else if (n > 0)
		fss_client__tx_commit(f, tail, (uint32_t)n);
	pthread_mutex_unlock(&f->tx_lock);
	return n;
}

/* ---- waiting from poll/select ----------------------------------------- */

int fss_client__wait_fd(void)
{
	return fss_wait__ep();
}

void fss_client__wait_consume(void)
{
	struct epoll_event evs[4];
	int i, n;

	if (fss_wait_ep < 0)
		return;
	n = FSS_REAL(epoll_wait)(fss_wait_ep, evs, 4, 0);
	for (i = 0; i < n; i++)
		fss_client__saw_event(evs[i].data.u64);
}
