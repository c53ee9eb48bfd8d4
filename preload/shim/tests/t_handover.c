/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_handover - sockets whose traffic is not the daemon's become kernel
 * sockets (sock.c, "handover to the kernel").
 *
 *   t_handover kernel   the daemon reaches nothing on 127.0.0.0/8 (tests/shimd
 *                       with SHIMD_REACH, or fsstack up): every socket here
 *                       must be handed over
 *   t_handover daemon   the daemon serves loopback (tests/shimd): the same
 *                       calls must work on fsstack sockets
 *
 * The peers are kernel sockets made with syscall(SYS_socket), which the
 * shim never sees.  Whether a socket was handed over is read with raw
 * syscalls on its fd: a placeholder is never bound or connected, a
 * handed-over socket is.
 *
 * Cases: blocking connect to a kernel server on 127.0.0.1 and echo; a
 * non-blocking connect (EINPROGRESS) then EPOLLOUT, EPOLLIN; an fd already
 * in an epoll set (EPOLLET, and EPOLLONESHOT) before its connect keeps its
 * events and data, and MOD/DEL on it work; a dup made before the connect
 * names the same connection; options set before (TCP_NODELAY,
 * SO_KEEPALIVE) are on the kernel socket; a refused connect; bind to
 * 127.0.0.1 + listen, accepted from a kernel client.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tcommon.h"

static bool kernel_mode;

static int raw_socket(void)
{
	return (int)T_OK(syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
}

static struct sockaddr_in lo(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

/* Was fd handed over?  Its kernel socket is connected (or bound). */
static bool raw_connected(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	return syscall(SYS_getpeername, fd, &a, &len) == 0;
}

static bool raw_bound(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	return syscall(SYS_getsockname, fd, &a, &len) == 0 && a.sin_port != 0;
}

static void check_mode(bool handed, const char *what)
{
	if (handed != kernel_mode) {
		fprintf(stderr, "%s: %s\n", what,
			kernel_mode ? "not handed over to the kernel" : "handed over, but the daemon serves it");
		t_failures++;
	}
}

/* ---- the kernel echo server (raw syscalls only) ------------------------ */

static int srv_fd;
static uint16_t srv_port;

static void *echo_conn(void *arg)
{
	int c = (int)(long)arg;
	char buf[4096];
	ssize_t n;

	while ((n = syscall(SYS_read, c, buf, sizeof(buf))) > 0)
		if (syscall(SYS_write, c, buf, n) != n)
			break;
	syscall(SYS_close, c);
	return NULL;
}

static void *echo_server(void *arg)
{
	(void)arg;
	for (;;) {
		int c = (int)syscall(SYS_accept4, srv_fd, NULL, NULL, SOCK_CLOEXEC);
		pthread_t t;

		if (c < 0)
			return NULL;
		pthread_create(&t, NULL, echo_conn, (void *)(long)c);
		pthread_detach(t);
	}
}

static void start_server(void)
{
	struct sockaddr_in a = lo(0);
	socklen_t len = sizeof(a);
	pthread_t t;

	srv_fd = raw_socket();
	T_OK(syscall(SYS_bind, srv_fd, &a, sizeof(a)));
	T_OK(syscall(SYS_listen, srv_fd, 64));
	T_OK(syscall(SYS_getsockname, srv_fd, &a, &len));
	srv_port = ntohs(a.sin_port);
	pthread_create(&t, NULL, echo_server, NULL);
	pthread_detach(t);
}

/* One round trip through the echo server on fd (blocking or not). */
static void echo(int fd, const char *msg)
{
	char buf[256];
	size_t n = strlen(msg), got = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	T_CHECK(write(fd, msg, n) == (ssize_t)n);
	while (got < n) {
		ssize_t r;

		T_CHECK(poll(&p, 1, 5000) == 1);
		r = read(fd, buf + got, sizeof(buf) - got);
		if (r <= 0) {
			T_CHECK(r > 0);
			return;
		}
		got += (size_t)r;
	}
	T_CHECK(memcmp(buf, msg, n) == 0);
}

/* ---- cases ------------------------------------------------------------- */

static void t_blocking(void)
{
	struct sockaddr_in a = lo(srv_port);
	int fd = T_OK(socket(AF_INET, SOCK_STREAM, 0)), one = 1, v = 0, d;
	socklen_t len = sizeof(v);

	T_OK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
	T_OK(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)));
	d = T_OK(dup(fd));
	T_OK(connect(fd, (struct sockaddr *)&a, sizeof(a)));
	check_mode(raw_connected(fd), "blocking connect");
	check_mode(raw_connected(d), "blocking connect, the dup");
	if (kernel_mode) {
		T_CHECK(syscall(SYS_getsockopt, fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v != 0);
		T_CHECK(syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len) == 0 && v != 0);
	}
	T_CHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v != 0);
	echo(fd, "hello over loopback");
	echo(d, "and through the dup");
	close(fd);
	echo(d, "after closing the first fd");
	close(d);
}

static void t_nonblocking(void)
{
	struct sockaddr_in a = lo(srv_port);
	int fd = T_OK(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
	int ep = T_OK(epoll_create1(0)), err = -1, r;
	socklen_t len = sizeof(err);
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLET, .data.u64 = 0x1234 };

	r = connect(fd, (struct sockaddr *)&a, sizeof(a));
	T_CHECK(r == 0 || errno == EINPROGRESS);
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	T_CHECK(epoll_wait(ep, &ev, 1, 5000) == 1 && (ev.events & EPOLLOUT) && ev.data.u64 == 0x1234);
	T_CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0);
	check_mode(raw_connected(fd), "non-blocking connect, once connected");
	T_CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
	T_CHECK(read(fd, &err, 1) < 0 && errno == EAGAIN);
	echo(fd, "non-blocking");
	close(fd);
	close(ep);
}

