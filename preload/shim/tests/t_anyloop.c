/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_anyloop - a listener on 0.0.0.0 under the shim, on a daemon that does
 * not reach loopback (FSS_CMPL_LISTEN_LOOPBACK), is reachable both through
 * the stack's address (an fsstack connection) and, from kernel sockets of
 * the same namespace, through 127.0.0.1 (its placeholder listens there).
 *
 *   t_anyloop ADDR   ADDR: the stack's address (tests/shimd with
 *                    SHIMD_REACH=ADDR/32 SHIMD_ANY=ADDR, ADDR in 127/8)
 *
 * The kernel clients are made with syscall(SYS_socket), which the shim
 * never sees; the fsstack clients are the shim's sockets connecting to
 * ADDR.  An accepted fd is told apart with raw syscalls: a kernel
 * connection is connected on its fd, an fsstack socket's placeholder never
 * is.  Cases: the placeholder listens on 127.0.0.1 at the listener's port
 * and F_GETFL still says blocking; blocking accept of either (also while
 * already asleep in accept); non-blocking EAGAIN; epoll LT, ET and
 * ONESHOT (MOD re-arms), poll and select report either queue.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tcommon.h"

static struct in_addr stack_addr;
static uint16_t port;

static struct sockaddr_in addr_of(struct in_addr a)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = a };

	return s;
}

/* A kernel client to 127.0.0.1:port (never the shim's). */
static int kclient(void)
{
	struct sockaddr_in a = addr_of((struct in_addr){ htonl(INADDR_LOOPBACK) });
	int c = (int)T_OK(syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));

	T_OK(syscall(SYS_connect, c, &a, sizeof(a)));
	return c;
}

/* An fsstack client to the stack's address. */
static int fclient(void)
{
	struct sockaddr_in a = addr_of(stack_addr);
	int c = T_OK(socket(AF_INET, SOCK_STREAM, 0));

	T_OK(connect(c, (struct sockaddr *)&a, sizeof(a)));
	return c;
}

static bool raw_connected(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	return syscall(SYS_getpeername, fd, &a, &len) == 0;
}

/* s was accepted from client c (kernel: a kernel fd, else fsstack): data
 * flows both ways; both are closed. */
static void check_pair(int s, int c, bool kernel, const char *what)
{
	char buf[8];

	if (s < 0) {
		fprintf(stderr, "%s: accept failed: %s\n", what, strerror(errno));
		t_failures++;
		close(c);
		return;
	}
	if (raw_connected(s) != kernel) {
		fprintf(stderr, "%s: accepted a %s socket, wanted a %s one\n", what,
			kernel ? "fsstack" : "kernel", kernel ? "kernel" : "fsstack");
		t_failures++;
	}
	T_CHECK(write(c, "ping", 4) == 4);
	T_CHECK(read(s, buf, sizeof(buf)) == 4 && memcmp(buf, "ping", 4) == 0);
	T_CHECK(write(s, "pong", 4) == 4);
	T_CHECK(read(c, buf, sizeof(buf)) == 4 && memcmp(buf, "pong", 4) == 0);
	close(s);
	close(c);
}

struct acceptor {
	int l, fd;
	pthread_t th;
};

static void *acceptor_run(void *arg)
{
	struct acceptor *a = arg;

	a->fd = accept(a->l, NULL, NULL);
	return NULL;
}

static void t_blocking(int l)
{
	struct acceptor a = { .l = l };
	int c;

	c = kclient();
	check_pair(accept(l, NULL, NULL), c, true, "blocking accept, kernel client");
	c = fclient();
	check_pair(accept(l, NULL, NULL), c, false, "blocking accept, fsstack client");
	/* asleep in accept before the connection comes */
	T_OK(pthread_create(&a.th, NULL, acceptor_run, &a));
	usleep(200000);
	c = kclient();
	pthread_join(a.th, NULL);
	check_pair(a.fd, c, true, "accept asleep, kernel client");
	T_OK(pthread_create(&a.th, NULL, acceptor_run, &a));
	usleep(200000);
	c = fclient();
	pthread_join(a.th, NULL);
	check_pair(a.fd, c, false, "accept asleep, fsstack client");
}

static int ep_wait1(int ep, int ms)
{
	struct epoll_event ev[4];
	int n = epoll_wait(ep, ev, 4, ms), i;

	for (i = 0; i < n; i++)
		if (ev[i].data.u64 != 42 || !(ev[i].events & EPOLLIN)) {
			fprintf(stderr, "epoll: event %#x data %llu\n", ev[i].events,
				(unsigned long long)ev[i].data.u64);
			t_failures++;
		}
	return n;
}

