/* SPDX-License-Identifier: Apache-2.0 */
/*
 * client.h - this process as a client of the fsstack daemon.
 *
 * Everything that touches the shared-memory ABI (fsstack_abi.h) lives in
 * client.c; sock.c, epoll.c and poll.c use this interface.  Functions return
 * a non-negative result or -errno.
 */
#ifndef FSS_CLIENT_H
#define FSS_CLIENT_H

#include "fsstack_abi.h"
#include "file.h"

/* epoll data values that mark the shim's own fds in an epoll set (the
 * application's or the per-thread private one). */
#define FSS_TAG_WAKE 0x6673737461636b01ull	/* "fsstack\1": wake eventfd */
#define FSS_TAG_CTL  0x6673737461636b02ull	/* "fsstack\2": control connection */
#define FSS_TAG_SET  0x6673737461636b03ull	/* "fsstack\3": a nested set's eventfd */

/*
 * The attached client.  Layout fields are written at attach (under the init
 * lock, before fss_stage says ATTACHED) or by a fork child before it runs
 * anything else, then only read.
 */
struct fss_waiter;

struct fss_client {
	int ctl_fd;		/* unix connection; open for the client's life */
	int doorbell_fd;	/* eventfd: the shim writes, the daemon reads */
	int wake_fd;		/* eventfd: the daemon writes, never drained */
	void *seg;		/* the shared segment, MAP_SHARED */
	size_t seg_size;
	struct fss_seg_hdr *hdr;
	struct fss_ring *req, *cmpl;
	uint64_t *ready_map, *kick_map;
	uint32_t req_entries, cmpl_entries, sock_count, rx_size, tx_size;
	uint32_t client_id;
	bool attached;
	/* +1 per attach (fork children re-attach); per-thread state built for
	 * an older generation is rebuilt.  Written at attach, read anywhere. */
	_Atomic uint32_t generation;
	/* Set once the daemon is known gone (control EOF, daemon_state GONE);
	 * any thread. */
	_Atomic int dead;
	/* Producers of the request ring serialise on req_lock; the consumer
	 * of the completion ring holds cmpl_lock, which also guards waiters
	 * (the calls in flight, routed by req_id).  Order: req_lock, then
	 * cmpl_lock.  next_req_id: atomic. */
	pthread_mutex_t req_lock, cmpl_lock;
	struct fss_waiter *waiters;
	_Atomic uint64_t next_req_id;
};
extern struct fss_client fss_client;

long fss_client__attach(const char *path);
void fss_client__atfork_prepare(void);
void fss_client__atfork_parent(void);
void fss_client__atfork_child(void);
/* fork: the parent prepares a token, the child claims it, the parent commits. */
long fss_client__fork_prepare(uint64_t *token);
void fss_client__fork_commit(uint64_t token, pid_t child);
long fss_client__reattach_child(const char *path, uint64_t token);

/* Moves an internal fd out of the application's way (high, close-on-exec);
 * returns the new number. */
int fss_client__hide_fd(int fd);
/* True for the shim's own fds (the application may not close them). */
bool fss_client__internal_fd(int fd);
/* The shim's own fds of this process and thread; returns how many. */
#define FSS_CLIENT_INTERNAL_MAX 4
int fss_client__internal_fds(int *fds);
bool fss_client__dead(void);

/* One request/completion round trip; returns cmpl.result. out may be NULL. */
long fss_client__call(struct fss_req *req, struct fss_cmpl *out);
/* Posts a request whose result nobody needs (its completion is dropped);
 * requests are served in order, so later calls see its effect. */
long fss_client__post(struct fss_req *req);

/* The daemon's slot for f. */
struct fss_sock *fss_client__slot(const struct fss_file *f);
/* Readiness (EPOLL* == POLL* bits) from shared memory, no syscall; a dead
 * daemon makes every socket ERR|HUP. */
