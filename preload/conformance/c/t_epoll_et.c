/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_epoll_et: EPOLLET (one event per edge, re-armed by new data, not by a
 * partial read; EPOLLIN|EPOLLOUT reported together on a new edge; a
 * listener's edges), EPOLLONESHOT (disabled after one event, re-armed by
 * EPOLL_CTL_MOD, with and without EPOLLET), and EPOLLEXCLUSIVE's rules.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

/* edge waits for the next edge: unlike ep_settle it must not wait twice,
 * so it waits once with a generous timeout. */
static void edge(const char *label, int ep)
{
	ep_show(label, ep, 2000);
}

/* quiet checks that no further event comes within ms. */
static void quiet(const char *label, int ep, int ms)
{
	ep_show(label, ep, ms);
}

int main(void)
{
	char buf[64];
	int l, c, s, port, ep;

	conf_init("t_epoll_et", "EPOLLET, EPOLLONESHOT, EPOLLEXCLUSIVE");
	tcp_pair(&l, &port, &c, &s);
	ep = epoll_create1(0);

	section("EPOLLET on EPOLLIN");
	R(ep_add(ep, s, EPOLLIN | EPOLLET, "s"));
	quiet("idle", ep, 0);
	R(write(c, "0123456789", 10));
	edge("first edge", ep);
	quiet("no new data: no event", ep, 100);
	R(read(s, buf, 4));
	quiet("partial read: no event", ep, 100);
	R(write(c, "abc", 3));
	edge("new data: a new edge", ep);
	quiet("then quiet", ep, 0);
	R(read(s, buf, sizeof buf));
	R(recv(s, buf, sizeof buf, MSG_DONTWAIT));
	R(write(c, "z", 1));
	edge("after draining, new data", ep);
	R(read(s, buf, sizeof buf));

	section("EPOLLET with EPOLLIN|EPOLLOUT: a new edge reports both");
	R(ep_mod(ep, s, EPOLLIN | EPOLLOUT | EPOLLET, "s"));
	edge("MOD reports the current state once", ep);
	quiet("then quiet", ep, 0);
	R(write(c, "y", 1));
	edge("data arrives", ep);
	quiet("then quiet", ep, 0);
	R(read(s, buf, sizeof buf));

	section("EPOLLET|EPOLLOUT: the writer's edge after a full buffer drains");
	{
		static char sink[65536];
		long total, drained = 0;
		double deadline;
		int epw = epoll_create1(0);

		R(ep_add(epw, c, EPOLLIN | EPOLLOUT | EPOLLET, "c"));
		edge("registered", epw);
		total = fill_sndbuf(c);
		say("filled: %d", total > 0);
		quiet("full: no EPOLLOUT", epw, 100);
		/* The peer reads everything; somewhere along the way c's
		 * buffer has room again: an EPOLLOUT edge. */
		deadline = now_ms() + 5000;
		while (drained < total && now_ms() < deadline) {
			ssize_t r;

			if (!wait_ev(s, POLLIN, 200))
				continue;
			r = recv(s, sink, sizeof sink, MSG_DONTWAIT);
			if (r > 0)
				drained += r;
		}
		say("peer drained everything: %d", drained == total);
		edge("after the drain", epw);
		quiet("then quiet", epw, 0);
		close(epw);
	}

	section("EPOLLET on a listener");
	R(ep_mod(ep, s, EPOLLIN | EPOLLET, "s"));
	R(ep_add(ep, l, EPOLLIN | EPOLLET, "l"));
	{
		int x1 = tcp_client(port), x2, a1, a2, x3, a3;

		edge("one connection", ep);
		quiet("then quiet", ep, 0);
		x2 = tcp_client(port);
		edge("a second connection: a new edge", ep);
		a1 = RFD(accept(l, NULL, NULL));
		quiet("accepting one is not an edge", ep, 100);
		a2 = RFD(accept(l, NULL, NULL));
		x3 = tcp_client(port);
		edge("a third connection", ep);
		a3 = RFD(accept(l, NULL, NULL));
		close(a1);
		close(a2);
		close(a3);
		close(x1);
		close(x2);
		close(x3);
	}
	R(epoll_ctl(ep, EPOLL_CTL_DEL, l, NULL));

	section("EPOLLONESHOT");
	R(ep_mod(ep, s, EPOLLIN | EPOLLONESHOT, "s"));
	quiet("idle", ep, 0);
	R(write(c, "one", 3));
	edge("first data", ep);
	quiet("disabled: nothing though data is unread", ep, 100);
	R(write(c, "two", 3));
	quiet("disabled: nothing for new data", ep, 100);
	R(ep_mod(ep, s, EPOLLIN | EPOLLONESHOT, "s"));
	edge("re-armed by MOD with data pending", ep);
	quiet("disabled again", ep, 0);
	R(ep_add(ep, s, EPOLLIN, "s"));
	R(read(s, buf, sizeof buf));
	R(ep_mod(ep, s, EPOLLIN | EPOLLONESHOT, "s"));
	quiet("re-armed, nothing pending", ep, 100);
	R(write(c, "three", 5));
	edge("new data after re-arm", ep);
	R(read(s, buf, sizeof buf));

	section("EPOLLONESHOT|EPOLLET");
	R(ep_mod(ep, s, EPOLLIN | EPOLLONESHOT | EPOLLET, "s"));
	R(write(c, "four", 4));
	edge("first data", ep);
	R(write(c, "five", 4));
	quiet("disabled", ep, 100);
	R(ep_mod(ep, s, EPOLLIN | EPOLLONESHOT | EPOLLET, "s"));
	edge("re-armed with data pending", ep);
	R(read(s, buf, sizeof buf));
	R(epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL));

	section("EPOLLEXCLUSIVE");
	{
		int ep2 = epoll_create1(0), x, a;

		R(ep_add(ep2, l, EPOLLIN | EPOLLEXCLUSIVE, "l"));
		R(ep_mod(ep2, l, EPOLLIN, "l"));
		R(ep_add(ep2, s, EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT, "s"));
		R(ep_add(ep2, c, EPOLLIN | EPOLLEXCLUSIVE | EPOLLET, "c"));
		x = tcp_client(port);
		edge("exclusive listener", ep2);
		a = accept(l, NULL, NULL);
		close(a);
		close(x);
		close(ep2);
	}

	close(ep);
	close(c);
	close(s);
	close(l);
	return conf_end();
}
