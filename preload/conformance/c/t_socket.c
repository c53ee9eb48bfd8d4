/* SPDX-License-Identifier: Apache-2.0 */
/* t_socket: socket, bind, listen, accept, accept4, getsockname, getpeername. */
#include "conf.h"

static void names(const char *label, int fd)
{
	struct sockaddr_in a, b;
	socklen_t al = sizeof a, bl = sizeof b;

	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	if (getsockname(fd, (struct sockaddr *)&a, &al) < 0)
		printf("%s getsockname = -1 %s\n", label, errname(errno));
	else
		printf("%s getsockname = %s len=%u\n", label, fmt_sa((struct sockaddr *)&a, al), (unsigned)al);
	if (getpeername(fd, (struct sockaddr *)&b, &bl) < 0)
		printf("%s getpeername = -1 %s\n", label, errname(errno));
	else
		printf("%s getpeername = %s len=%u\n", label, fmt_sa((struct sockaddr *)&b, bl), (unsigned)bl);
}

int main(void)
{
	struct sockaddr_in sa, got;
	socklen_t len;
	int l, l2, c, c2, c3, c4, c5, c6, a, s, port, pfd[2], one = 1;

	conf_init("t_socket", "socket/bind/listen/accept/accept4/getsockname/getpeername");
	if (pipe(pfd) < 0)
		die("pipe");

	section("socket");
	l = RFD(socket(AF_INET, SOCK_STREAM, 0));
	show_flags("plain socket", l);
	l2 = RFD(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
	show_flags("SOCK_NONBLOCK|SOCK_CLOEXEC socket", l2);
	a = RFD(socket(AF_INET, SOCK_STREAM, IPPROTO_TCP));
	close(a);
	R(socket(AF_INET, SOCK_STREAM, IPPROTO_UDP));
	R(socket(AF_INET, SOCK_STREAM | 0x40000000, 0));
	a = RFD(socket(AF_INET, SOCK_DGRAM, 0));
	close(a);
	{
		int t = -1;
		socklen_t tl = sizeof t;

		R(getsockopt(l, SOL_SOCKET, SO_TYPE, &t, &tl));
		say("SO_TYPE is SOCK_STREAM: %d", t == SOCK_STREAM);
	}

	section("bind");
	names("unbound", l);
	sa_srv(&sa, 0);
	R(bind(l, (struct sockaddr *)&sa, sizeof sa - 1));
	sa.sin_family = AF_INET6;
	R(bind(l, (struct sockaddr *)&sa, sizeof sa));
	sa_srv(&sa, 0);
	R(bind(l, (struct sockaddr *)&sa, sizeof sa));
	len = sizeof got;
	if (getsockname(l, (struct sockaddr *)&got, &len) < 0)
		die("getsockname");
	port = ntohs(got.sin_port);
	note_port(port, "L1");
	names("bound", l);
	R(bind(l, (struct sockaddr *)&sa, sizeof sa));
	R(bind(pfd[0], (struct sockaddr *)&sa, sizeof sa));
	{
		int x = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in other;

		if (x < 0)
			die("socket");
		sa_srv(&sa, port);
		say("(L1 is bound without SO_REUSEADDR, not yet listening)");
		R(bind(x, (struct sockaddr *)&sa, sizeof sa));
		R(setsockopt(x, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
		R(bind(x, (struct sockaddr *)&sa, sizeof sa));
		memset(&other, 0, sizeof other);
		other.sin_family = AF_INET;
		other.sin_addr.s_addr = htonl(0xC0000201); /* 192.0.2.1, TEST-NET-1: never local */
		R(bind(x, (struct sockaddr *)&other, sizeof other));
		close(x);
	}

	section("listen");
	R(getpeername(l, (struct sockaddr *)&got, &len));
	R(listen(l, 16));
	R(listen(l, 32));
	{
		int v = -1;
		socklen_t vl = sizeof v;

		R(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl));
		say("SO_ACCEPTCONN = %d", v);
	}
	R(listen(l, -1));
	R(listen(l, 0));
	R(listen(l, 1 << 30));
	R(listen(l, 16));
	R(listen(pfd[0], 16));
	names("listening", l);
	{
		int x = socket(AF_INET, SOCK_STREAM, 0);

		R(listen(x, 4));
		names("listen without bind", x);
		close(x);
	}

	section("accept");
	R(accept(l2, NULL, NULL));
	R(accept(pfd[0], NULL, NULL));
	{
		int x = socket(AF_INET, SOCK_STREAM, 0);

		R(accept(x, NULL, NULL));
		close(x);
	}
	c = tcp_client(port);
	c2 = tcp_client(port);
	c3 = tcp_client(port);
	c4 = tcp_client(port);
	c5 = tcp_client(port);
	c6 = tcp_client(port);
	memset(&got, 0, sizeof got);
	len = sizeof got;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accept addr = %s len=%u", fmt_sa((struct sockaddr *)&got, len), (unsigned)len);
	show_flags("accepted (listener blocking)", s);
	names("accepted", s);
	names("client", c);
	{
		struct sockaddr_in x, y;
		socklen_t xl = sizeof x, yl = sizeof y;

		getpeername(s, (struct sockaddr *)&x, &xl);
		getsockname(c, (struct sockaddr *)&y, &yl);
		say("accepted peer port == client local port: %d", x.sin_port == y.sin_port);
		getsockname(s, (struct sockaddr *)&x, &xl);
		getpeername(c, (struct sockaddr *)&y, &yl);
		say("accepted local == client peer: %d",
		    x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr);
	}
	R(listen(c, 4));
	close(s);
	a = RFD(accept(l, NULL, NULL));
	close(a);
	len = 4;
	memset(&got, 0, sizeof got);
	a = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accept with addrlen 4: len=%u family=%d", (unsigned)len, got.sin_family);
	close(a);

	section("accept4");
	R(accept4(l, NULL, NULL, 0x1));
	a = RFD(accept4(l, NULL, NULL, SOCK_NONBLOCK));
	show_flags("accept4 SOCK_NONBLOCK", a);
	close(a);
	a = RFD(accept4(l, NULL, NULL, SOCK_CLOEXEC));
	show_flags("accept4 SOCK_CLOEXEC", a);
	close(a);
	len = sizeof got;
	a = RFD(accept4(l, (struct sockaddr *)&got, &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
	say("accept4 addr = %s", fmt_sa((struct sockaddr *)&got, len));
	show_flags("accept4 SOCK_NONBLOCK|SOCK_CLOEXEC", a);
	close(a);
	R(fcntl(l, F_SETFL, O_NONBLOCK));
	R(accept(l, NULL, NULL));
	R(accept4(l, NULL, NULL, 0));
	R(fcntl(l, F_SETFL, 0));
	{
		int x = tcp_client(port);

		if (wait_ev(l, POLLIN, 2000) != POLLIN)
			die("listener not readable");
		R(fcntl(l, F_SETFL, O_NONBLOCK));
		a = RFD(accept4(l, NULL, NULL, 0));
		show_flags("accept4 flags 0 from non-blocking listener", a);
		close(a);
		close(x);
	}

	section("a wildcard listener (INADDR_ANY), as servers bind");
	{
		struct sockaddr_in any;
		socklen_t al = sizeof any;
		int w = socket(AF_INET, SOCK_STREAM, 0), wp, x, a;

		memset(&any, 0, sizeof any);
		any.sin_family = AF_INET;
		R(bind(w, (struct sockaddr *)&any, sizeof any));
		R(listen(w, 8));
		getsockname(w, (struct sockaddr *)&any, &al);
		wp = ntohs(any.sin_port);
		note_port(wp, "L2");
		names("wildcard listener", w);
		x = tcp_client(wp);
		a = RFD(accept(w, NULL, NULL));
		names("accepted from the wildcard listener", a);
		close(a);
		close(x);
		close(w);
	}

	section("restarting a server: its port is in TIME_WAIT");
	{
		struct sockaddr_in sa2;
		int w, x, a, wp, again;

		w = tcp_listener(0, 8, &wp);
		note_port(wp, "L3");
		x = tcp_client(wp);
		a = accept_wait(w);
		/* The server closes first, so its end goes to TIME_WAIT. */
		R(close(a));
		wait_ev(x, POLLRDHUP, 2000);
		R(close(x));
		R(close(w));
		usleep(100000);
		sa_srv(&sa2, wp);
		again = socket(AF_INET, SOCK_STREAM, 0);
		R(bind(again, (struct sockaddr *)&sa2, sizeof sa2));
		R(setsockopt(again, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
		R(bind(again, (struct sockaddr *)&sa2, sizeof sa2));
		R(listen(again, 8));
		close(again);
	}

	section("close");
	R(close(c));
	R(close(c2));
	R(close(c3));
	R(close(c4));
	R(close(c5));
	R(close(c6));
	R(close(l));
	R(close(l2));
	R(close(l));
	close(pfd[0]);
	close(pfd[1]);
	return conf_end();
}
