/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fsstack_abi.h — every layout shared between the fsstack daemon (Go) and the
 * LD_PRELOAD shim libfsstack.so (C). This file is the single definition:
 *
 *   - the C shim includes it directly;
 *   - the Go daemon gets its types from `go tool cgo -godefs` run over
 *     preload/abi/types.go (checked in as preload/abi/zabi_linux_amd64.go),
 *     and preload/abi/abicheck (a cgo package) asserts that every size and
 *     offset Go uses equals the one the C compiler computes from this file.
 *
 * docs/SHIM_PROTOCOL.md explains the protocol in prose; this header is the
 * authority on layouts and constants.
 *
 * Conventions
 *   - Fixed-width little-endian integers (x86-64 and arm64 only), no
 *     bitfields, no pointers, explicit padding: every struct has the same
 *     layout in C and Go.
 *   - Shared fields are plain uint32_t/uint64_t. They are accessed with the
 *     C11 memory model through the GCC/Clang __atomic builtins (the helpers
 *     below), which is what atomic_load_explicit(..., memory_order_acquire)
 *     compiles to; Go uses sync/atomic (sequentially consistent, so stronger).
 *     Plain fields keep the structs readable by cgo -godefs.
 *   - Every shared field says who writes it. "daemon" fields are never
 *     written by the shim and vice versa.
 *   - Results are 0 or positive on success and -errno (Linux values) on
 *     failure.
 *   - Indices of rings and FIFOs are free-running uint32 counters; the
 *     position in the buffer is (index & (size - 1)); sizes are powers of two.
 *     used = prod - cons (mod 2^32), always <= size.
 */
#ifndef FSSTACK_ABI_H
#define FSSTACK_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version carried in the hello, the reply and the segment header. The
 * daemon refuses versions it cannot serve (status -EPROTONOSUPPORT). */
#define FSS_ABI_VERSION 2	/* 2: events carries the state (FSS_EV_STATE_MASK) */

#define FSS_CACHELINE 64

/* ------------------------------------------------------------------------
 * 1. Attach handshake, on the daemon's unix stream socket (the same socket as
 *    the JSON control protocol; JSON requests start with '{', a hello starts
 *    with the 4 bytes "FSSA").
 *
 *    shim   -> daemon: struct fss_hello (exactly hello.size bytes)
 *    daemon -> shim  : struct fss_hello_reply, in ONE sendmsg; when
 *                      status == 0 it carries SCM_RIGHTS with FSS_ATTACH_NFDS
 *                      fds in this order: memfd segment, doorbell eventfd
 *                      (shim writes, daemon reads), wake eventfd (daemon
 *                      writes, shim reads/polls). When status != 0 there are
 *                      no fds and the daemon closes the connection.
 *
 *    The daemon checks SO_PEERCRED: hello.pid must equal the peer's pid (in
 *    the daemon's pid namespace), else status -EPERM. The uid is recorded.
 *    The connection stays open for the life of the client: the daemon treats
 *    EOF (or any further byte) on it as "client gone" and releases all its
 *    sockets. After fork() the child must close its inherited copy.
 * ------------------------------------------------------------------------ */
#define FSS_HELLO_MAGIC "FSSA"
#define FSS_REPLY_MAGIC "FSSR"
#define FSS_MAGIC_LEN 4

/* hello.flags */
#define FSS_HELLO_FORK_CHILD 0x1u /* attaching from a fork child; expect FSS_OP_FORK_INHERIT */
#define FSS_HELLO_WAKE_ACK   0x2u /* the shim acknowledges wake-ups (seg_hdr.wake_ack), so the daemon
                                     writes the wake fd once per acknowledged wake, not once per event */
#define FSS_HELLO_HANDOVER   0x4u /* the shim hands sockets the daemon cannot serve over to the kernel: BIND and
                                     CONNECT may answer -FSS_HANDOVER_ERRNO (see FSS_OP_BIND, FSS_OP_CONNECT).
                                     No layout changes, so no new abi_version: a daemon that predates the flag
                                     ignores it (no handover), and a shim without it gets the old answers. */
#define FSS_HELLO_TX_NOSPACE 0x8u /* the shim raises FSS_SF_TX_NOSPACE (fss_sock.s_flags) whenever it could wait
                                     for room in a tx FIFO, so the daemon publishes room it frees only then, as
                                     the kernel wakes writers only under SOCK_NOSPACE (section 5). No layout
                                     change beyond a reserved word, so no new abi_version: a daemon that
                                     predates the flag publishes every read, and so does one for a shim
                                     without it. */
#define FSS_HELLO_ACCEPT_RING 0x10u /* the shim takes accepted connections from its listeners' accept rings
                                     (struct fss_accept_rec, below) before it sends FSS_OP_ACCEPT, and counts a
                                     listener readable while its ring holds one. No new abi_version: a daemon
                                     that predates the flag never fills a ring, and one for a shim without it
                                     neither. */

