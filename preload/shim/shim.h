/* SPDX-License-Identifier: Apache-2.0 */
/*
 * shim.h - internal declarations of libfsstack.so.
 *
 * Layering, from the application down:
 *
 *   app --(libc call)--> wrappers.c --not ours--> real.c: libc, no lock
 *                            |
 *                            | fd owned (fdtab.c), or a call that may create one
 *                            v
 *                 sock.c / epoll.c / poll.c  (return -errno)
 *                            |
 *                            v
 *                 client.c: daemon attach, shared segment (fsstack_abi.h)
 *
 * Conventions: every internal function returns a non-negative result or
 * -errno; errno is set only at the libc boundary (FSS_RET).
 * Everything is hidden (-fvisibility=hidden) except the interposed symbols,
 * which the version script generated from fss_calls.def exports.
 */
#ifndef FSS_SHIM_H
#define FSS_SHIM_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FSS_EXPORT    __attribute__((visibility("default")))
#define FSS_LIKELY(x)   __builtin_expect(!!(x), 1)
#define FSS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define FSS_TLS       __thread __attribute__((tls_model("initial-exec")))
#define FSS_UNPAREN(...) __VA_ARGS__

/* glibc declares the sockaddr arguments as transparent unions under
 * _GNU_SOURCE; these take the plain pointer out of either form. */
#if defined(__USE_GNU) && defined(__GNUC__)
#define FSS_SA(a)  ((a).__sockaddr__)
#define FSS_CSA(a) ((a).__sockaddr__)
#else
#define FSS_SA(a)  (a)
#define FSS_CSA(a) (a)
#endif

/* Declarations glibc only makes under _FORTIFY_SOURCE. */
ssize_t __read_chk(int fd, void *buf, size_t nbytes, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
		       __SOCKADDR_ARG addr, socklen_t *alen);
int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
		const sigset_t *sigmask, size_t fdslen);
void __chk_fail(void) __attribute__((noreturn));

/* ---- real.c: libc's implementations ------------------------------------ */

/* One pointer per interposed call, resolved with dlsym(RTLD_NEXT) once by the
 * constructor, or lazily by the first wrapper that runs before it.  Written
 * by fss_real__resolve (idempotent: every resolver stores the same values;
 * unresolved slots hold an ENOSYS stub, never NULL), read by every wrapper.
 * fss_real_ready: set (release) once a resolve completed; read (acquire) by
 * FSS_REAL. */
struct fss_real {
#define FSS_CALL(ret, name, params, args) ret (*name) params;
#include "fss_calls.def"
};
extern struct fss_real fss_real;
extern _Atomic int fss_real_ready;

void fss_real__resolve(void);

/* FSS_REAL(name) is libc's `name`, resolving the table first if needed. */
#define FSS_REAL(name)							\
	((FSS_LIKELY(atomic_load_explicit(&fss_real_ready,		\
					  memory_order_acquire))	\
	  ? (void)0 : fss_real__resolve()), fss_real.name)

/* ---- the kernel, below every interposer --------------------------------- */

/*
 * FSS_REAL(name) is the next definition of name after the shim, which need
 * not be libc's: a library preloaded after the shim (Fastsocket's
 * libfsocket.so is one) wraps socket, listen, accept4, close, shutdown and
 * epoll_ctl and turns them into /dev/fastsocket ioctls, which this shim
 * serves, so a shim call through it would come straight back.  FSS_REAL is
 * for passing an application's call on down the chain; the shim's own kernel
 * objects (placeholders, their kernel listeners and registrations, the
 * client's fds and epoll sets) and the calls the ioctls serve go to the
 * kernel with these, libc's convention (-1 and errno).
 */
/* The monotonic clock in nanoseconds: deadlines and spins. */
static inline int64_t fss_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int fss_sys__socket(int domain, int type, int protocol)
{
	return (int)syscall(SYS_socket, domain, type, protocol);
}

static inline int fss_sys__listen(int fd, int backlog)
{
	return (int)syscall(SYS_listen, fd, backlog);
}

static inline int fss_sys__accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

static inline int fss_sys__shutdown(int fd, int how)
{
	return (int)syscall(SYS_shutdown, fd, how);
}

static inline int fss_sys__close(int fd)
{
	return (int)syscall(SYS_close, fd);
}

static inline int fss_sys__epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	return (int)syscall(SYS_epoll_ctl, epfd, op, fd, ev);
}

/* ---- wrappers.c: the calls for callers inside the shim ------------------- */

/* socket, listen, accept4, shutdown and close as the wrappers serve them, for
 * fastsocket.c's ioctls: a non-negative result or -errno, and what is not
 * fsstack's goes to the kernel by fss_sys__*, never to FSS_REAL. */
long fss_inner__socket(int domain, int type, int protocol);
long fss_inner__listen(int fd, int backlog);
long fss_inner__accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
long fss_inner__shutdown(int fd, int how);
long fss_inner__close(int fd);

/* ---- init.c: staged initialisation and configuration ------------------- */

