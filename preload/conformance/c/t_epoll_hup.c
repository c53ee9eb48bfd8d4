/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_epoll_hup: EPOLLRDHUP and EPOLLHUP from the peer's shutdown, close and
 * reset; EPOLLERR and EPOLLHUP reported though not requested; EPOLLET on a
 * hang-up; a registration made after the peer left; a pipe whose writer
 * closed; an unconnected socket.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

/* until waits (level-triggered) until name reports want, then prints. */
static void until(const char *label, int ep, uint32_t want)
{
	struct epoll_event evs[8];
	double deadline = now_ms() + 2000;
	int n;

	for (;;) {
		n = epoll_wait(ep, evs, 8, 50);
		for (int i = 0; i < n; i++)
			if ((evs[i].events & want) == want)
				goto done;
		if (now_ms() > deadline)
			break;
		usleep(2000);
	}
done:
	ep_show(label, ep, 0);
}

int main(void)
{
	char buf[16];
	int l, c, s, port, ep;

	conf_init("t_epoll_hup", "EPOLLRDHUP, EPOLLHUP, EPOLLERR");
	l = tcp_listener(0, 16, &port);

	section("peer shutdown(SHUT_WR) then close");
	c = tcp_client(port);
	s = accept_wait(l);
	ep = epoll_create1(0);
	R(ep_add(ep, s, EPOLLIN | EPOLLRDHUP, "s"));
	R(shutdown(c, SHUT_WR));
	until("after the peer's FIN", ep, EPOLLRDHUP);
	R(read(s, buf, sizeof buf));
	ep_show("after reading EOF (level)", ep, 0);
	R(write(s, "x", 1));
	R(shutdown(s, SHUT_WR));
	until("both directions shut", ep, EPOLLHUP);
	R(close(c));
	ep_show("peer closed too", ep, 0);
	close(s);
	close(ep);

	section("EPOLLIN only: the peer's FIN shows as EPOLLIN");
	c = tcp_client(port);
	s = accept_wait(l);
	ep = epoll_create1(0);
	R(ep_add(ep, s, EPOLLIN, "s"));
	R(close(c));
	until("after the peer closed", ep, EPOLLIN);
	R(ep_mod(ep, s, EPOLLOUT, "s"));
	ep_show("EPOLLOUT only", ep, 0);
	R(ep_mod(ep, s, 0, "s"));
	ep_show("no events requested", ep, 0);
	close(s);
	close(ep);

	section("peer reset (SO_LINGER {1,0})");
	c = tcp_client(port);
	s = accept_wait(l);
	ep = epoll_create1(0);
	R(ep_add(ep, s, 0, "s"));
	{
		struct linger lg = { 1, 0 };

		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	}
	R(close(c));
	until("nothing requested, after RST", ep, EPOLLERR);
	R(ep_mod(ep, s, EPOLLIN | EPOLLOUT | EPOLLRDHUP, "s"));
	ep_show("everything requested", ep, 0);
	R(read(s, buf, sizeof buf));
	ep_show("after read returned the error", ep, 0);
	close(s);
	close(ep);

	section("EPOLLET: hang-up is one edge");
	c = tcp_client(port);
	s = accept_wait(l);
	ep = epoll_create1(0);
	R(ep_add(ep, s, EPOLLIN | EPOLLRDHUP | EPOLLET, "s"));
	R(shutdown(c, SHUT_WR));
	ep_show("the FIN", ep, 2000);
	ep_show("then quiet", ep, 100);
	{
		struct linger lg = { 1, 0 };

		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	}
	R(close(c));
	ep_show("then the RST: a new edge", ep, 2000);
	ep_show("then quiet", ep, 100);
	close(s);
	close(ep);

	section("registered after the peer left");
	c = tcp_client(port);
	s = accept_wait(l);
	R(close(c));
	wait_ev(s, POLLRDHUP, 2000);
	ep = epoll_create1(0);
	R(ep_add(ep, s, EPOLLIN | EPOLLRDHUP | EPOLLET, "s"));
	ep_show("ET registration of a hung-up socket", ep, 0);
	ep_show("then quiet", ep, 0);
	close(s);
	close(ep);

	section("pipe writer closed; unconnected and listening sockets");
	{
		int p[2], u = socket(AF_INET, SOCK_STREAM, 0), u2 = socket(AF_INET, SOCK_STREAM, 0);

		if (pipe(p) < 0)
			die("pipe");
		ep = epoll_create1(0);
		R(ep_add(ep, p[0], EPOLLIN | EPOLLRDHUP, "pipe-r"));
		R(ep_add(ep, p[1], EPOLLOUT, "pipe-w"));
		R(ep_add(ep, u, EPOLLIN | EPOLLOUT | EPOLLRDHUP, "unconnected"));
		R(ep_add(ep, l, EPOLLIN | EPOLLOUT | EPOLLRDHUP, "listener"));
		ep_show("all", ep, 0);
		R(close(p[1]));
		ep_show("pipe writer closed", ep, 0);
		R(ep_add(ep, u2, 0, "unconnected, no events"));
		ep_show("unconnected, nothing requested", ep, 0);
		close(p[0]);
		close(u);
		close(u2);
		close(ep);
	}

	close(l);
	return conf_end();
}