/* The result of BIND or CONNECT (only to clients that said FSS_HELLO_HANDOVER)
 * meaning "this address is not the daemon's: do the call on the kernel". The
 * daemon's backend does not own the local address (bind: loopback, another
 * interface's address, any address not on the stack's interface) or does not
 * reach the destination (connect: loopback, another local interface's address,
 * a destination the kernel routes through another interface). The socket is left
 * as it was; the shim performs the call on its placeholder and closes the
 * daemon's socket. A backend that reaches everything (the kernel backend of
 * shimd) never answers it. EXDEV: "not on this device"; no other op returns it. */
#define FSS_HANDOVER_ERRNO   18 /* EXDEV */

/* cmpl.flags of a successful LISTEN (only to clients that said
 * FSS_HELLO_HANDOVER): the listener is on INADDR_ANY and the daemon's backend
 * does not reach loopback, so kernel sockets of the same namespace connecting
 * to 127.0.0.1:port would find nothing. The shim also listens on its
 * placeholder bound to 127.0.0.1:port and merges the two accept queues.
 * Zero from a daemon that predates it (no layout change). */
#define FSS_CMPL_LISTEN_LOOPBACK 0x1u

struct fss_hello {
	uint8_t  magic[4];     /* "FSSA" (no NUL) */
	uint32_t abi_version;  /* FSS_ABI_VERSION the shim was built with */
	uint32_t size;         /* sizeof(struct fss_hello) as the shim knows it; >= FSS_HELLO_MIN_SIZE, <= 4096 */
	int32_t  pid;          /* getpid() of the attaching process */
	uint32_t flags;        /* FSS_HELLO_* */
	uint32_t reserved[3];  /* zero */
};
#define FSS_HELLO_MIN_SIZE 20 /* through .flags */
#define FSS_HELLO_MAX_SIZE 4096

struct fss_hello_reply {
	uint8_t  magic[4];     /* "FSSR" */
	int32_t  status;       /* 0, or -errno: -EPROTO (bad hello), -EPROTONOSUPPORT (version), -EPERM (pid), -ENOMEM, -EMFILE */
	uint32_t abi_version;  /* the daemon's FSS_ABI_VERSION */
	uint32_t size;         /* sizeof(struct fss_hello_reply) */
	uint64_t seg_size;     /* bytes to mmap(MAP_SHARED) from the memfd; also seg_hdr.seg_size */
	uint32_t client_id;    /* daemon-wide id of this client, never reused while the daemon runs; nonzero */
	uint32_t reserved;     /* zero */
};
#define FSS_ATTACH_NFDS 3
#define FSS_FD_SEGMENT  0
#define FSS_FD_DOORBELL 1 /* eventfd: the shim writes 1 when the daemon sleeps */
#define FSS_FD_WAKE     2 /* eventfd: the daemon writes 1 when a shim thread sleeps */

/* ------------------------------------------------------------------------
 * 2. The segment (memfd, MAP_SHARED in both processes).
 *
 *   offset 0             struct fss_seg_hdr            (4096 bytes)
 *   req_off              struct fss_ring + req_entries  x struct fss_req
 *   cmpl_off             struct fss_ring + cmpl_entries x struct fss_cmpl
 *   ready_map_off        sock_count bits (uint64 words): daemon -> shim
 *   kick_map_off         sock_count bits (uint64 words): shim -> daemon
 *   sock_off             sock_count x struct fss_sock
 *   fifo_off             per slot i: rx bytes at fifo_off + i*(rx+tx),
 *                                    tx bytes right after them
 *
 * All offsets are multiples of 64; fifo_off is a multiple of 4096. The
 * daemon fills the header before sending the memfd and never changes the
 * layout fields afterwards. A shim must use the offsets and counts from the
 * header, not compile-time defaults.
 * ------------------------------------------------------------------------ */
#define FSS_SEG_MAGIC "FSSTACK" /* 8 bytes with the NUL */

/* Defaults the daemon uses unless configured otherwise. */
#define FSS_DEFAULT_REQ_ENTRIES  256
#define FSS_DEFAULT_CMPL_ENTRIES 256 /* >= req_entries, see FSS ring rules */
#define FSS_DEFAULT_SOCKS        4096
#define FSS_DEFAULT_RX_FIFO      (64u << 10)
#define FSS_DEFAULT_TX_FIFO      (64u << 10)
#define FSS_MAX_SOCKS            65535 /* slot must fit in 16 bits of a socket id */

/* seg_hdr.daemon_sleeping bits. The shim writes the doorbell after posting a
 * request or kicking a slot when daemon_sleeping != 0, and after consuming
 * completions only when FSS_DSLEEP_CMPL is set (the daemon stopped taking
 * requests because the completion ring had no room). To ring, a shim thread
 * swaps daemon_sleeping from the value it saw to 0 (compare-and-swap) and
 * writes the doorbell only if its swap succeeded: one write per sleep, the
 * daemon being awake (or about to be) for everyone else. The daemon stores
 * daemon_sleeping itself before each sleep and 0 after it, so a daemon that
 * never looks at the swap is served the same. */