unsigned int fss_client__events(struct fss_file *f);
/* Bumped by the daemon on every observable change of f's slot (EPOLLET). */
uint32_t fss_client__event_seq(struct fss_file *f);
/* Free bytes in the tx FIFO. */
uint32_t fss_client__tx_free(struct fss_file *f);
void fss_client__tx_nospace(struct fss_file *f);
bool fss_client__tx_writable(struct fss_file *f);
/* Bytes in the rx FIFO (FIONREAD). */
long fss_client__readable(struct fss_file *f);
/* Accept rings: take a record (1, the accept lock held until
 * fss_client__accept_done), 0 ask the daemon, -EAGAIN nothing queued. */
long fss_client__accept_ring(struct fss_file *f, struct fss_cmpl *c);
void fss_client__accept_lock(void);
void fss_client__accept_done(void);
void fss_client__accept_reinit(void);
/* A thread sleeping for a listener counts itself in its accept_waiters. */
int fss_client__accept_weight(struct fss_file *f);
struct fss_await {
	struct fss_sock *s;	/* NULL: nothing counted */
	uint32_t gen;		/* the slot's generation when counted */
	int weight;
};
bool fss_client__accept_wait_begin(struct fss_file *f, int weight, struct fss_await *aw);
void fss_client__accept_wait_end(struct fss_await *aw);
void fss_client__accept_waits_end(struct fss_await *aw, int n);	/* of n waits' counts */
bool fss_client__listening(struct fss_file *f);

/* Data, never blocking: bytes moved, or -EAGAIN when the rx FIFO is empty
 * or the tx FIFO full (end of stream and errors are the caller's, from the
 * slot's events). */
long fss_client__recv(struct fss_file *f, const struct iovec *iov, int iovcnt, int flags);
long fss_client__send(struct fss_file *f, const struct iovec *iov, int iovcnt, int flags);
/* sendfile: reads in_fd straight into the tx FIFO. */
long fss_client__send_file(struct fss_file *f, int in_fd, off64_t *offset, size_t count);
/* splice(2) between a socket's FIFO and a pipe (client.c) */
long fss_client__recv_to_pipe(struct fss_file *f, int pipe_fd, size_t count, bool nowait);
long fss_client__send_from_pipe(struct fss_file *f, int pipe_fd, size_t count, bool nowait);

void fss_client__kick(uint32_t slot);
/* Wakes this process's own sleepers (an epoll_ctl made a socket ready for
 * a set another thread waits on). */
void fss_client__poke(void);

/*
 * Sleeping (SHIM_PROTOCOL.md section 2): sleep_begin announces a waiter
 * (shim_waiters++ and a full fence), the caller re-checks its condition,
 * blocks with the wake fd in its set, then sleep_end.
 *
 * fss_client__block does all of it on the thread's private epoll fd: returns
 * 0 when ready() may have become true (or spuriously), -ETIMEDOUT, or -EINTR
 * (only if intr) when a signal arrived.  With intr under a hold the sleep
 * has the caller's mask, so a signal held since is delivered in it (EINTR);
 * without intr, held signals stay pending.
 */
/*
 * Blocking paths hold the application's asynchronous signals from before
 * their last check or request to their return (client.c, "Signals on the
 * blocking paths"); fss_client__block(intr) sleeps with the caller's mask.
 * sig_hold returns whether it took the hold (false: an outer path holds
 * them, or it failed); pass that to sig_release.  sig_caller is the
 * caller's mask while held, else NULL.
 */
bool fss_client__sig_hold(sigset_t *old);
void fss_client__sig_release(bool held, const sigset_t *old);
const sigset_t *fss_client__sig_caller(void);
bool fss_client__spin(int64_t timeout_ns, const sigset_t *mask);
void fss_client__sleep_begin(void);
void fss_client__sleep_end(void);
long fss_client__block(bool (*ready)(void *arg), void *arg, int timeout_ms, bool intr);
/* This thread's private epoll fd (wake fd + control connection, EPOLLET)
 * to put in a poll set, and consuming its edges after it polled readable. */
int fss_client__wait_fd(void);
void fss_client__wait_consume(void);
/* Handles one of the shim's tagged events out of an epoll set. */
void fss_client__saw_event(uint64_t tag);

#endif /* FSS_CLIENT_H */
