/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wrappers.c - the interposed entry points.
 *
 * Every wrapper starts with the passthrough test: a lock-free look-up of the
 * fd in the ownership table (fdtab.h).  An fd the shim does not own goes to
 * libc at once, with errno untouched and no lock taken.  On an owned fd the
 * wrapper takes the re-entrancy guard and a reference on the socket, calls
 * the operation (which returns -errno), and sets errno only on failure.
 *
 * A wrapper re-entered on the same thread while the guard is held (a signal
 * handler interrupting a shim call, or libc calling back into us) must not
 * take the shim's locks again (the interrupted call may hold them): on a
 * non-fsstack fd it goes to libc as always; on an fsstack fd it fails with
 * EINTR.  It never reaches the kernel placeholder, whose write would raise
 * SIGPIPE.
 */
#include <stdarg.h>
#include <sys/ioctl.h>

#include "client.h"
#include "epoll.h"
#include "fastsocket.h"
#include "file.h"

/* Wrappers of fd-dispatched calls, generated from fss_calls.def. */
#define FSS_FD_CALL(ret, name, fd, params, args)			\
FSS_EXPORT ret name params						\
{									\
	struct fss_file *s;						\
	int saved;							\
	long r;								\
									\
	if (FSS_LIKELY(fss_fdtab__peek(fd) == NULL))			\
		return FSS_REAL(name) args;				\
	if (!fss_guard__enter()) {					\
		errno = EINTR;						\
		return (ret)-1;						\
	}								\
	s = fss_file__get(fd);						\
	if (s == NULL) {						\
		fss_guard__exit();					\
		return FSS_REAL(name) args;				\
	}								\
	saved = errno;							\
	r = fss_op_##name(s, FSS_UNPAREN args);				\
	fss_file__put(s);						\
	fss_guard__exit();						\
	return FSS_RET(ret, r, saved);					\
}
#define FSS_CALL(ret, name, params, args) FSS_EXPORT ret name params;
#include "fss_calls.def"

/* Where socket() of an AF_INET stream (fss_file__wants) goes, with the
 * guard held: 1 the daemon, 0 the kernel (no daemon, FSSTACK_FALLBACK=kernel),
 * or -errno (FSSTACK_FALLBACK=fail). */
static long fss_socket__route(void)
{
	if (fss_init__attach() == FSS_STAGE_ATTACHED)
		return 1;
	return fss_config.fallback == FSS_FALLBACK_FAIL ? -FSS_FAIL_ERRNO : 0;
}

/* socket(), with kernel() making whatever is not fsstack's: the new fd or
 * -1 and errno. */
static int fss_socket__make(int domain, int type, int protocol, int (*kernel)(int, int, int))
{
	int saved;
	long r;

	if (FSS_LIKELY(!fss_file__wants(domain, type, protocol)) || !fss_guard__enter())
		return kernel(domain, type, protocol);
	saved = errno;
	r = fss_socket__route();
	if (r > 0)
		r = fss_op_socket(domain, type, protocol);
	else if (r == 0 && (r = kernel(domain, type, protocol)) < 0)
		r = -errno;
	fss_guard__exit();
	return FSS_RET(int, r, saved);
}

FSS_EXPORT int socket(int domain, int type, int protocol)
{
	return fss_socket__make(domain, type, protocol, FSS_REAL(socket));
}

/* Clears fd's table entry (if any) and drops the reference it held. */
static void fss_fd__forget(int fd)
{
	struct fss_file *old;

	if (fss_fdtab__xchg(fd, NULL, &old) == 0 && old != NULL)
		fss_file__put(old);
}

/* Points newfd at s (taking a reference) after the kernel duplicated the
 * placeholder to newfd; closes newfd again if the table cannot hold it. */
static long fss_fd__install_dup(int newfd, struct fss_file *s)
{
	struct fss_file *old;
	long r;

	fss_file__ref(s);
	r = fss_fdtab__xchg(newfd, s, &old);
	if (r < 0) {
		fss_file__put(s);
		fss_sys__close(newfd);
		return r;
	}
	if (old != NULL)
		fss_file__put(old);
	return newfd;
}