#define FSS_DSLEEP_REQ  0x1u
#define FSS_DSLEEP_CMPL 0x2u

/* seg_hdr.daemon_state */
#define FSS_DAEMON_RUNNING 1
#define FSS_DAEMON_GONE    2 /* daemon is shutting down or dropped this client: fail calls with EPIPE/ECONNRESET, do not wait */

/* seg_hdr.fastsocket: written once by the daemon before attach. */
#define FSS_FSOCK_SET          0x80000000u /* the daemon filled the field */
#define FSS_FSOCK_LISTEN_SPAWN 0x3u        /* enable_listen_spawn: 0 off, 1 app-set affinity, 2 fsstack-set affinity */

struct fss_seg_hdr {
	/* --- line 0..1: layout, written once by the daemon before attach --- */
	uint8_t  magic[8];        /* "FSSTACK\0" */
	uint32_t abi_version;     /* FSS_ABI_VERSION */
	uint32_t hdr_size;        /* sizeof(struct fss_seg_hdr) */
	uint64_t seg_size;        /* total size of the segment */
	uint32_t client_id;       /* same as the reply */
	int32_t  pid;             /* the attached pid */
	uint64_t req_off;         /* struct fss_ring of the request ring (shim -> daemon) */
	uint64_t cmpl_off;        /* struct fss_ring of the completion ring (daemon -> shim) */
	uint64_t ready_map_off;   /* readiness-changed bitmap */
	uint64_t kick_map_off;    /* kick bitmap */
	uint64_t sock_off;        /* socket table */
	uint64_t fifo_off;        /* FIFO data */
	uint32_t req_entries;     /* power of two */
	uint32_t cmpl_entries;    /* power of two, >= req_entries */
	uint32_t sock_count;      /* slots in the table, multiple of 64, <= FSS_MAX_SOCKS */
	uint32_t sock_size;       /* sizeof(struct fss_sock) */
	uint32_t msg_size;        /* sizeof(struct fss_req) == sizeof(struct fss_cmpl) */
	uint32_t rx_fifo_size;    /* bytes per rx FIFO, power of two */
	uint32_t tx_fifo_size;    /* bytes per tx FIFO, power of two */
	uint32_t fastsocket;      /* fastsocket.ko parameters the shim applies: FSS_FSOCK_SET | FSS_FSOCK_LISTEN_SPAWN bits; 0: the module's defaults */
	uint32_t reserved0[4];    /* zero; pads the layout block to 128 bytes */

	/* --- line 2: written by the daemon --- */
	uint32_t daemon_sleeping; /* daemon: FSS_DSLEEP_* bits while its client loop is (about to be) blocked on the doorbell, else 0 */
	uint32_t daemon_state;    /* daemon: FSS_DAEMON_* */
	uint32_t ev_seq;          /* daemon: +1 after every readiness change of any slot (after that slot's ev_seq) */
	uint32_t wake_seq;        /* daemon: +1 each time it writes the wake fd (FSS_HELLO_WAKE_ACK clients only) */
	uint32_t reserved1[12];

	/* --- line 3: written by the shim --- */
	uint32_t shim_waiters;    /* shim: number of shim threads blocked (or about to block) on the wake fd; atomic add/sub */
	uint32_t wake_ack;        /* shim: the wake_seq it saw when it last returned from a sleep (FSS_HELLO_WAKE_ACK) */
	uint32_t reserved2[14];

	uint8_t  reserved3[4096 - 4 * FSS_CACHELINE]; /* the header fills one page */
};

/* ------------------------------------------------------------------------
 * 3. Rings: single producer, single consumer, fixed-size 64-byte messages.
 *
 *   request ring    : producer shim (all threads, serialized by a process-
 *                     wide lock in the shim), consumer the daemon.
 *   completion ring : producer the daemon, consumer the shim (whichever thread
 *                     holds the shim's completion lock; it routes each
 *                     completion to its waiter by req_id).
 *
 *   The entries follow the struct fss_ring header directly:
 *   entry i is at ring_off + sizeof(struct fss_ring) + (i & (entries-1)) * 64.
 *
 *   Producer: check space (prod - load_acquire(cons) < entries), write the
 *             entry, store_release(prod, prod+1), then a full fence
 *             (fss_fence) and read the consumer's sleeping flag; if set,
 *             write 1 to the consumer's eventfd.
 *   Consumer: load_acquire(prod), read entries, store_release(cons, ...).
 *             To sleep: set its sleeping flag (daemon_sleeping / increment
 *             shim_waiters), full fence, re-check prod (and every other
 *             condition it waits for); block on its eventfd only if nothing
 *             changed; clear the flag after waking.
 *
 *   Wake coalescing (clients that said FSS_HELLO_WAKE_ACK): the daemon
 *   writes the wake fd only when shim_waiters > 0 AND wake_ack == wake_seq
 *   (no wake-up in flight), bumping wake_seq first (compare-and-swap). Every
 *   shim thread, whenever it returns from a sleep (woken, timed out or
 *   interrupted), stores wake_ack = load(wake_seq), fences, and only then
 *   re-checks what it waits for. Without the flag the daemon writes the wake
 *   fd after every change while shim_waiters > 0.
 *
 *   The daemon posts exactly one completion per request and never consumes a
 *   request while the completion ring has no room for its completion, so the
 *   completion ring cannot overflow. If it sleeps for that reason it sets
 *   FSS_DSLEEP_CMPL in daemon_sleeping, and the shim, after advancing the
 *   completion ring's cons, fences and writes the doorbell if that bit is set.
 * ------------------------------------------------------------------------ */
