/* SPDX-License-Identifier: Apache-2.0 */
/*
 * poll.c - poll, ppoll, select, pselect (and __poll_chk, __ppoll_chk) over
 * sets that mix kernel fds and fsstack sockets.
 *
 * With no fsstack socket in the set the call goes to libc unchanged.
 * Otherwise fsstack entries are evaluated from shared memory, and the kernel
 * is asked about the rest in one ppoll whose set has the fsstack entries
 * disabled (fd -1) and this thread's private wait fd appended (wake eventfd
 * and control connection, EPOLLET; see client.c), so the call blocks in the
 * kernel until a kernel fd or an fsstack socket is ready.  select is
 * translated to the same core.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "client.h"
#include "epoll.h"

#define FSS_POLL_STACK 64

/* An fsstack epoll set polled or selected becomes nested (epoll.c), and
 * nested sets are brought up to date before the wait. */
static void fss_poll__epoll_sets(const struct pollfd *fds, nfds_t nfds)
{
	nfds_t i;

	if (nfds <= FSS_FDTAB_MAX && fss_user_ok(fds, nfds * sizeof(*fds)))
		for (i = 0; i < nfds; i++)
			fss_epoll__polled(fds[i].fd);
	fss_epoll__poll_begin();
}

static void fss_select__epoll_sets(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
	int fd;

	if (nfds > FD_SETSIZE)
		nfds = FD_SETSIZE;
	if (nfds > 0 && (!r || fss_user_ok(r, (size_t)(nfds + 7) / 8)) &&
	    (!w || fss_user_ok(w, (size_t)(nfds + 7) / 8)) &&
	    (!e || fss_user_ok(e, (size_t)(nfds + 7) / 8)))
		for (fd = 0; fd < nfds; fd++)
			if ((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e)))
				fss_epoll__polled(fd);
	fss_epoll__poll_begin();
}

static bool fss_poll__any_owned(const struct pollfd *fds, nfds_t nfds)
{
	struct rlimit rl;
	nfds_t i;

	if (FSS_UNLIKELY(fss_epoll__any()))
		fss_poll__epoll_sets(fds, nfds);
	if (FSS_LIKELY(!fss_fdtab__any()))
		return false;
	/* what the kernel refuses (EINVAL, EFAULT) it may refuse itself */
	if (nfds > FSS_FDTAB_MAX || !fss_user_ok(fds, nfds * sizeof(*fds)) ||
	    (getrlimit(RLIMIT_NOFILE, &rl) == 0 && nfds > rl.rlim_cur))
		return false;
	for (i = 0; i < nfds; i++)
		if (fss_fdtab__peek(fds[i].fd) != NULL)
			return true;
	return false;
}

/* revents of one fsstack entry, as tcp_poll would set them. */
static short fss_poll__revents(int fd, short events)
{
	struct fss_file *f = fss_file__get(fd);
	unsigned int ready;

	if (f == NULL)
		return POLLNVAL;	/* closed under us */
	ready = fss_client__events(f);
	fss_file__put(f);
	if (ready & POLLIN)
		ready |= POLLRDNORM;
	if (ready & POLLOUT)
		ready |= POLLWRNORM;
	return (short)(ready & ((unsigned short)events | POLLERR | POLLHUP));
}

/* Fills revents of fsstack entries (owned[i] set); returns how many are
 * non-zero. */
static int fss_poll__scan(struct pollfd *fds, nfds_t nfds, const bool *owned)
{
	int n = 0;
	nfds_t i;

	for (i = 0; i < nfds; i++) {
		if (!owned[i])
			continue;
		fds[i].revents = fss_poll__revents(fds[i].fd, fds[i].events);
		n += fds[i].revents != 0;
	}
	return n;
}

/* A sleeping poll counts itself in the accept_waiters of the first few
 * listeners it waits on for POLLIN (client.c): weight 1, as a prefork
 * worker polling its listener serves one connection before it polls again
 * (an epoll wait counts as an event loop).  out gets their slots. */
