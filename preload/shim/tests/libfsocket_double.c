/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libfsocket_double.c - a test double of Fastsocket's user library
 * (libfsocket.so), written for this project: a preloaded library that turns
 * a program's socket calls into /dev/fastsocket ioctls
 * (kmod-compat/fastsocket_abi.h), as the original does for unmodified
 * servers.  The tests stack it with libfsstack.so, in either LD_PRELOAD
 * order, to check that every call is served once: the shim's ioctl handlers
 * must not call the public symbols this library wraps.
 *
 *   constructor   open("/dev/fastsocket"); if that fails, a line on stderr
 *                 and exit(-1) (status 255), as the original does
 *   socket        AF_INET stream: FSOCKET_IOC_SOCKET; anything else: next
 *   listen        FSOCKET_IOC_LISTEN (the fd is remembered as a listener)
 *   accept(4)     FSOCKET_IOC_ACCEPT
 *   close         FSOCKET_IOC_CLOSE for every fd but the channel
 *   shutdown      FSOCKET_IOC_SHUTDOWN_LISTEN
 *   epoll_ctl     EPOLL_CTL_ADD of a listener: FSOCKET_IOC_SPAWN_LISTEN
 *                 (cpu -1) first; then always the next definition
 *
 * "next" is dlsym(RTLD_NEXT): libfsstack.so when the double comes first in
 * LD_PRELOAD, libc when it comes after the shim.  Before the constructor
 * has opened the channel every call goes to the next definition.  Where the
 * original sends a call through the ioctl only for some fds, the double
 * sends every one: the shim must serve any fd there anyway.
 *
 * FSOCK_DOUBLE_STATS=PATH: at exit each process appends one line with the
 * ioctls it issued itself (a fork child starts from zero) ("pid P socket N listen N accept N close N shutdown N
 * spawn N"), so a test can tell the double was in the path.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fastsocket_abi.h"

#define DOUBLE_MAX_FD 65536

static int chan = -1;
/* FSOCK_DOUBLE_STATS, copied at load: nginx clears its workers' environment
 * and writes its process titles over the original strings. */
static char stats_path[4096];
static unsigned char listener[DOUBLE_MAX_FD];

enum { N_SOCKET, N_LISTEN, N_ACCEPT, N_CLOSE, N_SHUTDOWN, N_SPAWN, N_MAX };
static _Atomic unsigned long issued[N_MAX];

static struct {
	int (*socket)(int, int, int);
	int (*listen)(int, int);
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*close)(int);
	int (*shutdown)(int, int);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
} next;

static void resolve(void)
{
	if (next.close != NULL)
		return;
	next.socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
	next.listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
	next.accept = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
	next.accept4 = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
	next.shutdown = (int (*)(int, int))dlsym(RTLD_NEXT, "shutdown");
	next.epoll_ctl = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
	next.close = (int (*)(int))dlsym(RTLD_NEXT, "close");
}

static int issue(int n, unsigned long cmd, struct fsocket_ioctl_arg *a)
{
	atomic_fetch_add_explicit(&issued[n], 1, memory_order_relaxed);
	return ioctl(chan, cmd, a);
}

static void mark(int fd, unsigned char v)
{
	if (fd >= 0 && fd < DOUBLE_MAX_FD)
		listener[fd] = v;
}

/* A fork child counts its own ioctls. */
static void double_forked(void)
{
	int i;

	for (i = 0; i < N_MAX; i++)
		atomic_store_explicit(&issued[i], 0, memory_order_relaxed);
}

__attribute__((constructor)) static void double_init(void)
{
	resolve();
	pthread_atfork(NULL, NULL, double_forked);
	if (getenv("FSOCK_DOUBLE_STATS") != NULL)
		snprintf(stats_path, sizeof(stats_path), "%s", getenv("FSOCK_DOUBLE_STATS"));
	chan = open(FSOCKET_DEVICE, O_RDONLY);
	if (chan < 0) {
		fprintf(stderr, "libfsocket double: cannot open %s: %s\n", FSOCKET_DEVICE, strerror(errno));
		exit(-1);
	}
}

__attribute__((destructor)) static void double_fini(void)
{
	const char *path = stats_path;
	char line[256];
	int fd, n;

	if (*path == '\0' || chan < 0)
		return;
	n = snprintf(line, sizeof(line), "pid %d socket %lu listen %lu accept %lu close %lu shutdown %lu spawn %lu\n",
		     (int)getpid(), issued[N_SOCKET], issued[N_LISTEN], issued[N_ACCEPT], issued[N_CLOSE],
		     issued[N_SHUTDOWN], issued[N_SPAWN]);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)n) != n)
		fprintf(stderr, "libfsocket double: write %s: %s\n", path, strerror(errno));
	next.close(fd);
}

int socket(int family, int type, int protocol)
{
	struct fsocket_ioctl_arg a = { 0 };

	resolve();
	if (chan < 0 || family != AF_INET || (type & 0xf) != SOCK_STREAM)
		return next.socket(family, type, protocol);
	a.op.socket_op.family = (uint32_t)family;
	a.op.socket_op.type = (uint32_t)type;
	a.op.socket_op.protocol = (uint32_t)protocol;
	return issue(N_SOCKET, FSOCKET_IOC_SOCKET, &a);
}

int listen(int fd, int backlog)
{
	struct fsocket_ioctl_arg a = { 0 };
	int r;

	resolve();
	if (chan < 0)
		return next.listen(fd, backlog);
	a.fd = (uint32_t)fd;
	a.backlog = (uint32_t)backlog;
	r = issue(N_LISTEN, FSOCKET_IOC_LISTEN, &a);
	if (r == 0)
		mark(fd, 1);
	return r;
}

static int double_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	struct fsocket_ioctl_arg a = { 0 };

	a.fd = (uint32_t)fd;
	a.op.accept_op.sockaddr = addr;
	a.op.accept_op.sockaddr_len = (int *)len;
	a.op.accept_op.flags = flags;
	return issue(N_ACCEPT, FSOCKET_IOC_ACCEPT, &a);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	resolve();
	if (chan < 0)
		return next.accept(fd, addr, len);
	return double_accept(fd, addr, len, 0);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	resolve();
	if (chan < 0)
		return next.accept4(fd, addr, len, flags);
	return double_accept(fd, addr, len, flags);
}

int close(int fd)
{
	struct fsocket_ioctl_arg a = { 0 };

	resolve();
	if (chan < 0 || fd == chan)
		return next.close(fd);
	mark(fd, 0);
	a.fd = (uint32_t)fd;
	return issue(N_CLOSE, FSOCKET_IOC_CLOSE, &a);
}

int shutdown(int fd, int how)
{
	struct fsocket_ioctl_arg a = { 0 };

	resolve();
	if (chan < 0)
		return next.shutdown(fd, how);
	a.fd = (uint32_t)fd;
	a.op.shutdown_op.how = how;
	return issue(N_SHUTDOWN, FSOCKET_IOC_SHUTDOWN_LISTEN, &a);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct fsocket_ioctl_arg a = { 0 };

	resolve();
	if (chan >= 0 && op == EPOLL_CTL_ADD && fd >= 0 && fd < DOUBLE_MAX_FD && listener[fd]) {
		a.fd = (uint32_t)fd;
		a.op.spawn_op.cpu = -1;
		if (issue(N_SPAWN, FSOCKET_IOC_SPAWN_LISTEN, &a) < 0)
			fprintf(stderr, "libfsocket double: spawn listener %d: %s\n", fd, strerror(errno));
	}
	return next.epoll_ctl(epfd, op, fd, ev);
}