struct fss_ring {
	uint32_t prod;                            /* producer: next index to write */
	uint8_t  pad0[FSS_CACHELINE - 4];
	uint32_t cons;                            /* consumer: next index to read */
	uint8_t  pad1[FSS_CACHELINE - 4];
};

/* Socket ids: (generation << 16) | slot. A slot's generation is bumped each
 * time the daemon allocates it, skipping 0, so id 0 never names a socket and
 * a stale id fails with -EBADF instead of reaching a reused slot. */
#define FSS_SOCK_ID(slot, gen) ((((uint32_t)(gen) & 0xffffu) << 16) | ((uint32_t)(slot) & 0xffffu))
#define FSS_SOCK_SLOT(id)      ((uint32_t)(id) & 0xffffu)
#define FSS_SOCK_GEN(id)       (((uint32_t)(id) >> 16) & 0xffffu)

/* Ops (fss_req.op). Data is NOT an op: bytes move through the per-socket
 * FIFOs; see section 5. Every op is answered with one fss_cmpl with the same
 * req_id and op. "sock" below means fss_req.sock. */
enum fss_op {
	FSS_OP_NOP          = 0,  /* -> 0. Liveness check. */
	FSS_OP_SOCKET       = 1,  /* arg0 domain, arg1 type (flags masked off; SOCK_NONBLOCK/CLOEXEC are shim state), arg2 protocol
	                             -> cmpl.sock = new socket id. -EAFNOSUPPORT / -EPROTONOSUPPORT / -EMFILE (table full). */
	FSS_OP_BIND         = 2,  /* data = struct fss_sockaddr. -> 0, -EINVAL (already bound), -EADDRINUSE, -EADDRNOTAVAIL,
	                             -EAFNOSUPPORT. Port 0 gets its port at once when the backend can reserve addresses.
	                             -FSS_HANDOVER_ERRNO (FSS_HELLO_HANDOVER): a specific address the backend does not own. */
	FSS_OP_LISTEN       = 3,  /* arg0 backlog. -> 0. The socket's accept queue starts filling (accept_pending).
	                             cmpl.flags may carry FSS_CMPL_LISTEN_LOOPBACK. */
	FSS_OP_ACCEPT       = 4,  /* never blocks in the daemon. -> cmpl.sock = new socket id (CONNECTED), cmpl.data = peer
	                             struct fss_sockaddr; or -EAGAIN (queue empty: the shim waits for accept_pending > 0),
	                             -EINVAL (not listening). With FSS_REQ_CPU, arg0 = the caller's CPU: the daemon takes
	                             from the accept queue of that CPU's shard (cpu % shards) first and from the others only
	                             when it is empty (Fastsocket's local listen table). cmpl.val0 = the shard the
	                             connection came from. */
	FSS_OP_CONNECT      = 5,  /* data = struct fss_sockaddr. Never blocks in the daemon: -> -EINPROGRESS (dial started;
	                             the outcome appears in the slot: FSS_EV_CONNECTED, or FSS_EV_ERR with so_error),
	                             -EALREADY (in progress), -EISCONN, -ECONNREFUSED...
	                             -FSS_HANDOVER_ERRNO (FSS_HELLO_HANDOVER): the backend does not reach the destination;
	                             cmpl.data = the struct fss_sockaddr an earlier BIND asked for (zero if none), which
	                             the shim binds the kernel socket to before connecting it. */
	FSS_OP_SHUTDOWN     = 6,  /* arg0 how (SHUT_RD/WR/RDWR). WR: the daemon sends FIN after draining the tx FIFO. -> 0,
	                             -ENOTCONN, -EINVAL. On a listener, RD/RDWR stops listening (state OPEN again, queued
	                             connections reset), WR does nothing. */
	FSS_OP_CLOSE        = 7,  /* drops this client's reference (one per DUP). The last reference of the socket in the whole
	                             daemon closes it gracefully (queued tx bytes are sent, then FIN; SO_LINGER {1,0}: RST).
	                             After sending CLOSE the shim must not touch the slot again. -> 0 */
	FSS_OP_GETSOCKNAME  = 8,  /* -> cmpl.data = struct fss_sockaddr */
	FSS_OP_GETPEERNAME  = 9,  /* -> cmpl.data = struct fss_sockaddr, -ENOTCONN */
	FSS_OP_SETSOCKOPT   = 10, /* arg0 level, arg1 optname, arg2 optlen (<= FSS_OPT_MAX), data = value. -> 0, -ENOPROTOOPT, -EINVAL */
	FSS_OP_GETSOCKOPT   = 11, /* arg0 level, arg1 optname, arg2 optlen capacity. -> cmpl.val0 = optlen, cmpl.data = value.
	                             SO_ERROR returns and clears so_error. */
	FSS_OP_DUP          = 12, /* adds one reference of this client to sock (dup/dup2/dup3/F_DUPFD). -> 0 */
	FSS_OP_FORK_PREPARE = 13, /* parent, before fork(): the daemon takes one reference on every socket of this client
	                             for the child to claim. -> cmpl.data[0..8] = uint64 fork token. */
	FSS_OP_FORK_INHERIT = 14, /* child, first request after attaching with FSS_HELLO_FORK_CHILD: data[0..8] = token.
	                             The daemon moves the prepared references into this client at the SAME slot indices and
	                             generations (the child's fd table still names them). -> number of sockets inherited,
	                             -ENOENT (unknown/expired token). */
	FSS_OP_FORK_COMMIT  = 15, /* parent, after fork(): data[0..8] = token, arg0 = child pid (or -1 if fork failed, which
	                             releases the references). The daemon releases unclaimed references when that pid exits. -> 0 */
	FSS_OP_MAX          = 16
};