/* splice: either end may be an fsstack socket (sock.c); both kernel fds go
 * to libc untouched. */
FSS_EXPORT ssize_t splice(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len,
			  unsigned int flags)
{
	bool sock_in = fss_fdtab__peek(fd_in) != NULL;
	struct fss_file *s;
	int saved;
	long r;

	if (FSS_LIKELY(!sock_in && fss_fdtab__peek(fd_out) == NULL))
		return FSS_REAL(splice)(fd_in, off_in, fd_out, off_out, len, flags);
	if (!fss_guard__enter()) {
		errno = EINTR;
		return -1;
	}
	s = fss_file__get(sock_in ? fd_in : fd_out);
	if (s == NULL) {
		fss_guard__exit();
		return FSS_REAL(splice)(fd_in, off_in, fd_out, off_out, len, flags);
	}
	saved = errno;
	r = fss_op_splice(s, sock_in, fd_in, off_in, fd_out, off_out, len, flags);
	fss_file__put(s);
	fss_guard__exit();
	return FSS_RET(ssize_t, r, saved);
}

/* close(), with kernel() closing an fd that is not the shim's: 0 or -1 and
 * errno.  An fd the shim owns (an fsstack socket or epoll set) is closed by
 * the system call: it is the shim's object, no library below has seen it. */
static int fss_fd__close(int fd, int (*kernel)(int))
{
	if (FSS_LIKELY(fss_fdtab__peek(fd) == NULL && !fss_epoll__owned(fd))) {
		if (FSS_UNLIKELY(fss_client__internal_fd(fd))) {
			errno = EBADF;	/* the shim's own fds are not the app's to close */
			return -1;
		}
		return kernel(fd);
	}
	/* Clear the entry before the kernel frees the number, so it is never
	 * found owned once reused. */
	fss_fd__forget(fd);
	fss_epoll__close(fd);
	return fss_sys__close(fd);
}

FSS_EXPORT int close(int fd)
{
	return fss_fd__close(fd, FSS_REAL(close));
}

static void fss_fd__forget_cb(int fd, struct fss_file *s, void *arg)
{
	(void)s;
	(void)arg;
	fss_fd__forget(fd);
}

/*
 * close_range over [first, last] that leaves the shim's own fds open: the
 * range is closed in pieces around them (a daemonising server's
 * closefrom(3) must not cut the process off its daemon).
 */
static int fss_close_range_around(unsigned int first, unsigned int last, int flags)
{
	int keep[FSS_CLIENT_INTERNAL_MAX], n, i, j, r = 0;

	n = fss_client__internal_fds(keep);
	for (i = 1; i < n; i++)	/* sort the handful of fds */
		for (j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			int t = keep[j];

			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	for (i = 0; i < n && first <= last; i++) {
		unsigned int k = (unsigned int)keep[i];

		if (keep[i] < 0 || k < first || k > last)
			continue;
		if (k > first && FSS_REAL(close_range)(first, k - 1, flags) < 0)
			r = -1;
		if (k == ~0u)
			return r;
		first = k + 1;
	}
	if (first <= last && FSS_REAL(close_range)(first, last, flags) < 0)
		r = -1;
	return r;
}

FSS_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	/* CLOSE_RANGE_CLOEXEC only sets flags; nothing is closed. */
	if (fss_fdtab__any() && !(flags & 4 /* CLOSE_RANGE_CLOEXEC */) && first <= last) {
		fss_fdtab__for_each(first, last, fss_fd__forget_cb, NULL);
		fss_epoll__close_range(first, last);
	}
	if (FSS_LIKELY(!fss_client.attached) || (flags & 4) || first > last)
		return FSS_REAL(close_range)(first, last, flags);
	return fss_close_range_around(first, last, flags);
}

