/* SPDX-License-Identifier: Apache-2.0 */
/*
 * file.h - the shim's object for one fsstack socket.
 *
 * A struct fss_file is the analogue of the kernel's open file description:
 * dup/dup2/dup3 and fork make more fd-table entries point at one object, and
 * file status flags (O_NONBLOCK) live here, shared by all of them, while
 * FD_CLOEXEC stays per fd on the kernel placeholder where the kernel keeps
 * it.  Objects are type-stable (file_pool.c) so lock-free readers of the fd
 * table can take references safely.
 *
 * (struct fss_sock in fsstack_abi.h is the daemon's shared slot of the same
 * socket; this struct is private to the process.)
 *
 * Threading: any thread may use any socket.  Every field says who writes it.
 */
#ifndef FSS_FILE_H
#define FSS_FILE_H

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>

#include "fdtab.h"

struct fss_file {
	/* fd-table entries plus calls in flight; 0 means free.  Any thread,
	 * atomic; the thread that drops it to 0 releases the socket. */
	_Atomic int refs;
	/* O_NONBLOCK (the only file status flag the shim interprets); written
	 * by fcntl(F_SETFL)/ioctl(FIONBIO)/accept4/socket on any fd of the
	 * object, read by every blocking call. */
	_Atomic int status_flags;
	/* The daemon's socket id ((gen << 16) | slot, fsstack_abi.h), fixed at
	 * creation; the slot itself is found through the client's segment. */
	uint32_t id;
	/* AF_INET or AF_INET6, fixed at creation (an accepted socket has its
	 * listener's): the placeholder's family and the sockaddr format. */
	int family;
	/* Unique per allocation of this object: an epoll interest item is
	 * valid only while the fd still names the object with this serial. */
	uint32_t serial;
	/* SO_RCVTIMEO / SO_SNDTIMEO in milliseconds, 0 = none, as the
	 * placeholder read them back (sock.c, fss_phopts).  Any thread,
	 * atomic. */
	_Atomic int rcvtimeo_ms, sndtimeo_ms;
	/* SO_LINGER as last set successfully (the daemon applies it; the
	 * shim needs it for close, which lingers here).  Any thread, atomic. */
	_Atomic int linger_on, linger_secs;
	/* Set when a send found the tx FIFO full (the kernel's SOCK_NOSPACE):
	 * sends then wait until a third of the FIFO is free, as
	 * sk_stream_is_writeable does.  Any thread, atomic. */
	_Atomic int tx_nospace;
	/* Bit i: option i of fss_dmopts (sock.c) was set through the daemon;
	 * a handover copies those onto the placeholder.  Any thread, atomic. */
	_Atomic unsigned int dmopts;
	/* A connect() returned EINPROGRESS and no later connect() has
	 * reported the outcome yet (the kernel's SS_CONNECTING): the next
	 * connect() returns EALREADY, 0 once, or the error once. */
	_Atomic int connecting;
	/* The placeholder also listens on 127.0.0.1 at the listener's port
	 * (the daemon said FSS_CMPL_LISTEN_LOOPBACK): accept takes from both
	 * queues, readiness is either's.  The placeholder is then always
	 * O_NONBLOCK in the kernel; status_flags stays what the application
	 * set, and F_GETFL reports that.  Set once by listen, never cleared;
	 * kturn alternates accept between the two queues.  Atomic. */
	_Atomic int klisten;
	_Atomic unsigned int kturn;
	/* Epoll items watching this listener for EPOLLIN (epoll.c): an event
	 * loop that comes back to it soon, for which the daemon may queue
	 * several connections in the accept ring (client.c,
	 * fss_client__accept_wait_begin).  Atomic. */
	_Atomic int ep_watch;
	/* One thread at a time copies out of the rx FIFO and into the tx FIFO
	 * (SHIM_PROTOCOL.md section 4); independent of each other. */
	pthread_mutex_t rx_lock, tx_lock;
	struct fss_file *pool_next;	/* free list link; under the pool lock */
};

/* file_pool.c */
struct fss_file *fss_file__alloc(void);	/* refs = 1, id 0 */
void fss_file__free(struct fss_file *s);	/* back to the pool */
void fss_file__pool_atfork_prepare(void);
void fss_file__pool_atfork_parent(void);
void fss_file__pool_atfork_child(void);

/* A referenced socket for fd, or NULL if fd is not an fsstack socket. */
static inline struct fss_file *fss_file__get(int fd)
{
	for (;;) {
		struct fss_file *s = fss_fdtab__peek(fd);
		int r;

		if (FSS_LIKELY(s == NULL))
			return NULL;
		r = atomic_load_explicit(&s->refs, memory_order_relaxed);
		while (r > 0 && !atomic_compare_exchange_weak_explicit(
				&s->refs, &r, r + 1, memory_order_acquire, memory_order_relaxed))
			;
		if (r == 0)
			continue;	/* being freed; the entry is gone or changing */
		if (fss_fdtab__peek(fd) == s)
			return s;
		/* the fd was closed or re-pointed meanwhile */
		if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
			void fss_file__release(struct fss_file *s);
			fss_file__release(s);
		}
	}
}

static inline void fss_file__ref(struct fss_file *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* Drops a reference; the last one closes the socket in the daemon. */
void fss_file__release(struct fss_file *s);
static inline void fss_file__put(struct fss_file *s)
{
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		fss_file__release(s);
}

static inline bool fss_file__nonblock(const struct fss_file *s)
{
	return atomic_load_explicit(&s->status_flags, memory_order_relaxed) & O_NONBLOCK;
}

/* True if socket(domain, type, protocol) is one fsstack serves. */
static inline bool fss_file__wants(int domain, int type, int protocol)
{
	return (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM &&
	       (protocol == 0 || protocol == IPPROTO_TCP);
}

/* A fresh kernel fd of the given family to back a new fsstack socket
 * (SOCK_CLOEXEC honoured). */
long fss_file__placeholder(int family, int type_flags);

/* The operations of fd-dispatched calls, declared from fss_calls.def:
 * long fss_op_<name>(struct fss_file *s, <the call's parameters>). */
#define FSS_FD_CALL(ret, name, fd, params, args) \
	long fss_op_##name(struct fss_file *s, FSS_UNPAREN params);
#define FSS_CALL(ret, name, params, args)
#include "fss_calls.def"

/* Operations of hand-written wrappers on an owned fd. */
long fss_op_socket(int domain, int type, int protocol);
long fss_op_fcntl(struct fss_file *f, int fd, int cmd, long arg);
long fss_op_ioctl(struct fss_file *f, int fd, unsigned long req, void *arg);
long fss_op_splice(struct fss_file *f, bool sock_in, int fd_in, loff_t *off_in, int fd_out,
		   loff_t *off_out, size_t len, unsigned int flags);

#endif /* FSS_FILE_H */
