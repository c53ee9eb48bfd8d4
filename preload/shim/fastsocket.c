/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fastsocket.c - Fastsocket's /dev/fastsocket ioctl interface, served by the
 * shim (DESIGN.md, "/dev/fastsocket compatibility"; the ABI is
 * kmod-compat/fastsocket_abi.h).
 *
 *   open("/dev/fastsocket") --kernel: ENOENT--> attached? --no--> ENOENT
 *                                                  | yes
 *                                                  v
 *                                     channel fd (sealed memfd)
 *
 *   ioctl(channel, FSOCKET_IOC_*, &arg) --copy arg in (EFAULT)--> the shim's
 *       internal socket, listen, accept4, close, shutdown (fss_inner__*:
 *       an fd that is not fsstack's goes to the kernel by system call);
 *       SPAWN_* pin the caller to a CPU, whose shard its accepts
 *       (FSS_REQ_CPU) take from first
 *
 * The open.  The kernel is asked first: only when it answers ENOENT for
 * exactly "/dev/fastsocket" does the shim step in, so other opens cost
 * nothing, a bad path pointer gets the kernel's EFAULT, and a kernel that
 * really has fastsocket.ko keeps its device.  Attached to the daemon, the
 * open returns a channel; otherwise it fails with the kernel's ENOENT, as
 * on a machine without the module (whatever FSSTACK_FALLBACK says: there
 * is no kernel Fastsocket to fall back to, and a program that checks for the
 * device then takes its ordinary socket path).  FSSTACK_DISABLE=1 leaves
 * the open to the kernel.
 *
 * The channel is a real kernel fd (DESIGN.md decision 8), so numbers never
 * collide and dup, fork, FD_CLOEXEC and close need nothing from the shim:
 * an empty memfd, sealed, of an odd size.  fss_fsock__is_channel recognises
 * one by those marks (fstat + F_GET_SEALS) instead of a table, so a dup or
 * an inherited channel works and a reused fd number is never taken for one.
 *
 * The commands follow fastsocket.ko:
 *   - the argument is copied in first, for every command but the generic
 *     fd ioctls the kernel handles itself (FIOCLEX, FIONCLEX, FIONBIO,
 *     FIOASYNC): an unreadable pointer is EFAULT;
 *   - SOCKET (op.socket_op) is socket(family, type, protocol): an fsstack
 *     socket for AF_INET stream, SOCK_NONBLOCK/SOCK_CLOEXEC honoured, a
 *     kernel socket otherwise;
 *   - LISTEN (fd, backlog), ACCEPT (fd, op.accept_op: like accept4),
 *     CLOSE (fd: any fd, a plain close for non-fsstack ones),
 *     SHUTDOWN_LISTEN (fd, op.shutdown_op.how) are the shim's own calls,
 *     with their errors (EBADF, ENOTSOCK, EINVAL, EFAULT, ...);
 *   - none of them calls a public symbol (socket, close, ...) or FSS_REAL:
 *     a library that wraps those calls and issues these ioctls from its
 *     wrappers (Fastsocket's libfsocket.so) may come before or after the
 *     shim in LD_PRELOAD, and would turn the call into the same ioctl
 *     again.  What is not fsstack's goes to the kernel by system call, so
 *     every call is served once, in either order;
 *   - SPAWN_LISTEN (fd, op.spawn_op.cpu) on an fsstack listener: fsstack
 *     already listens on every shard, so spawning means accepting locally:
 *     the caller is pinned to a CPU (enable_listen_spawn=2: cpu, or with -1
 *     one the shim picks from the allowed set: the daemon's client id
 *     modulo their number; ids count attaches, so workers forked one
 *     after another spread over the CPUs) or must have pinned itself
 *     (enable_listen_spawn=1: exactly one allowed CPU, and cpu is -1 or
 *     that one).  Every accept names the caller's CPU (FSS_REQ_CPU), and
 *     the daemon serves it from that CPU's shard first and steals from the
 *     others only when it is empty, so a pinned worker accepts locally.
 *     EPERM when enable_listen_spawn=0,
 *     EINVAL for a non-fsstack fd, a socket that is not listening or a CPU
 *     out of range, EBADF for a closed fd;
 *   - SPAWN_ALL_LISTEN: the same for every fsstack listener the process has
 *     (a fork child calls it); 0 with none;
 *   - anything else: EINVAL.
 * The daemon publishes enable_listen_spawn in seg_hdr.fastsocket; a daemon
 * that does not gets the module's default, 2.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "client.h"
#include "fastsocket.h"
#include "fastsocket_abi.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008u
#endif

_Atomic int fss_fsock_opened;

/* The marks of a channel: its size (no page is ever allocated) and seals. */
#define FSS_FSOCK_CHAN_SIZE 0xf5f5
#define FSS_FSOCK_CHAN_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

static long fss_fsock__copy_in(void *dst, const void *src, size_t len)
{
	struct iovec l = { dst, len }, r = { (void *)src, len };

	if (!fss_user_ok(src, len))
		return -EFAULT;
	return syscall(SYS_process_vm_readv, getpid(), &l, 1, &r, 1, 0) == (long)len ? 0 : -EFAULT;
}

/* ---- the channel ------------------------------------------------------- */

static long fss_fsock__channel(int oflags)
{
	unsigned int mfd = MFD_ALLOW_SEALING | ((oflags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
	long fd;

	fd = syscall(SYS_memfd_create, "fastsocket", mfd | MFD_NOEXEC_SEAL);
	if (fd < 0 && errno == EINVAL)	/* before Linux 6.3 */
		fd = syscall(SYS_memfd_create, "fastsocket", mfd);
	if (fd < 0)
		return -errno;
	if (ftruncate((int)fd, FSS_FSOCK_CHAN_SIZE) < 0 ||
	    FSS_REAL(fcntl)((int)fd, F_ADD_SEALS, FSS_FSOCK_CHAN_SEALS) < 0 ||
	    ((oflags & O_NONBLOCK) && FSS_REAL(fcntl)((int)fd, F_SETFL, O_NONBLOCK) < 0)) {
		long r = -errno;

		fss_sys__close((int)fd);
		return r;
	}
	atomic_store_explicit(&fss_fsock_opened, 1, memory_order_release);
	return fd;
}

bool fss_fsock__is_channel(int fd)
{
	struct stat st;
	int seals;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0 ||
	    st.st_size != FSS_FSOCK_CHAN_SIZE)
		return false;
	seals = FSS_REAL(fcntl)(fd, F_GET_SEALS);
	return seals >= 0 && (seals & FSS_FSOCK_CHAN_SEALS) == FSS_FSOCK_CHAN_SEALS;
}

/*
 * The kernel failed open(path) with ENOENT: answer "/dev/fastsocket" with a
 * channel if attached.  Returns the fd, or -1 with errno ENOENT (or why the
 * channel could not be made).
 */
static int fss_fsock__open_enoent(const char *path, int oflags)
{
	long r = -ENOENT;

	/* The kernel read the path to answer ENOENT, so it is readable. */
	if (FSS_LIKELY(strcmp(path, FSOCKET_DEVICE) != 0) || !fss_guard__enter()) {
		errno = ENOENT;
		return -1;
	}
	if (fss_init__attach() == FSS_STAGE_ATTACHED && !fss_client__dead())
		r = fss_fsock__channel(oflags);
	fss_guard__exit();
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	fss_debug(1, "open(%s) = %ld: a Fastsocket channel", FSOCKET_DEVICE, r);
	return (int)r;
}

/* ---- the open wrappers ------------------------------------------------- */

#define FSS_FSOCK_MODE(flags, mode)					\
	do {								\
		va_list ap_;						\
									\
		if (__OPEN_NEEDS_MODE(flags)) {				\
			va_start(ap_, flags);				\
			mode = va_arg(ap_, int);			\
			va_end(ap_);					\
		}							\
	} while (0)

/* r from the kernel: anything but ENOENT on an absolute path is final (a
 * NULL or unreadable path was EFAULT, so path can be read here). */
#define FSS_FSOCK_AFTER(r, path, flags)					\
	(FSS_LIKELY((r) >= 0 || errno != ENOENT || (path)[0] != '/')	\
	 ? (r) : fss_fsock__open_enoent(path, flags))

FSS_EXPORT int open(const char *path, int flags, ...)
{
	int mode = 0, r;

	FSS_FSOCK_MODE(flags, mode);
	r = FSS_REAL(open)(path, flags, mode);
	return FSS_FSOCK_AFTER(r, path, flags);
}

FSS_EXPORT int open64(const char *path, int flags, ...)
{
	int mode = 0, r;

	FSS_FSOCK_MODE(flags, mode);
	r = FSS_REAL(open64)(path, flags, mode);
	return FSS_FSOCK_AFTER(r, path, flags);
}

FSS_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	int mode = 0, r;

	FSS_FSOCK_MODE(flags, mode);
	r = FSS_REAL(openat)(dirfd, path, flags, mode);
	return FSS_FSOCK_AFTER(r, path, flags);
}

FSS_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	int mode = 0, r;

	FSS_FSOCK_MODE(flags, mode);
	r = FSS_REAL(openat64)(dirfd, path, flags, mode);
	return FSS_FSOCK_AFTER(r, path, flags);
}

FSS_EXPORT int __open_2(const char *path, int flags)
{
	int r = FSS_REAL(__open_2)(path, flags);

	return FSS_FSOCK_AFTER(r, path, flags);
}

FSS_EXPORT int __open64_2(const char *path, int flags)
{
	int r = FSS_REAL(__open64_2)(path, flags);

	return FSS_FSOCK_AFTER(r, path, flags);
}

FSS_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	int r = FSS_REAL(__openat_2)(dirfd, path, flags);

	return FSS_FSOCK_AFTER(r, path, flags);
}