#define FSS_POLL_LISTENERS 8

static int fss_poll__accept_wait(const struct pollfd *fds, nfds_t nfds, const bool *owned,
				 struct fss_await *out)
{
	int n = 0;

	for (nfds_t i = 0; i < nfds && n < FSS_POLL_LISTENERS; i++) {
		struct fss_file *pf;

		if (!owned[i] || !(fds[i].events & (POLLIN | POLLRDNORM)))
			continue;
		pf = fss_fdtab__peek(fds[i].fd);
		if (pf != NULL && fss_client__accept_wait_begin(pf, 1, &out[n]))
			n++;
	}
	return n;
}

/*
 * The core.  timeout_ns < 0 waits forever.  Returns the number of entries
 * with revents set, or -errno.
 */
static long fss_poll__core(struct pollfd *fds, nfds_t nfds, int64_t timeout_ns,
			   const sigset_t *sigmask)
{
	struct pollfd kstack[FSS_POLL_STACK + 1], *kfds = kstack;
	bool ostack[FSS_POLL_STACK], *owned = ostack;
	int64_t deadline = timeout_ns > 0 ? fss_now_ns() + timeout_ns : 0;
	struct timespec ts, *tsp;
	const sigset_t *wmask = sigmask;
	sigset_t old;
	bool held = false;
	int wfd, n, k;
	long r;
	nfds_t i;

	wfd = fss_client__wait_fd();
	if (wfd < 0)
		return wfd;
	if (nfds > FSS_POLL_STACK) {
		kfds = malloc((nfds + 1) * sizeof(*kfds));
		owned = malloc(nfds * sizeof(*owned));
		if (kfds == NULL || owned == NULL) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (i = 0; i < nfds; i++) {
		struct fss_file *pf = fss_fdtab__peek(fds[i].fd);

		owned[i] = pf != NULL;
		kfds[i] = fds[i];
		kfds[i].revents = 0;
		/* the kernel skips negative fds; a listener whose placeholder
		 * listens on the kernel too (sock.c, klisten) is asked for
		 * its accept queue (the pool is type-stable: peeking is safe) */
		if (owned[i] && (!atomic_load(&pf->klisten) ||
				 !(fds[i].events & (POLLIN | POLLRDNORM))))
			kfds[i].fd = -1;
		else if (owned[i])
			kfds[i].events = fds[i].events & (POLLIN | POLLRDNORM);
	}
	kfds[nfds].fd = wfd;
	kfds[nfds].events = POLLIN;
	kfds[nfds].revents = 0;

	for (;;) {
		n = fss_poll__scan(fds, nfds, owned);
		tsp = &ts;
		if (n > 0 || timeout_ns == 0) {
			ts.tv_sec = 0;
			ts.tv_nsec = 0;
		} else if (timeout_ns < 0) {
			tsp = NULL;
		} else {
			int64_t left = deadline - fss_now_ns();

			if (left < 0)
				left = 0;
			ts.tv_sec = left / 1000000000;
			ts.tv_nsec = left % 1000000000;
		}
		if (n == 0 && (tsp == NULL || ts.tv_sec != 0 || ts.tv_nsec != 0)) {
			/* going to sleep: signals held until the return, each
			 * sleep with the caller's mask (epoll.c's wait says why) */
			struct fss_await aw[FSS_POLL_LISTENERS];
			int naw;

			if (!held && (held = fss_client__sig_hold(&old)) && sigmask == NULL)
				wmask = &old;
			naw = fss_poll__accept_wait(fds, nfds, owned, aw);
			fss_client__sleep_begin();
			n = fss_poll__scan(fds, nfds, owned);
			if (n > 0) {
				ts.tv_sec = 0;
				ts.tv_nsec = 0;
				tsp = &ts;
			}
			k = FSS_REAL(ppoll)(kfds, nfds + 1, tsp, wmask);
			fss_client__sleep_end();
			fss_client__accept_waits_end(aw, naw);
		} else {
			k = FSS_REAL(ppoll)(kfds, nfds + 1, tsp, wmask);
		}
		if (k < 0) {
			r = -errno;
			goto out;
		}
		if (kfds[nfds].revents) {
			fss_client__wait_consume();
			kfds[nfds].revents = 0;
			n = fss_poll__scan(fds, nfds, owned);
		}
		k = 0;
		for (i = 0; i < nfds; i++) {
			if (!owned[i])
				fds[i].revents = kfds[i].revents;
			else if (kfds[i].fd >= 0)	/* klisten: either queue */
				fds[i].revents |= kfds[i].revents & kfds[i].events;
			k += fds[i].revents != 0;
		}
		if (k > 0 || timeout_ns == 0 ||
		    (timeout_ns > 0 && deadline - fss_now_ns() <= 0)) {
			r = k;
			goto out;
		}
	}
out:
	fss_client__sig_release(held, &old);
	if (kfds != kstack)
		free(kfds);
	if (owned != ostack)
		free(owned);
	return r;
}

static int fss_poll__entry(struct pollfd *fds, nfds_t nfds, int64_t timeout_ns,
			   const sigset_t *sigmask)
{
	int saved = errno;
	long r;

	r = fss_poll__core(fds, nfds, timeout_ns, sigmask);
	fss_guard__exit();
	return FSS_RET(int, r, saved);
}

/* glibc declares poll's and ppoll's array __write_only__, so GCC takes
 * the events we read as uninitialised; they are read-write. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

FSS_EXPORT int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
	if (FSS_LIKELY(!fss_poll__any_owned(fds, nfds)) || !fss_guard__enter())
		return FSS_REAL(poll)(fds, nfds, timeout);
	return fss_poll__entry(fds, nfds, timeout < 0 ? -1 : (int64_t)timeout * 1000000, NULL);
}

static int64_t fss_ts_ns(const struct timespec *ts)
{
	return ts == NULL ? -1 : (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

FSS_EXPORT int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
		     const sigset_t *sigmask)
{
	if (FSS_LIKELY(!fss_poll__any_owned(fds, nfds)) ||
	    (tmo != NULL && (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000)) ||
	    !fss_guard__enter())
		return FSS_REAL(ppoll)(fds, nfds, tmo, sigmask);
	return fss_poll__entry(fds, nfds, fss_ts_ns(tmo), sigmask);
}
#pragma GCC diagnostic pop

FSS_EXPORT int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < nfds)
		__chk_fail();
	return poll(fds, nfds, timeout);
}

FSS_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
			   const sigset_t *sigmask, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < nfds)
		__chk_fail();
	return ppoll(fds, nfds, tmo, sigmask);
}

/* ---- select ------------------------------------------------------------ */

#define FSS_SEL_IN  (POLLIN | POLLRDNORM | POLLRDBAND | POLLHUP | POLLERR)
#define FSS_SEL_OUT (POLLOUT | POLLWRNORM | POLLWRBAND | POLLERR)
#define FSS_SEL_EX  (POLLPRI)

static bool fss_select__any_owned(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
	int fd;

	if (FSS_UNLIKELY(fss_epoll__any()))
		fss_select__epoll_sets(nfds, r, w, e);
	if (FSS_LIKELY(!fss_fdtab__any()))
		return false;
	if (nfds > FD_SETSIZE)
		nfds = FD_SETSIZE;
	if (nfds <= 0 || (r && !fss_user_ok(r, (size_t)(nfds + 7) / 8)) ||
	    (w && !fss_user_ok(w, (size_t)(nfds + 7) / 8)) ||
	    (e && !fss_user_ok(e, (size_t)(nfds + 7) / 8)))
		return false;	/* EINVAL/EFAULT: the kernel's to report */
	for (fd = 0; fd < nfds; fd++) {
		if ((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e)))
			if (fss_fdtab__peek(fd) != NULL)
				return true;
	}
	return false;
}