/*
 * Stages, each a superset of the one before.  The stage only grows, except
 * in a fork child (init_fork_child) where the daemon stage is reset.
 *
 *   FSS_STAGE_NONE      nothing done; wrappers still pass through (lazy dlsym)
 *   FSS_STAGE_LIBC      real table resolved, config read: passthrough works
 *   FSS_STAGE_KERNEL    daemon unreachable (or FSSTACK_DISABLE): every socket
 *                       is a kernel socket; or, with FSSTACK_FALLBACK=fail,
 *                       AF_INET stream sockets fail
 *   FSS_STAGE_ATTACHED  attached to the daemon: AF_INET stream sockets are ours
 */
enum fss_stage {
	FSS_STAGE_NONE = 0,
	FSS_STAGE_LIBC,
	FSS_STAGE_KERNEL,
	FSS_STAGE_ATTACHED,
};

enum fss_fallback {
	FSS_FALLBACK_KERNEL = 0,	/* default: the kernel serves sockets */
	FSS_FALLBACK_FAIL,		/* socket() fails with FSS_FAIL_ERRNO */
};

/* errno of socket(AF_INET, SOCK_STREAM) under FSSTACK_FALLBACK=fail when the
 * daemon cannot be reached. */
#define FSS_FAIL_ERRNO ENETDOWN

#define FSS_DEFAULT_SOCKET "/run/fsstack/fsstack.sock"

/* How long a wait that finds nothing watches for the daemon's next
 * readiness change before it sleeps (FSSTACK_SPIN_US). */
#define FSS_SPIN_US_DEFAULT 50

struct fss_config {
	char socket_path[108];		/* FSSTACK_SOCKET; sun_path sized */
	enum fss_fallback fallback;	/* FSSTACK_FALLBACK=kernel|fail */
	bool disable;			/* FSSTACK_DISABLE=1: never attach */
	int debug;			/* FSSTACK_DEBUG=N: log level */
	int64_t spin_ns;		/* FSSTACK_SPIN_US=N: look before sleeping, in ns */
};
extern struct fss_config fss_config;	/* written once by init, then read-only */

extern _Atomic int fss_stage;		/* enum fss_stage */

void fss_init__libc(void);
/* Makes sure an attach was tried; returns the stage reached (KERNEL or
 * ATTACHED).  Slow path: takes fss_init's mutex. */
int fss_init__attach(void);
/* fork() as the shim does it: the daemon hands the parent's sockets to the
 * child, which attaches as a new client. */
pid_t fss_init__fork(void);

/* Logging to stderr with the raw write(2) of libc, never through stdio (the
 * host may have closed or redirected it).  fss_log never changes errno. */
void fss_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define fss_debug(lvl, ...) \
	do { if (FSS_UNLIKELY(fss_config.debug >= (lvl))) fss_log(__VA_ARGS__); } while (0)

/* ---- the re-entrancy guard --------------------------------------------- */

/*
 * fss_tls.depth > 0 while this thread runs shim code that may call into libc
 * (dlsym, the attach path, malloc of an interposing allocator...).  A wrapper
 * entered while the guard is held passes straight through to libc, so the
 * shim never recurses into itself.  Per thread, written only by its thread.
 */
struct fss_tls {
	int depth;
};
extern FSS_TLS struct fss_tls fss_tls;

static inline bool fss_guard__enter(void)
{
	if (fss_tls.depth)
		return false;
	fss_tls.depth = 1;
	return true;
}

static inline void fss_guard__exit(void)
{
	fss_tls.depth = 0;
}

/* ---- application pointers --------------------------------------------- */

/*
 * A cheap screen for pointers the kernel would answer with EFAULT: NULL and
 * the first pages (below the default vm.mmap_min_addr), wrap-around, and the
 * kernel half of the address space.  Copies to and from the application go
 * through fss_ucopy after this screen (the Fastsocket ioctl's rare argument
 * reads through process_vm_readv).
 */
/* memcpy that returns -EFAULT (0 on success) when a page of dst or src
 * faults, as copy_to_user/copy_from_user; see ucopy.c. */
long fss_ucopy(void *dst, const void *src, size_t n);
/* n bytes between a ring (power-of-two size, from position pos, wrapping)
 * and an iovec array, in one guarded region; 0 or -EFAULT. */
struct iovec;
long fss_ucopy_ring_to_iov(const struct iovec *iov, int iovcnt, const uint8_t *ring,
			   uint32_t ring_size, uint32_t pos, uint32_t n);
long fss_ucopy_iov_to_ring(uint8_t *ring, uint32_t ring_size, uint32_t pos,
			   const struct iovec *iov, int iovcnt, uint32_t n);

static inline bool fss_user_ok(const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p;

	if (len == 0)
		return true;
	return a >= 65536 && a + len > a && a + len <= 0x800000000000ull;
}

/* ---- results at the libc boundary ---------------------------------------- */

/* r >= 0: return r with errno as the caller had it; r < 0: errno = -r, -1. */
#define FSS_RET(type, r, saved_errno)				\
	((r) < 0 ? (errno = (int)-(r), (type)-1)		\
		 : (errno = (saved_errno), (type)(r)))

#endif /* FSS_SHIM_H */