FSS_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	int r = FSS_REAL(__openat64_2)(dirfd, path, flags);

	return FSS_FSOCK_AFTER(r, path, flags);
}

/* ---- listen spawn ------------------------------------------------------ */

/* enable_listen_spawn as the daemon published it (2 if it did not). */
static int fss_fsock__listen_spawn(void)
{
	uint32_t v;

	if (!fss_client.attached || fss_client.hdr == NULL)
		return 2;
	v = __atomic_load_n(&fss_client.hdr->fastsocket, __ATOMIC_RELAXED);
	if (!(v & FSS_FSOCK_SET))
		return 2;
	return (int)(v & FSS_FSOCK_LISTEN_SPAWN);
}

/* Puts the calling thread on cpu (-1: choose) as enable_listen_spawn says;
 * every accept names the caller's CPU (sock.c), so its shard serves first. */
static long fss_fsock__spawn_on(int cpu)
{
	int mode = fss_fsock__listen_spawn();
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	cpu_set_t set, one;
	int i, n, k;

	if (mode == 0)
		return -EPERM;
	if (cpu < -1 || cpu >= ncpu || cpu >= CPU_SETSIZE)
		return -EINVAL;
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return -errno;
	n = CPU_COUNT(&set);
	if (mode == 1 || (cpu < 0 && n == 1)) {
		/* the application chose: exactly one CPU, and cpu names it */
		if (n != 1)
			return -EINVAL;
		for (i = 0; !CPU_ISSET(i, &set); i++)
			;
		if (cpu >= 0 && cpu != i)
			return -EINVAL;
		cpu = i;
	} else {
		if (cpu < 0) {
			if (n == 0)
				return -EINVAL;
			k = (int)(fss_client.client_id % (uint32_t)n);
			for (i = 0; i < CPU_SETSIZE; i++)
				if (CPU_ISSET(i, &set) && k-- == 0)
					break;
			cpu = i;
		}
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		if (sched_setaffinity(0, sizeof(one), &one) < 0)
			return -errno;
	}
	fss_debug(1, "listen spawn: on CPU %d, whose shard accepts serve first", cpu);
	return 0;
}