FSS_EXPORT void closefrom(int lowfd)
{
	int saved = errno;

	if (fss_fdtab__any() && lowfd >= 0) {
		fss_fdtab__for_each((unsigned int)lowfd, ~0u, fss_fd__forget_cb, NULL);
		fss_epoll__close_range((unsigned int)lowfd, ~0u);
	}
	if (FSS_LIKELY(!fss_client.attached) || lowfd < 0) {
		FSS_REAL(closefrom)(lowfd);
		return;
	}
	fss_close_range_around((unsigned int)lowfd, ~0u, 0);
	errno = saved;
}

FSS_EXPORT int dup(int oldfd)
{
	struct fss_file *s;
	int saved;
	long r;

	if (FSS_LIKELY(fss_fdtab__peek(oldfd) == NULL)) {
		r = FSS_REAL(dup)(oldfd);
		if (FSS_UNLIKELY(r >= 0 && fss_epoll__owned(oldfd)))
			fss_epoll__dup(oldfd, (int)r);
		return (int)r;
	}
	s = fss_file__get(oldfd);
	if (s == NULL)
		return FSS_REAL(dup)(oldfd);
	saved = errno;
	r = FSS_REAL(dup)(oldfd);
	r = r < 0 ? -errno : fss_fd__install_dup((int)r, s);
	fss_file__put(s);
	return FSS_RET(int, r, saved);
}

static int fss_fd__dup3(int oldfd, int newfd, int flags, bool is_dup2)
{
	struct fss_file *s;
	int saved;
	long r;

	if (FSS_LIKELY(fss_fdtab__peek(oldfd) == NULL && fss_fdtab__peek(newfd) == NULL &&
		       !fss_epoll__owned(newfd) && !fss_epoll__owned(oldfd)))
		return is_dup2 ? FSS_REAL(dup2)(oldfd, newfd)
			       : FSS_REAL(dup3)(oldfd, newfd, flags);
	saved = errno;
	s = fss_file__get(oldfd);
	r = is_dup2 ? FSS_REAL(dup2)(oldfd, newfd) : FSS_REAL(dup3)(oldfd, newfd, flags);
	if (r < 0) {
		r = -errno;
		goto out;
	}
	if (oldfd == newfd)		/* dup2 on itself: nothing changes */
		goto out;
	/* The kernel closed whatever newfd was; mirror that, then install. */
	fss_epoll__close(newfd);
	if (s != NULL) {
		r = fss_fd__install_dup(newfd, s);
	} else {
		fss_fd__forget(newfd);
		fss_epoll__dup(oldfd, newfd);	/* an fsstack epoll set: shared */
	}
out:
	if (s != NULL)
		fss_file__put(s);
	return FSS_RET(int, r, saved);
}

FSS_EXPORT int dup2(int oldfd, int newfd)
{
	return fss_fd__dup3(oldfd, newfd, 0, true);
}

FSS_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	return fss_fd__dup3(oldfd, newfd, flags, false);
}

static int fss_fcntl(int fd, int cmd, void *arg, bool is64)
{
	struct fss_file *s;
	int saved;
	long r;

	if (FSS_LIKELY(fss_fdtab__peek(fd) == NULL) || !fss_guard__enter())
		goto passthrough;
	s = fss_file__get(fd);
	if (s == NULL) {
		fss_guard__exit();
		goto passthrough;
	}
	saved = errno;
	r = fss_op_fcntl(s, fd, cmd, (long)arg);
	fss_file__put(s);
	fss_guard__exit();
	return FSS_RET(int, r, saved);
passthrough:
	r = is64 ? FSS_REAL(fcntl64)(fd, cmd, arg) : FSS_REAL(fcntl)(fd, cmd, arg);
	if (FSS_UNLIKELY(r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) &&
			 fss_epoll__owned(fd)))
		fss_epoll__dup(fd, (int)r);
	return (int)r;
}

/* Like glibc, take the optional argument as a pointer-sized word: every
 * fcntl command's argument fits and is passed on unchanged. */
FSS_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fss_fcntl(fd, cmd, arg, false);
}