/* Waits up to 5 s for an event with mask on ep; every event must carry data. */
static bool wait_for(int ep, uint32_t mask, uint64_t data)
{
	struct epoll_event ev;
	int i;

	for (i = 0; i < 100; i++) {
		memset(&ev, 0, sizeof(ev));
		if (epoll_wait(ep, &ev, 1, 50) != 1)
			continue;
		if (ev.data.u64 != data) {
			fprintf(stderr, "epoll data %#llx, want %#llx\n",
				(unsigned long long)ev.data.u64, (unsigned long long)data);
			return false;
		}
		if (ev.events & mask)
			return true;
	}
	return false;
}

/* The fd is in epoll sets before connect: the registrations follow it. */
static void t_registered(void)
{
	struct sockaddr_in a = lo(srv_port);
	int fd = T_OK(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
	int ep = T_OK(epoll_create1(0)), ep1 = T_OK(epoll_create1(0)), r;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = 0xfeedfacecafe };
	struct epoll_event os = { .events = EPOLLOUT | EPOLLONESHOT, .data.u64 = 0x0e };
	char buf[8];

	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	T_OK(epoll_ctl(ep1, EPOLL_CTL_ADD, fd, &os));
	r = connect(fd, (struct sockaddr *)&a, sizeof(a));
	T_CHECK(r == 0 || errno == EINPROGRESS);
	/* EPOLLET: OUT once connected, IN once the echo is back (other OUT
	 * edges may come between: tx space freed is an edge on fsstack) */
	T_CHECK(wait_for(ep, EPOLLOUT, 0xfeedfacecafe));
	check_mode(raw_connected(fd), "connect of an fd in an epoll set");
	T_CHECK(write(fd, "ping", 4) == 4);
	T_CHECK(wait_for(ep, EPOLLIN, 0xfeedfacecafe));
	T_CHECK(read(fd, buf, sizeof(buf)) == 4);
	/* EPOLLONESHOT: once, then disabled until MOD */
	memset(&os, 0, sizeof(os));
	T_CHECK(epoll_wait(ep1, &os, 1, 5000) == 1 && (os.events & EPOLLOUT) && os.data.u64 == 0x0e);
	T_CHECK(epoll_wait(ep1, &os, 1, 50) == 0);
	os.events = EPOLLOUT | EPOLLONESHOT;
	os.data.u64 = 0x0f;
	T_CHECK(epoll_ctl(ep1, EPOLL_CTL_MOD, fd, &os) == 0);
	memset(&os, 0, sizeof(os));
	T_CHECK(epoll_wait(ep1, &os, 1, 5000) == 1 && os.data.u64 == 0x0f);
	T_CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
	T_CHECK(epoll_ctl(ep1, EPOLL_CTL_DEL, fd, NULL) == 0);
	close(fd);
	close(ep);
	close(ep1);
}

static void t_refused(void)
{
	struct sockaddr_in a = lo(0);
	socklen_t len = sizeof(a);
	int free_port = raw_socket(), fd;

	/* a port nobody listens on: bound by a raw socket that never listens */
	T_OK(syscall(SYS_bind, free_port, &a, sizeof(a)));
	T_OK(syscall(SYS_getsockname, free_port, &a, &len));
	fd = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno == ECONNREFUSED);
	close(fd);
	syscall(SYS_close, free_port);
}

/* bind to 127.0.0.1 + listen; a kernel client connects. */
static void t_listen(void)
{
	struct sockaddr_in a = lo(0), b;
	socklen_t len = sizeof(a);
	int l = T_OK(socket(AF_INET, SOCK_STREAM, 0)), c, s, one = 1;
	char buf[16];

	T_OK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
	T_OK(bind(l, (struct sockaddr *)&a, sizeof(a)));
	check_mode(raw_bound(l), "bind to 127.0.0.1");
	T_OK(listen(l, 16));
	T_OK(getsockname(l, (struct sockaddr *)&a, &len));
	T_CHECK(a.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && a.sin_port != 0);
	c = raw_socket();
	T_OK(syscall(SYS_connect, c, &a, sizeof(a)));
	len = sizeof(b);
	s = T_OK(accept(l, (struct sockaddr *)&b, &len));
	T_CHECK(b.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
	check_mode(raw_connected(s), "accepted from a 127.0.0.1 listener");
	T_CHECK(syscall(SYS_write, c, "kernel", 6) == 6);
	T_CHECK(read(s, buf, sizeof(buf)) == 6 && memcmp(buf, "kernel", 6) == 0);
	T_CHECK(write(s, "back", 4) == 4);
	T_CHECK(syscall(SYS_read, c, buf, sizeof(buf)) == 4);
	close(s);
	syscall(SYS_close, c);
	close(l);
}

int main(int argc, char **argv)
{
	if (argc != 2 || (strcmp(argv[1], "kernel") != 0 && strcmp(argv[1], "daemon") != 0)) {
		fprintf(stderr, "usage: t_handover kernel|daemon\n");
		return 2;
	}
	kernel_mode = strcmp(argv[1], "kernel") == 0;
	start_server();
	t_blocking();
	t_nonblocking();
	t_registered();
	t_refused();
	t_listen();
	return t_done(kernel_mode ? "t_handover kernel" : "t_handover daemon");
}