/* 1 if fd is an fsstack listener, 0 if a socket that is not one, or -errno. */
static long fss_fsock__is_listener(int fd)
{
	socklen_t len;
	int on = 0;

	if (fss_fdtab__peek(fd) == NULL)
		return FSS_REAL(fcntl)(fd, F_GETFD) < 0 ? -EBADF : -EINVAL;
	len = sizeof(on);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0)
		return -errno;
	return on != 0;
}

static long fss_fsock__spawn_listen(int fd, int cpu)
{
	long r = fss_fsock__is_listener(fd);

	if (r < 0)
		return r;
	if (r == 0)
		return -EINVAL;
	return fss_fsock__spawn_on(cpu);
}

static void fss_fsock__count_listener(int fd, struct fss_file *f, void *arg)
{
	(void)f;
	if (fss_fsock__is_listener(fd) == 1)
		(*(int *)arg)++;
}

static long fss_fsock__spawn_all(void)
{
	int n = 0;

	fss_fdtab__for_each(0, ~0u, fss_fsock__count_listener, &n);
	return n == 0 ? 0 : fss_fsock__spawn_on(-1);
}

/* ---- the ioctls -------------------------------------------------------- */

/* The commands that are socket calls: the shim's own (wrappers.c), never
 * the public symbols, which may be the interposer that issued the ioctl.
 * A non-negative result or -errno. */