static long fss_select__core(int nfds, fd_set *rfds, fd_set *wfds, fd_set *efds,
			     int64_t timeout_ns, const sigset_t *sigmask)
{
	struct pollfd *pfds;
	int fd, n = 0, count = 0, i;
	long r;

	if (nfds < 0)
		return -EINVAL;
	if (nfds > FD_SETSIZE)
		nfds = FD_SETSIZE;
	pfds = malloc((size_t)(nfds > 0 ? nfds : 1) * sizeof(*pfds));
	if (pfds == NULL)
		return -ENOMEM;
	for (fd = 0; fd < nfds; fd++) {
		short ev = 0;

		if (rfds && FD_ISSET(fd, rfds))
			ev |= POLLIN;
		if (wfds && FD_ISSET(fd, wfds))
			ev |= POLLOUT;
		if (efds && FD_ISSET(fd, efds))
			ev |= POLLPRI;
		if (ev == 0)
			continue;
		pfds[n].fd = fd;
		pfds[n].events = ev;
		pfds[n].revents = 0;
		n++;
	}
	r = fss_poll__core(pfds, (nfds_t)n, timeout_ns, sigmask);
	if (r < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (pfds[i].revents & POLLNVAL) {
			r = -EBADF;
			goto out;
		}
	if (rfds)
		FD_ZERO(rfds);
	if (wfds)
		FD_ZERO(wfds);
	if (efds)
		FD_ZERO(efds);
	for (i = 0; i < n; i++) {
		short re = pfds[i].revents, ev = pfds[i].events;

		if ((ev & POLLIN) && (re & FSS_SEL_IN)) {
			FD_SET(pfds[i].fd, rfds);
			count++;
		}
		if ((ev & POLLOUT) && (re & FSS_SEL_OUT)) {
			FD_SET(pfds[i].fd, wfds);
			count++;
		}
		if ((ev & POLLPRI) && (re & FSS_SEL_EX)) {
			FD_SET(pfds[i].fd, efds);
			count++;
		}
	}
	r = count;
out:
	free(pfds);
	return r;
}

FSS_EXPORT int select(int nfds, fd_set *rfds, fd_set *wfds, fd_set *efds, struct timeval *timeout)
{
	int64_t t, start;
	int saved;
	long r;

	if (FSS_LIKELY(!fss_select__any_owned(nfds, rfds, wfds, efds)) ||
	    (timeout != NULL && (timeout->tv_sec < 0 || timeout->tv_usec < 0)) ||
	    !fss_guard__enter())
		return FSS_REAL(select)(nfds, rfds, wfds, efds, timeout);
	saved = errno;
	t = timeout == NULL ? -1 : (int64_t)timeout->tv_sec * 1000000000 +
				   (int64_t)timeout->tv_usec * 1000;
	start = fss_now_ns();
	r = fss_select__core(nfds, rfds, wfds, efds, t, NULL);
	if (timeout != NULL) {	/* Linux reports the time left */
		int64_t left = t - (fss_now_ns() - start);

		if (left < 0)
			left = 0;
		timeout->tv_sec = left / 1000000000;
		timeout->tv_usec = (left % 1000000000) / 1000;
	}
	fss_guard__exit();
	return FSS_RET(int, r, saved);
}

FSS_EXPORT int pselect(int nfds, fd_set *rfds, fd_set *wfds, fd_set *efds,
		       const struct timespec *timeout, const sigset_t *sigmask)
{
	int saved;
	long r;

	if (FSS_LIKELY(!fss_select__any_owned(nfds, rfds, wfds, efds)) ||
	    (timeout != NULL && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 ||
				 timeout->tv_nsec >= 1000000000)) ||
	    !fss_guard__enter())
		return FSS_REAL(pselect)(nfds, rfds, wfds, efds, timeout, sigmask);
	saved = errno;
	r = fss_select__core(nfds, rfds, wfds, efds, fss_ts_ns(timeout), sigmask);
	fss_guard__exit();
	return FSS_RET(int, r, saved);
}
