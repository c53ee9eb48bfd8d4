/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_epoll_lt: epoll_create/epoll_create1/epoll_ctl errors and
 * level-triggered epoll on sockets: readiness repeats until consumed,
 * listeners, EPOLLOUT, maxevents rotation, EPOLL_CTL_DEL and close, the
 * data field round trip, and registration following the open file
 * description rather than the fd number.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

int main(void)
{
	char buf[64];
	int l, c, s, port, ep, f;
	struct epoll_event ev = { .events = EPOLLIN }, out[4];

	conf_init("t_epoll_lt", "epoll create/ctl errors and level-triggered readiness");
	tcp_pair(&l, &port, &c, &s);

	section("create");
	R(epoll_create(0));
	ep = RFD(epoll_create(1));
	show_flags("epoll_create(1)", ep);
	close(ep);
	R(epoll_create1(0x1));
	ep = RFD(epoll_create1(EPOLL_CLOEXEC));
	show_flags("epoll_create1(EPOLL_CLOEXEC)", ep);

	section("ctl errors");
	f = open("/dev/null", O_RDONLY);
	R(ep_add(ep, s, EPOLLIN, "s"));
	R(ep_add(ep, s, EPOLLIN, "s"));
	R(ep_mod(ep, c, EPOLLIN, "c"));
	R(epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL));
	R(ep_add(ep, ep, EPOLLIN, "ep"));
	R(ep_add(ep, f, EPOLLIN, "devnull"));
	R(epoll_ctl(ep, 99, c, &ev));
	R(epoll_ctl(ep, EPOLL_CTL_ADD, c, NULL));
	R(epoll_ctl(ep, EPOLL_CTL_ADD, c, conf_badptr));
	R(epoll_ctl(s, EPOLL_CTL_ADD, c, &ev));
	R(epoll_ctl(f, EPOLL_CTL_ADD, c, &ev));
	R(epoll_wait(ep, out, 0, 0));
	{
		volatile int minus_one = -1; /* out of gcc's sight */

		R(epoll_wait(ep, out, minus_one, 0));
	}
	R(epoll_wait(s, out, 4, 0));
	R(epoll_wait(f, out, 4, 0));

	section("level-triggered EPOLLIN");
	ep_show("idle: epoll_wait(0)", ep, 0);
	R(write(c, "0123456789", 10));
	ep_settle("after 10 bytes", ep, 1, 2000);
	ep_show("again, nothing read", ep, 0);
	R(read(s, buf, 4));
	ep_show("after reading 4 of 10", ep, 0);
	R(read(s, buf, sizeof buf));
	ep_show("after reading the rest", ep, 0);

	section("EPOLLIN|EPOLLOUT and EPOLL_CTL_MOD");
	R(ep_mod(ep, s, EPOLLIN | EPOLLOUT, "s"));
	ep_show("idle connected socket", ep, 0);
	R(ep_mod(ep, s, EPOLLOUT, "s"));
	R(write(c, "x", 1));
	wait_ev(s, POLLIN, 2000);
	ep_show("EPOLLOUT only, data queued", ep, 0);
	R(ep_mod(ep, s, 0, "s"));
	ep_show("events 0", ep, 0);
	R(ep_mod(ep, s, EPOLLIN, "s"));
	ep_show("EPOLLIN again", ep, 0);
	R(read(s, buf, sizeof buf));

	section("listener");
	R(ep_add(ep, l, EPOLLIN, "l"));
	ep_show("no pending connection", ep, 0);
	{
		int x = tcp_client(port), a;

		ep_settle("one pending connection", ep, 1, 2000);
		ep_show("still pending", ep, 0);
		a = accept(l, NULL, NULL);
		ep_show("accepted", ep, 0);
		close(a);
		close(x);
	}

	section("maxevents 1 with two ready sockets: successive waits rotate");
	{
		int c2, s2, seen_s = 0, seen_s2 = 0;

		c2 = tcp_client(port);
		s2 = accept_wait(l);
		R(ep_add(ep, s2, EPOLLIN, "s2"));
		R(write(c, "a", 1));
		R(write(c2, "b", 1));
		ep_settle("both ready", ep, 2, 2000);
		for (int i = 0; i < 4; i++) {
			int n = epoll_wait(ep, out, 1, 0);

			if (n == 1 && !strcmp(out[0].data.ptr, "s"))
				seen_s++;
			if (n == 1 && !strcmp(out[0].data.ptr, "s2"))
				seen_s2++;
		}
		say("four waits with maxevents 1: s reported %d times, s2 %d times", seen_s, seen_s2);
		if (read(s, buf, sizeof buf) < 0 || read(s2, buf, sizeof buf) < 0)
			die("read");

		section("EPOLL_CTL_DEL and close");
		R(write(c2, "c", 1));
		ep_settle("s2 ready", ep, 1, 2000);
		R(epoll_ctl(ep, EPOLL_CTL_DEL, s2, NULL));
		ep_show("after DEL", ep, 0);
		R(epoll_ctl(ep, EPOLL_CTL_DEL, s2, NULL));
		R(ep_add(ep, s2, EPOLLIN, "s2"));
		ep_show("added back", ep, 0);
		R(read(s2, buf, sizeof buf));
		R(write(c2, "d", 1));
		ep_settle("s2 ready again", ep, 1, 2000);
		R(close(s2));
		ep_show("after close", ep, 0);
		R(ep_add(ep, c2, EPOLLIN | EPOLLRDHUP, "c2"));
		ep_settle("the peer of the closed socket", ep, 1, 2000);
		close(c2);
	}

	section("registration follows the open file, not the fd number");
	{
		int c3 = tcp_client(port), s3 = accept_wait(l), d;

		R(ep_add(ep, s3, EPOLLIN, "s3"));
		d = dup(s3);
		R(close(s3));
		R(write(c3, "e", 1));
		ep_settle("registered fd closed, a dup still open", ep, 1, 2000);
		R(epoll_ctl(ep, EPOLL_CTL_DEL, s3, NULL));
		R(read(d, buf, sizeof buf));
		close(d);
		ep_show("dup closed too", ep, 0);
		close(c3);
	}

	section("the data field round-trips");
	{
		int ep2 = epoll_create1(0);

		ev.events = EPOLLOUT;
		ev.data.u64 = 0x1122334455667788ULL;
		R(epoll_ctl(ep2, EPOLL_CTL_ADD, c, &ev));
		memset(out, 0, sizeof out);
		R(epoll_wait(ep2, out, 4, 0));
		say("data.u64 = 0x%llx", (unsigned long long)out[0].data.u64);
		ev.data.u64 = 0xfffffffffffffffeULL;
		R(epoll_ctl(ep2, EPOLL_CTL_MOD, c, &ev));
		R(epoll_wait(ep2, out, 4, 0));
		say("data.u64 after MOD = 0x%llx", (unsigned long long)out[0].data.u64);
		R(epoll_wait(ep2, conf_badptr, 4, 0));
		close(ep2);
	}

	close(f);
	close(ep);
	close(c);
	close(s);
	close(l);
	return conf_end();
}