FSS_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fss_fcntl(fd, cmd, arg, true);
}

FSS_EXPORT int ioctl(int fd, unsigned long request, ...)
{
	struct fss_file *s;
	va_list ap;
	void *arg;
	int saved;
	long r;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (FSS_LIKELY(fss_fdtab__peek(fd) == NULL)) {
		if (FSS_UNLIKELY(fss_fsock__maybe(request)) && fss_fsock__is_channel(fd))
			return fss_fsock__ioctl(fd, request, arg);	/* /dev/fastsocket */
		return FSS_REAL(ioctl)(fd, request, arg);
	}
	if (!fss_guard__enter())
		return FSS_REAL(ioctl)(fd, request, arg);
	s = fss_file__get(fd);
	if (s == NULL) {
		fss_guard__exit();
		return FSS_REAL(ioctl)(fd, request, arg);
	}
	saved = errno;
	r = fss_op_ioctl(s, fd, request, arg);
	fss_file__put(s);
	fss_guard__exit();
	return FSS_RET(int, r, saved);
}

/* ---- the calls for callers inside the shim ------------------------------ */

/*
 * The calls the /dev/fastsocket ioctls serve (fastsocket.c): what the
 * wrappers do, with -errno results, except that whatever is not fsstack's
 * goes to the kernel by its system call.  Never FSS_REAL: the next
 * definition may be the very library that issued the ioctl (libfsocket.so
 * loaded after the shim), and the call would come back here for ever.
 */

static long fss_inner__ret(int r)
{
	return r < 0 ? -errno : r;
}

/* The fsstack socket fd, referenced and with the guard held, or NULL: not
 * fsstack's (*r = 0), or re-entered from a signal handler inside the shim
 * (*r = -EINTR, as the wrappers answer). */
static struct fss_file *fss_inner__get(int fd, long *r)
{
	struct fss_file *s;

	*r = 0;
	if (FSS_LIKELY(fss_fdtab__peek(fd) == NULL))
		return NULL;
	if (!fss_guard__enter()) {
		*r = -EINTR;
		return NULL;
	}
	s = fss_file__get(fd);
	if (s == NULL)
		fss_guard__exit();
	return s;
}

static long fss_inner__put(struct fss_file *s, long r)
{
	fss_file__put(s);
	fss_guard__exit();
	return r;
}

long fss_inner__socket(int domain, int type, int protocol)
{
	return fss_inner__ret(fss_socket__make(domain, type, protocol, fss_sys__socket));
}

long fss_inner__listen(int fd, int backlog)
{
	long r;
	struct fss_file *s = fss_inner__get(fd, &r);

	if (s != NULL)
		return fss_inner__put(s, fss_op_listen(s, fd, backlog));
	return r < 0 ? r : fss_inner__ret(fss_sys__listen(fd, backlog));
}

long fss_inner__accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	long r;
	struct fss_file *s = fss_inner__get(fd, &r);

	if (s != NULL)
		return fss_inner__put(s, fss_op_accept4(s, fd, addr, len, flags));
	return r < 0 ? r : fss_inner__ret(fss_sys__accept4(fd, addr, len, flags));
}

long fss_inner__shutdown(int fd, int how)
{
	long r;
	struct fss_file *s = fss_inner__get(fd, &r);

	if (s != NULL)
		return fss_inner__put(s, fss_op_shutdown(s, fd, how));
	return r < 0 ? r : fss_inner__ret(fss_sys__shutdown(fd, how));
}

long fss_inner__close(int fd)
{
	return fss_inner__ret(fss_fd__close(fd, fss_sys__close));
}

FSS_EXPORT pid_t fork(void)
{
	int saved = errno;
	pid_t pid;

	if (FSS_LIKELY(atomic_load_explicit(&fss_stage, memory_order_acquire) != FSS_STAGE_ATTACHED))
		return FSS_REAL(fork)();
	pid = fss_init__fork();
	if (pid >= 0)
		errno = saved;
	return pid;
}