static long fss_fsock__call(unsigned long req, const struct fsocket_ioctl_arg *a)
{
	switch (req) {
	case FSOCKET_IOC_SOCKET:
		return fss_inner__socket((int)a->op.socket_op.family, (int)a->op.socket_op.type,
					 (int)a->op.socket_op.protocol);
	case FSOCKET_IOC_LISTEN:
		return fss_inner__listen((int)a->fd, (int)a->backlog);
	case FSOCKET_IOC_ACCEPT:
		return fss_inner__accept4((int)a->fd, (struct sockaddr *)a->op.accept_op.sockaddr,
					  (socklen_t *)a->op.accept_op.sockaddr_len,
					  a->op.accept_op.flags);
	case FSOCKET_IOC_CLOSE:
		return fss_inner__close((int)a->fd);
	case FSOCKET_IOC_SHUTDOWN_LISTEN:
		return fss_inner__shutdown((int)a->fd, a->op.shutdown_op.how);
	}
	return -EINVAL;
}

int fss_fsock__ioctl(int fd, unsigned long req, void *arg)
{
	struct fsocket_ioctl_arg a;
	int saved = errno;
	long r;

	switch (req) {
	case FIOCLEX: case FIONCLEX: case FIONBIO: case FIOASYNC:
		return FSS_REAL(ioctl)(fd, req, arg);	/* the kernel's, on any fd */
	}
	r = fss_fsock__copy_in(&a, arg, sizeof(a));
	if (r == 0) {
		switch (req) {
		case FSOCKET_IOC_SPAWN_LISTEN:
			r = fss_fsock__spawn_listen((int)a.fd, a.op.spawn_op.cpu);
			break;
		case FSOCKET_IOC_SPAWN_ALL_LISTEN:
			r = fss_fsock__spawn_all();
			break;
		case FSOCKET_IOC_SOCKET: case FSOCKET_IOC_LISTEN: case FSOCKET_IOC_ACCEPT:
		case FSOCKET_IOC_CLOSE: case FSOCKET_IOC_SHUTDOWN_LISTEN:
			r = fss_fsock__call(req, &a);
			break;
		default:
			r = -EINVAL;
		}
	}
	fss_debug(2, "ioctl(%d, %#lx) on a Fastsocket channel: %ld", fd, req, r);
	return FSS_RET(int, r, saved);
}
