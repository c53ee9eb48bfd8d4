/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conf.h - helpers shared by the conformance programs.
 *
 * Every program prints a transcript: one line per call, "<call text> = <result>",
 * where the result is normalised so that it is the same on every run of the
 * same kernel (or of the shim): file descriptors print as "fd", ephemeral
 * ports as "port", known listening ports by name ("L1"), addresses by role
 * ("SRV", "PEER"), errors as "-1 ENAME".  The runner (conformance_test.go)
 * compares transcripts; it never parses them.
 *
 * Addresses: servers bind FSCONF_ADDR (default 127.0.0.1); client sockets,
 * when FSCONF_PEER is set, bind that address (port 0) before connecting to
 * the server, so the suite can run across two test namespaces.
 *
 * Every blocking call a program makes is bounded: helpers wait with poll
 * timeouts, and conf_init arms alarm(CONF_WATCHDOG_S) whose default action
 * kills a program that hangs anyway.  SIGPIPE is counted, never fatal.
 */
#ifndef FSCONF_CONF_H
#define FSCONF_CONF_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define CONF_WATCHDOG_S 10

/* Server and client addresses, from FSCONF_ADDR / FSCONF_PEER. */
extern struct in_addr conf_srv_ip;
extern struct in_addr conf_peer_ip;
/* The server's IPv6 address, from FSCONF_ADDR6 (default ::1). fmt_sa
 * prints it as SRV6, :: as ANY6, ::1 (when not SRV6) as LO6, and
 * v4-mapped addresses as the IPv4 role with "(mapped)". */
extern struct in6_addr conf_srv6_ip;
/* AF_INET, or AF_INET6 when FSCONF_FAMILY=6 (a program's _ipv6 variant):
 * the family tcp_listener, tcp_client and tcp_client_nb use. */
extern int conf_family;

/* conf_init prints the transcript header and arms the watchdog; conf_end
 * prints the trailer the runner requires and returns the exit status. */
void conf_init(const char *name, const char *what);
int conf_end(void);

/* section prints a "## title" line. */
void section(const char *title);
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* errname names an errno value ("EAGAIN"); never NULL. */
const char *errname(int e);

/* rep prints "label = ret", or "label = -1 ENAME" when ret is -1; rep_fd
 * prints "fd" for a non-negative result.  Both preserve errno and return ret. */
long rep(const char *label, long ret);
int rep_fd(const char *label, int ret);
#define R(expr)   rep(#expr, (long)(expr))
#define RFD(expr) rep_fd(#expr, (int)(expr))

/* Socket set-up.  Every helper dies (FATAL line, exit 1) on failure: they
 * are scaffolding, not the calls under test. */
void sa_srv(struct sockaddr_in *sa, int port);
void sa_srv6(struct sockaddr_in6 *sa, int port);    /* SRV6:port */
int tcp_listener(int flags, int backlog, int *port); /* bound to SRV:0 (SRV6 in conf_family 6), listening */
int tcp_client(int port);                  /* blocking connect to SRV:port (SRV6) */
int tcp_client_nb(int port);               /* non-blocking, connect issued */
void client_bind(int fd);                  /* binds PEER:0 if FSCONF_PEER set */
/* tcp_pair: a listener plus one connection; *c is the client end, *s the
 * accepted end.  Pass lfd NULL to close the listener. */
void tcp_pair(int *lfd, int *port, int *c, int *s);
int accept_wait(int lfd);                  /* accept, waiting up to 2 s */

/* note_port names a port in addresses printed by fmt_sa ("L1"). */
void note_port(int port, const char *name);
const char *fmt_sa(const struct sockaddr *sa, socklen_t len);

/* wait_ev polls one fd for up to ms and returns revents (0 on timeout). */
int wait_ev(int fd, short events, int ms);
/* fmt_poll / fmt_epoll render event masks as "IN|OUT|..." or "0". */
const char *fmt_poll(int revents);
const char *fmt_epoll(uint32_t events);

/* epoll helpers.  ep_add registers fd with data.ptr = name (a string
 * literal), so that ep_show can print events as "name:IN|OUT" sorted by
 * name — the order of a ready list is not part of the contract.
 * ep_show waits once; ep_settle repeats a level-triggered wait until at
 * least want events are reported or ms pass, and prints the last result. */
int ep_add(int ep, int fd, uint32_t events, const char *name);
int ep_mod(int ep, int fd, uint32_t events, const char *name);
int ep_show(const char *label, int ep, int timeout);
int ep_settle(const char *label, int ep, int want, int ms);

/* write_all / read_n: scaffolding I/O, die on error; read_n waits with poll. */
void write_all(int fd, const void *buf, size_t n);
size_t read_n(int fd, void *buf, size_t n, int ms);

/* fill_sndbuf writes to fd without blocking until its send buffer stays
 * full: EAGAIN for a 64 KiB write and for a 1-byte one, and still so after
 * 400 ms and four calls answered by the stack (see conf.c), in which ACKs,
 * window updates and the shim's daemon could free space.  The peer must
 * not read.  Returns the bytes written (-1 if a write failed otherwise);
 * fd's flags are restored. */
long fill_sndbuf(int fd);

/* fd flag queries, printed as "nonblock=1 cloexec=0". */
void show_flags(const char *label, int fd);

/* Monotonic and CPU clocks in milliseconds. */
double now_ms(void);
double cpu_ms(void);
/* bucket describes how long a wait took against its timeout (or the time
 * its event was due): "immediate" (timeout 0, under 1 s), "about-timeout"
 * (within [0.8 t, t + 5 s]), "early" or "late"; spin describes CPU use
 * during it ("idle" or "busy").  See conf.c for why late is so lenient. */
const char *bucket(double elapsed_ms, int timeout_ms);
const char *spin(double cpu_used_ms, double elapsed_ms);

/* Signal helpers: a counting handler, installed with or without SA_RESTART,
 * and a one-shot timer that raises sig after ms. */
extern volatile sig_atomic_t conf_sigcount[65];
void on_signal(int sig, int restart);
void signal_after(int sig, int ms);

/* An address that faults: non-NULL, never mapped. */
extern void *volatile conf_badptr;

#endif