static void t_nonblocking(int l)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 42 };
	struct pollfd p = { .fd = l, .events = POLLIN };
	struct timeval tv;
	fd_set rs;
	int ep, c, s;

	T_OK(fcntl(l, F_SETFL, O_NONBLOCK));
	T_CHECK(fcntl(l, F_GETFL) & O_NONBLOCK);
	errno = 0;
	T_CHECK(accept(l, NULL, NULL) < 0 && errno == EAGAIN);

	ep = T_OK(epoll_create1(EPOLL_CLOEXEC));
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev));
	T_CHECK(ep_wait1(ep, 0) == 0);
	/* level-triggered: reported until accepted */
	c = kclient();
	T_CHECK(ep_wait1(ep, 2000) >= 1);
	T_CHECK(ep_wait1(ep, 0) >= 1);
	check_pair(accept(l, NULL, NULL), c, true, "epoll LT, kernel client");
	T_CHECK(ep_wait1(ep, 0) == 0);
	c = fclient();
	T_CHECK(ep_wait1(ep, 2000) >= 1);
	check_pair(accept(l, NULL, NULL), c, false, "epoll LT, fsstack client");
	errno = 0;
	T_CHECK(accept(l, NULL, NULL) < 0 && errno == EAGAIN);

	/* edge-triggered: once per new connection */
	ev.events = EPOLLIN | EPOLLET;
	T_OK(epoll_ctl(ep, EPOLL_CTL_MOD, l, &ev));
	T_CHECK(ep_wait1(ep, 0) == 0);
	c = kclient();
	T_CHECK(ep_wait1(ep, 2000) >= 1);
	T_CHECK(ep_wait1(ep, 100) == 0);
	check_pair(accept(l, NULL, NULL), c, true, "epoll ET, kernel client");
	c = fclient();
	T_CHECK(ep_wait1(ep, 2000) >= 1);
	T_CHECK(ep_wait1(ep, 100) == 0);
	check_pair(accept(l, NULL, NULL), c, false, "epoll ET, fsstack client");

	/* one-shot: one report until MOD re-arms */
	ev.events = EPOLLIN | EPOLLONESHOT;
	T_OK(epoll_ctl(ep, EPOLL_CTL_MOD, l, &ev));
	c = kclient();
	T_CHECK(ep_wait1(ep, 2000) >= 1);
	T_CHECK(ep_wait1(ep, 100) == 0);
	check_pair(accept(l, NULL, NULL), c, true, "epoll ONESHOT, kernel client");
	c = kclient();
	T_CHECK(ep_wait1(ep, 100) == 0);
	T_OK(epoll_ctl(ep, EPOLL_CTL_MOD, l, &ev));
	T_CHECK(ep_wait1(ep, 2000) >= 1);
	check_pair(accept(l, NULL, NULL), c, true, "epoll ONESHOT re-armed, kernel client");
	T_OK(epoll_ctl(ep, EPOLL_CTL_DEL, l, NULL));
	c = kclient();
	T_CHECK(ep_wait1(ep, 100) == 0);
	check_pair(accept(l, NULL, NULL), c, true, "after EPOLL_CTL_DEL, kernel client");
	close(ep);

	/* poll and select */
	T_CHECK(poll(&p, 1, 0) == 0);
	c = kclient();
	T_CHECK(poll(&p, 1, 2000) == 1 && (p.revents & POLLIN));
	check_pair(accept(l, NULL, NULL), c, true, "poll, kernel client");
	T_CHECK(poll(&p, 1, 0) == 0);
	c = fclient();
	T_CHECK(poll(&p, 1, 2000) == 1 && (p.revents & POLLIN));
	check_pair(accept(l, NULL, NULL), c, false, "poll, fsstack client");
	c = kclient();
	FD_ZERO(&rs);
	FD_SET(l, &rs);
	tv.tv_sec = 2;
	tv.tv_usec = 0;
	T_CHECK(select(l + 1, &rs, NULL, NULL, &tv) == 1 && FD_ISSET(l, &rs));
	s = accept4(l, NULL, NULL, SOCK_NONBLOCK);
	T_CHECK(s < 0 || (fcntl(s, F_GETFL) & O_NONBLOCK));
	if (s >= 0)
		T_OK(fcntl(s, F_SETFL, 0));
	check_pair(s, c, true, "select + accept4(SOCK_NONBLOCK), kernel client");
}

int main(int argc, char **argv)
{
	struct sockaddr_in any = { .sin_family = AF_INET }, a;
	socklen_t len = sizeof(a);
	int l, one = 1, v = 0;

	if (argc != 2 || inet_pton(AF_INET, argv[1], &stack_addr) != 1) {
		fprintf(stderr, "usage: t_anyloop STACK-ADDR\n");
		return 2;
	}
	l = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_OK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
	T_OK(bind(l, (struct sockaddr *)&any, sizeof(any)));
	T_OK(listen(l, 16));
	T_OK(getsockname(l, (struct sockaddr *)&a, &len));
	port = ntohs(a.sin_port);
	/* the placeholder listens on the kernel at 127.0.0.1:port */
	len = sizeof(a);
	T_CHECK(syscall(SYS_getsockname, l, &a, &len) == 0 &&
		a.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && ntohs(a.sin_port) == port);
	len = sizeof(v);
	T_CHECK(syscall(SYS_getsockopt, l, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v == 1);
	T_CHECK(!(fcntl(l, F_GETFL) & O_NONBLOCK));
	t_blocking(l);
	t_nonblocking(l);
	close(l);
	return t_done("t_anyloop");
}