/* fss_req.flags */
#define FSS_REQ_NONBLOCK 0x1u /* informational: the socket is non-blocking in the shim */
#define FSS_REQ_CPU      0x2u /* arg0 holds the CPU the caller runs on (sched_getcpu()); see FSS_OP_ACCEPT */

#define FSS_OPT_MAX 32 /* bytes of option value carried in data[] */

/* The address format in data[] (mirrors struct sockaddr_in6's fields; for
 * AF_INET addr[0..3] holds the address). port and addr are in network byte
 * order, as in sockaddr_in. An address is in its socket's family (SOCKET's
 * domain); an AF_INET6 socket's IPv4 addresses are v4-mapped
 * (::ffff:a.b.c.d), as the kernel reports them. */
struct fss_sockaddr {
	uint16_t family;   /* AF_INET (2) or AF_INET6 (10): the socket's */
	uint16_t port;     /* network byte order */
	uint32_t flowinfo; /* zero for AF_INET */
	uint8_t  addr[16]; /* AF_INET: addr[0..3], network byte order; rest zero */
	uint32_t scope_id; /* AF_INET6 link-local: interface index; else zero */
};

/* Accept ring (clients that said FSS_HELLO_ACCEPT_RING). A listener's slot
 * has no stream, so its rx FIFO carries these records instead: the daemon
 * accepts a connection on the client's behalf, installs it in the client's
 * socket table (a slot of its own, CONNECTED), writes one record at rx_tail
 * and publishes the listener (an edge). The shim takes records from rx_head
 * (one at a time, 64 bytes each, never straddling the FIFO's end) as accept's
 * answer, without a round trip: the record is what FSS_OP_ACCEPT's completion
 * would have said. The daemon fills a ring only for a listener on which this
 * client is waiting for right now (accept_waiters > 0: a thread asleep in an
 * epoll set that watches it for EPOLLIN, or in a blocking accept), at most
 * FSS_ACCEPT_RING_MAX records deep; the rest stays in the shared queue
 * (accept_pending), as it does for a process busy elsewhere or one that
 * holds the listener without accepting (a master, a forked child). Records the shim has
 * not taken when it closes the listener (or exits) go back to the listener's
 * queue for another holder; FSS_OP_FORK_PREPARE does not hold them for the
 * child. So that a fork sees a record either untaken or as an fd, the shim
 * takes a record and makes its fd under one lock that its fork also holds. */
struct fss_accept_rec {
	uint32_t sock;             /* the connection's socket id in this client's table */
	int32_t  shard;            /* the shard it came from (FSS_OP_ACCEPT's cmpl.val0) */
	struct fss_sockaddr peer;  /* its peer, as FSS_OP_ACCEPT's cmpl.data */
	uint32_t reserved[7];      /* zero */
};
#define FSS_ACCEPT_REC_SIZE 64
#define FSS_ACCEPT_RING_MAX 8
/* Either side claims a record with a compare-and-swap of its sock word: the
 * shim from the id to 0 when it takes it (then it advances rx_head), the
 * daemon from the id to FSS_ACCEPT_STOLEN when it takes back a record left
 * untaken for FSS_ACCEPT_STEAL_MS, for another holder of the listener (a
 * process that waited, then stayed busy elsewhere). The shim skips a stolen
 * record: it advances rx_head past it and looks at the next. */
#define FSS_ACCEPT_STOLEN   0xffffffffu
#define FSS_ACCEPT_STEAL_MS 100

