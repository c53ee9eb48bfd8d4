/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_daemon_gone.c - the daemon dies while the application is blocked in a
 * read on an fsstack socket: the read must fail (no hang), and every later
 * call must fail cleanly: readiness reports ERR|HUP, writes EPIPE, new
 * sockets ENETDOWN, close works.  run.sh kills the daemon after "ready".
 *
 * Exit: 0 ok, 1 a check failed, 3 a call failed; SIGALRM means a hang.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcommon.h"

int main(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	struct epoll_event ev = { .events = EPOLLIN }, out;
	struct pollfd p;
	char buf[16];
	int l, c, s, ep, n;
	ssize_t r;

	alarm(10);
	l = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_OK(bind(l, (struct sockaddr *)&sin, sizeof(sin)));
	T_OK(listen(l, 4));
	T_OK(getsockname(l, (struct sockaddr *)&sin, &len));
	c = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_OK(connect(c, (struct sockaddr *)&sin, sizeof(sin)));
	s = T_OK(accept(l, NULL, NULL));
	T_CHECK(write(c, "x", 1) == 1 && read(s, buf, 1) == 1);	/* really connected */

	printf("ready\n");
	fflush(stdout);
	r = read(s, buf, sizeof(buf));	/* blocks until the daemon dies */
	fprintf(stderr, "read after the daemon died: %zd (%s)\n", r, r < 0 ? strerror(errno) : "eof");
	T_CHECK(r <= 0);

	ep = T_OK(epoll_create1(0));
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	n = epoll_wait(ep, &out, 1, 2000);
	T_CHECK(n == 1 && (out.events & (EPOLLERR | EPOLLHUP)));
	p = (struct pollfd){ s, POLLIN, 0 };
	T_CHECK(poll(&p, 1, 2000) == 1 && (p.revents & (POLLERR | POLLHUP)));
	T_CHECK(send(c, "y", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE);
	T_CHECK(socket(AF_INET, SOCK_STREAM, 0) == -1 && errno == ENETDOWN);
	T_CHECK(accept(l, NULL, NULL) == -1);
	T_CHECK(close(s) == 0 && close(c) == 0 && close(l) == 0 && close(ep) == 0);
	return t_done("t_daemon_gone");
}