struct fss_req {
	uint64_t req_id;   /* shim-chosen, echoed in the completion; unique among outstanding requests */
	uint32_t op;       /* enum fss_op */
	uint32_t sock;     /* socket id (0 for SOCKET, NOP, FORK_*) */
	uint32_t flags;    /* FSS_REQ_* */
	int32_t  arg0;
	int32_t  arg1;
	int32_t  arg2;
	uint8_t  data[32]; /* struct fss_sockaddr, an option value, or a fork token */
};

struct fss_cmpl {
	uint64_t req_id;   /* from the request */
	uint32_t op;       /* from the request */
	uint32_t sock;     /* new socket id for SOCKET/ACCEPT, else the request's sock */
	int32_t  result;   /* >= 0 success, -errno failure */
	uint32_t flags;    /* LISTEN: FSS_CMPL_LISTEN_LOOPBACK; else zero */
	int32_t  val0;     /* GETSOCKOPT: optlen */
	int32_t  val1;     /* zero */
	uint8_t  data[32]; /* address, option value or token */
};

/* ------------------------------------------------------------------------
 * 4. Socket table: sock_count slots of struct fss_sock, two cache lines
 *    each: the first is written only by the daemon, the second only by the
 *    shim.
 *
 *    Readiness is exact when derived as fss_sock_poll() does:
 *      readable  = rx bytes available || FSS_EV_RDEOF || FSS_EV_ERR || FSS_EV_HUP
 *                  || (LISTENING && accept_pending > 0)
 *      writable  = CONNECTED && !WREOF && tx space > 0, or ERR/HUP (a write then fails)
 *    The daemon publishes FIFO indices and the events word (which carries
 *    the state too) with release stores, then bumps the slot's ev_seq, sets the slot's bit in the ready
 *    map, bumps seg_hdr.ev_seq, fences, and writes the wake fd if
 *    shim_waiters > 0. Edge-triggered epoll: report when ev_seq changed.
 * ------------------------------------------------------------------------ */

/* fss_sock.state */
#define FSS_ST_FREE       0 /* not allocated; only the daemon touches it */
#define FSS_ST_OPEN       1 /* socket()ed, maybe bound */
#define FSS_ST_LISTENING  2
#define FSS_ST_CONNECTING 3
#define FSS_ST_CONNECTED  4
#define FSS_ST_CLOSED     5 /* connection over (reset, failed connect, both sides shut) */

/* fss_sock.events (daemon) */
#define FSS_EV_CONNECTED 0x01u /* established: tx allowed */
#define FSS_EV_RDEOF     0x02u /* peer sent FIN (or SHUT_RD): nothing arrives after rx_tail */
#define FSS_EV_WREOF     0x04u /* our side shut down for writing: writes fail with EPIPE */
#define FSS_EV_HUP       0x08u /* both directions finished or connection reset */
#define FSS_EV_ERR       0x10u /* so_error != 0 */
#define FSS_EV_LISTENING 0x20u
/* The events word also carries the state, in these bits, so that one load
 * gives a state and events that belong together. The daemon changes both
 * with one store of events; a reader that took state and events from two
 * loads could pair a new state with old events (CONNECTED without
 * FSS_EV_CONNECTED: a connect that looked refused). Read the state as
 * fss_ev_state(events), never from fss_sock.state next to events. */
#define FSS_EV_STATE_SHIFT 24
#define FSS_EV_STATE_MASK  0x0f000000u

/* fss_sock.d_flags (daemon) */
#define FSS_DF_TX_WAIT 0x1u /* daemon waits for bytes in tx: the shim kicks after writing */
#define FSS_DF_RX_WAIT 0x2u /* daemon waits for space in rx: the shim kicks after reading */

/* fss_sock.s_flags: the shim sets them (atomic OR), the daemon clears them
 * (atomic AND) when it has acted on them. */
#define FSS_SF_TX_NOSPACE 0x1u /* someone may wait for room in the tx FIFO (or for it to drain): the
                                  daemon publishes the room it frees, then clears the flag */

struct fss_sock {
	/* --- line 0: written by the daemon --- */
	uint32_t gen;            /* generation of the current allocation (low 16 bits used in ids); changes only while FREE */
	uint32_t state;          /* FSS_ST_*: a copy of fss_ev_state(events), stored before it; for debuggers */
	uint32_t events;         /* FSS_EV_* flags | FSS_ST_* << FSS_EV_STATE_SHIFT, one store */
	uint32_t ev_seq;         /* +1 after every change the shim could observe (events, rx_tail, tx_head, accept_pending) */
	int32_t  so_error;       /* pending error as positive errno, 0 none; cleared by GETSOCKOPT(SO_ERROR) */
	uint32_t accept_pending; /* listening: connections waiting to be ACCEPTed */
	uint32_t rx_tail;        /* rx FIFO producer index (bytes written by the daemon) */
	uint32_t tx_head;        /* tx FIFO consumer index (bytes taken by the daemon) */
	uint32_t d_flags;        /* FSS_DF_* */
	uint32_t d_reserved[7];

	/* --- line 1: written by the shim --- */
	uint32_t rx_head;        /* rx FIFO consumer index (bytes read by the shim) */
	uint32_t tx_tail;        /* tx FIFO producer index (bytes written by the shim) */
	uint32_t s_flags;        /* FSS_SF_*: set by the shim, cleared by the daemon (atomics) */
	int32_t  accept_waiters; /* listening: threads of this process waiting for it (atomic add/sub), each
	                            weighted by the records it may be given: 1 for one in a blocking accept on a
	                            listener no epoll set watches, FSS_ACCEPT_RING_MAX for an event loop (asleep in
	                            an epoll set that watches it for EPOLLIN, or in accept on such a listener).
	                            The daemon fills this slot's accept ring only while it is > 0, and, when
	                            other processes hold the listener, no deeper than it */
	uint32_t s_reserved[12];
};

/* ------------------------------------------------------------------------
 * 5. Data: no op per read or write.
 *
 *   rx (daemon -> shim): the daemon copies stream bytes into rx, advances
 *   rx_tail (release), then publishes readiness (section 4). The shim reads
 *   from rx_head up to load_acquire(rx_tail), advances rx_head (release),
 *   fences, and if d_flags has FSS_DF_RX_WAIT it kicks the slot.
 *
 *   tx (shim -> daemon): the shim copies into tx from tx_tail while
 *   tx_tail - load_acquire(tx_head) < tx_fifo_size, advances tx_tail
 *   (release), fences, and if d_flags has FSS_DF_TX_WAIT it kicks the slot.
 *
 *   Room in tx (clients that said FSS_HELLO_TX_NOSPACE): the daemon publishes
 *   the room its reads free (section 4: an edge, a wake-up) only when
 *   s_flags has FSS_SF_TX_NOSPACE and the FIFO is writable again (a third of
 *   it free, as the shim's poll rule; or empty), and clears the flag (AND)
 *   before it publishes. It looks after advancing tx_head and on every kick
 *   of the slot. The shim raises the flag (OR), fences and looks at tx_head
 *   again whenever it could wait for room: a readiness evaluation without
 *   OUT, a send that took less than asked (or nothing), a wait for the FIFO
 *   to drain (SO_LINGER close). If the FIFO turned writable between its
 *   look and the flag, the thread either goes on (it saw the room) or, when
 *   it already answered short, kicks the slot so the daemon publishes. A
 *   reader that never needed room wakes nobody, as the kernel's writers
 *   wake nobody without SOCK_NOSPACE.
 *
 *   Kick a slot: atomic OR of bit (slot % 64) into kick map word slot / 64,
 *   fence, and if daemon_sleeping, ring the doorbell (below). The daemon
 *   exchanges kick words with 0 and serves each set bit. Several shim threads
 *   may kick at once (OR is atomic); data on ONE socket must be written by
 *   one thread at a time (the shim holds a per-socket lock while copying).
 *
 *   The ready map is the same in the other direction: the daemon ORs a slot's
 *   bit whenever its readiness changes; the shim exchanges words with 0 to
 *   learn which slots to re-evaluate instead of scanning the table.
 * ------------------------------------------------------------------------ */

/* ---------- helpers (both sides follow exactly these orders) ---------- */
static inline uint32_t fss_ev_state(uint32_t events)
{
	return (events & FSS_EV_STATE_MASK) >> FSS_EV_STATE_SHIFT;
}
static inline uint32_t fss_load_acquire(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void fss_store_release(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline void fss_fence(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline struct fss_ring *fss_ring_at(void *seg, uint64_t off)
{
	return (struct fss_ring *)((char *)seg + off);
}
static inline void *fss_ring_entry(struct fss_ring *r, uint32_t entries, uint32_t idx)
{
	return (char *)(r + 1) + (size_t)(idx & (entries - 1)) * 64;
}
static inline struct fss_sock *fss_sock_at(void *seg, const struct fss_seg_hdr *h, uint32_t slot)
{
	return (struct fss_sock *)((char *)seg + h->sock_off + (size_t)slot * sizeof(struct fss_sock));
}
static inline uint8_t *fss_rx_fifo(void *seg, const struct fss_seg_hdr *h, uint32_t slot)
{
	return (uint8_t *)seg + h->fifo_off + (size_t)slot * (h->rx_fifo_size + h->tx_fifo_size);
}
static inline uint8_t *fss_tx_fifo(void *seg, const struct fss_seg_hdr *h, uint32_t slot)
{
	return fss_rx_fifo(seg, h, slot) + h->rx_fifo_size;
}

/* fss_sock_poll readiness bits (same values as POLLIN/POLLOUT/POLLERR/POLLHUP/POLLRDHUP). */
#define FSS_POLLIN    0x001u
#define FSS_POLLOUT   0x004u
#define FSS_POLLERR   0x008u
#define FSS_POLLHUP   0x010u
#define FSS_POLLRDHUP 0x2000u

/* Exact readiness of one slot, from the shim's side: Linux's tcp_poll()
 * expressed on the slot.
 *   listening       IN while accept_pending > 0 or the accept ring holds a
 *                   record (and ERR)
 *   HUP             both directions shut (HUP, or RDEOF and WREOF), or the
 *                   socket never connected (OPEN) or is over (CLOSED)
 *   IN|RDHUP        RDEOF
 *   not CONNECTING: IN if rx bytes wait; OUT if shut for writing (a write
 *                   fails at once) or a third of the tx FIFO is free
 *                   (sk_stream_is_writeable)
 *   ERR             FSS_EV_ERR (so_error pending) */
static inline uint32_t fss_sock_poll(const struct fss_sock *s, uint32_t tx_fifo_size)
{
	uint32_t ev = __atomic_load_n(&s->events, __ATOMIC_ACQUIRE);
	uint32_t st = fss_ev_state(ev);	/* one load: state and events agree */
	uint32_t r = 0;

	if (st == FSS_ST_LISTENING || (ev & FSS_EV_LISTENING)) {
		if (__atomic_load_n(&s->accept_pending, __ATOMIC_ACQUIRE) > 0 ||
		    __atomic_load_n(&s->rx_tail, __ATOMIC_ACQUIRE) != s->rx_head)	/* accept ring */
			r |= FSS_POLLIN;
	} else {
		if ((ev & FSS_EV_HUP) || (ev & (FSS_EV_RDEOF | FSS_EV_WREOF)) == (FSS_EV_RDEOF | FSS_EV_WREOF) ||
		    st == FSS_ST_OPEN || st == FSS_ST_CLOSED)
			r |= FSS_POLLHUP;
		if (ev & FSS_EV_RDEOF)
			r |= FSS_POLLIN | FSS_POLLRDHUP;
		if (st != FSS_ST_CONNECTING) {
			uint32_t rx_avail = __atomic_load_n(&s->rx_tail, __ATOMIC_ACQUIRE) - s->rx_head;
			uint32_t tx_free = tx_fifo_size - (s->tx_tail - __atomic_load_n(&s->tx_head, __ATOMIC_ACQUIRE));

			if (rx_avail > 0)
				r |= FSS_POLLIN;
			if ((ev & (FSS_EV_WREOF | FSS_EV_HUP)) || (uint64_t)tx_free * 3 >= tx_fifo_size)
				r |= FSS_POLLOUT;
		}
	}
	if (ev & FSS_EV_ERR)
		r |= FSS_POLLERR;
	return r;
}

/* ---------- layout assertions (the Go side asserts the same numbers) ---------- */
#ifdef __cplusplus
#define FSS_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define FSS_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif
FSS_ASSERT(sizeof(struct fss_hello) == 32, "fss_hello size");
FSS_ASSERT(offsetof(struct fss_hello, flags) + 4 == FSS_HELLO_MIN_SIZE, "fss_hello min size");
FSS_ASSERT(sizeof(struct fss_hello_reply) == 32, "fss_hello_reply size");
FSS_ASSERT(offsetof(struct fss_hello_reply, seg_size) == 16, "fss_hello_reply.seg_size");
FSS_ASSERT(offsetof(struct fss_hello_reply, client_id) == 24, "fss_hello_reply.client_id");
FSS_ASSERT(sizeof(struct fss_seg_hdr) == 4096, "fss_seg_hdr fills one page");
FSS_ASSERT(offsetof(struct fss_seg_hdr, reserved0) + sizeof(((struct fss_seg_hdr *)0)->reserved0) == 128, "fss_seg_hdr layout block");
FSS_ASSERT(offsetof(struct fss_seg_hdr, daemon_sleeping) == 2 * FSS_CACHELINE, "fss_seg_hdr daemon line");
FSS_ASSERT(offsetof(struct fss_seg_hdr, shim_waiters) == 3 * FSS_CACHELINE, "fss_seg_hdr shim line");
FSS_ASSERT(sizeof(struct fss_ring) == 2 * FSS_CACHELINE, "fss_ring size");
FSS_ASSERT(offsetof(struct fss_ring, cons) == FSS_CACHELINE, "fss_ring.cons on its own line");
FSS_ASSERT(sizeof(struct fss_req) == 64, "fss_req size");
FSS_ASSERT(sizeof(struct fss_cmpl) == 64, "fss_cmpl size");
FSS_ASSERT(offsetof(struct fss_req, data) == 32, "fss_req.data");
FSS_ASSERT(offsetof(struct fss_cmpl, data) == 32, "fss_cmpl.data");
FSS_ASSERT(sizeof(struct fss_sockaddr) == 28, "fss_sockaddr size");
FSS_ASSERT(sizeof(struct fss_sockaddr) <= sizeof(((struct fss_req *)0)->data), "fss_sockaddr fits data");
FSS_ASSERT(sizeof(struct fss_sock) == 2 * FSS_CACHELINE, "fss_sock size");
FSS_ASSERT(offsetof(struct fss_sock, rx_head) == FSS_CACHELINE, "fss_sock shim line");

#ifdef __cplusplus
}
#endif
#endif /* FSSTACK_ABI_H */
