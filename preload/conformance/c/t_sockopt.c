/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_sockopt: setsockopt/getsockopt for the options servers set, the kernel's
 * observable results (buffer doubling shown only as ">= requested",
 * TCP_DEFER_ACCEPT's rounding), and the errors for unknown options, short
 * option lengths and bad pointers.
 */
#include "conf.h"

static void get_int(const char *label, int fd, int level, int opt)
{
	int v = -12345;
	socklen_t vl = sizeof v;

	if (getsockopt(fd, level, opt, &v, &vl) < 0)
		printf("get %s = -1 %s\n", label, errname(errno));
	else
		printf("get %s = %d (optlen %u)\n", label, v, (unsigned)vl);
}

static void set_int(const char *label, int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof v) < 0)
		printf("set %s %d = -1 %s\n", label, v, errname(errno));
	else
		printf("set %s %d = 0\n", label, v);
}

static void bool_opt(const char *label, int fd, int level, int opt)
{
	get_int(label, fd, level, opt);
	set_int(label, fd, level, opt, 1);
	get_int(label, fd, level, opt);
	set_int(label, fd, level, opt, 7);
	{
		int v = 0;
		socklen_t vl = sizeof v;

		getsockopt(fd, level, opt, &v, &vl);
		printf("get %s after set 7 is nonzero: %d\n", label, v != 0);
	}
	set_int(label, fd, level, opt, 0);
	get_int(label, fd, level, opt);
}

static void buf_opt(const char *label, int fd, int opt, int want)
{
	int v = 0;
	socklen_t vl = sizeof v;

	set_int(label, fd, SOL_SOCKET, opt, want);
	if (getsockopt(fd, SOL_SOCKET, opt, &v, &vl) < 0)
		printf("get %s = -1 %s\n", label, errname(errno));
	else
		printf("get %s >= %d: %d\n", label, want, v >= want);
}

static void linger_opt(int fd, int on, int secs)
{
	struct linger lg = { .l_onoff = on, .l_linger = secs }, got;
	socklen_t gl = sizeof got;

	printf("set SO_LINGER {%d,%d} = %ld\n", on, secs, (long)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
	memset(&got, 0x55, sizeof got);
	if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &got, &gl) < 0)
		printf("get SO_LINGER = -1 %s\n", errname(errno));
	else
		printf("get SO_LINGER = {%d,%d} (optlen %u)\n", got.l_onoff ? 1 : 0, got.l_linger, (unsigned)gl);
}

int main(void)
{
	int l, c, s, port, v, x;
	socklen_t vl;

	conf_init("t_sockopt", "setsockopt/getsockopt");
	tcp_pair(&l, &port, &c, &s);
	note_port(port, "L1");

	section("SO_REUSEADDR");
	x = socket(AF_INET, SOCK_STREAM, 0);
	bool_opt("SO_REUSEADDR", x, SOL_SOCKET, SO_REUSEADDR);
	close(x);

	section("SO_REUSEPORT: two listeners on one port");
	{
		struct sockaddr_in sa, got;
		socklen_t gl = sizeof got;
		int a = socket(AF_INET, SOCK_STREAM, 0), b = socket(AF_INET, SOCK_STREAM, 0);
		int d = socket(AF_INET, SOCK_STREAM, 0), one = 1, rp;

		get_int("SO_REUSEPORT", a, SOL_SOCKET, SO_REUSEPORT);
		R(setsockopt(a, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one));
		R(setsockopt(b, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one));
		get_int("SO_REUSEPORT", a, SOL_SOCKET, SO_REUSEPORT);
		sa_srv(&sa, 0);
		R(bind(a, (struct sockaddr *)&sa, sizeof sa));
		getsockname(a, (struct sockaddr *)&got, &gl);
		rp = ntohs(got.sin_port);
		note_port(rp, "RP");
		R(listen(a, 8));
		sa_srv(&sa, rp);
		R(bind(b, (struct sockaddr *)&sa, sizeof sa));
		R(listen(b, 8));
		R(bind(d, (struct sockaddr *)&sa, sizeof sa));
		{
			/* Both listeners serve the port: four connections,
			 * accepted from whichever has them. */
			int cl[4], got_n = 0;

			for (int i = 0; i < 4; i++)
				cl[i] = tcp_client(rp);
			for (int round = 0; round < 40 && got_n < 4; round++) {
				struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };

				if (poll(p, 2, 100) <= 0)
					continue;
				for (int i = 0; i < 2; i++)
					if (p[i].revents & POLLIN) {
						int y = accept4(p[i].fd, NULL, NULL, SOCK_NONBLOCK);

						if (y >= 0) {
							got_n++;
							close(y);
						}
					}
			}
			say("connections to the SO_REUSEPORT port accepted: %d of 4", got_n);
			for (int i = 0; i < 4; i++)
				close(cl[i]);
		}
		close(a);
		close(b);
		close(d);
	}

	section("TCP_NODELAY");
	bool_opt("TCP_NODELAY", c, IPPROTO_TCP, TCP_NODELAY);
	x = socket(AF_INET, SOCK_STREAM, 0);
	get_int("TCP_NODELAY unconnected", x, IPPROTO_TCP, TCP_NODELAY);
	set_int("TCP_NODELAY unconnected", x, IPPROTO_TCP, TCP_NODELAY, 1);
	close(x);

	section("SO_KEEPALIVE and its TCP parameters");
	bool_opt("SO_KEEPALIVE", c, SOL_SOCKET, SO_KEEPALIVE);
	set_int("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE, 30);
	get_int("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE);
	set_int("TCP_KEEPINTVL", c, IPPROTO_TCP, TCP_KEEPINTVL, 5);
	get_int("TCP_KEEPINTVL", c, IPPROTO_TCP, TCP_KEEPINTVL);
	set_int("TCP_KEEPCNT", c, IPPROTO_TCP, TCP_KEEPCNT, 3);
	get_int("TCP_KEEPCNT", c, IPPROTO_TCP, TCP_KEEPCNT);
	set_int("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE, 0);
	/* the kernel's bounds (MAX_TCP_KEEPIDLE, _KEEPINTVL, _KEEPCNT); a
	 * refused value leaves the last one in place */
	set_int("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE, 32767);
	set_int("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE, 32768);
	get_int("TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE);
	set_int("TCP_KEEPINTVL", c, IPPROTO_TCP, TCP_KEEPINTVL, 32768);
	set_int("TCP_KEEPINTVL", c, IPPROTO_TCP, TCP_KEEPINTVL, -1);
	get_int("TCP_KEEPINTVL", c, IPPROTO_TCP, TCP_KEEPINTVL);
	set_int("TCP_KEEPCNT", c, IPPROTO_TCP, TCP_KEEPCNT, 127);
	set_int("TCP_KEEPCNT", c, IPPROTO_TCP, TCP_KEEPCNT, 128);
	get_int("TCP_KEEPCNT", c, IPPROTO_TCP, TCP_KEEPCNT);

	section("SO_RCVBUF / SO_SNDBUF");
	buf_opt("SO_RCVBUF", c, SO_RCVBUF, 65536);
	buf_opt("SO_SNDBUF", c, SO_SNDBUF, 65536);
	buf_opt("SO_RCVBUF", s, SO_RCVBUF, 262144);
	buf_opt("SO_SNDBUF", s, SO_SNDBUF, 131072);
	x = socket(AF_INET, SOCK_STREAM, 0);
	buf_opt("SO_RCVBUF before listen", x, SO_RCVBUF, 32768);
	close(x);

	section("SO_SNDBUF/SO_RCVBUF out of range: accepted and clamped (memcached probes this)");
	{
		int huge = 1 << 30, neg = -5, v = 0;
		socklen_t vl = sizeof v;

		R(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &huge, sizeof huge));
		getsockopt(c, SOL_SOCKET, SO_SNDBUF, &v, &vl);
		say("SO_SNDBUF after 1 GiB: clamped below it: %d, positive: %d", v < huge, v > 0);
		R(setsockopt(c, SOL_SOCKET, SO_RCVBUF, &huge, sizeof huge));
		getsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, &vl);
		say("SO_RCVBUF after 1 GiB: clamped below it: %d, positive: %d", v < huge, v > 0);
		R(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &neg, sizeof neg));
		getsockopt(c, SOL_SOCKET, SO_SNDBUF, &v, &vl);
		say("SO_SNDBUF after -5: positive: %d", v > 0);
	}

	section("SO_LINGER");
	linger_opt(c, 0, 0);
	linger_opt(c, 1, 5);
	linger_opt(c, 1, 0);
	linger_opt(c, 0, 0);
	{
		struct linger lg = { 1, 1 };

		R(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg - 1));
	}

	section("TCP_DEFER_ACCEPT");
	get_int("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT);
	set_int("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 5);
	get_int("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT);
	set_int("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 1);
	get_int("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT);
	set_int("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 0);
	get_int("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT);

	section("more options servers set: TCP_CORK, TCP_QUICKACK, TCP_USER_TIMEOUT, TCP_MAXSEG");
	bool_opt("TCP_CORK", c, IPPROTO_TCP, TCP_CORK);
	set_int("TCP_QUICKACK", c, IPPROTO_TCP, TCP_QUICKACK, 1);
	get_int("TCP_QUICKACK", c, IPPROTO_TCP, TCP_QUICKACK);
	set_int("TCP_USER_TIMEOUT", c, IPPROTO_TCP, TCP_USER_TIMEOUT, 30000);
	get_int("TCP_USER_TIMEOUT", c, IPPROTO_TCP, TCP_USER_TIMEOUT);
	set_int("TCP_USER_TIMEOUT", c, IPPROTO_TCP, TCP_USER_TIMEOUT, -1);
	{
		int mss = 0;
		socklen_t ml = sizeof mss;

		R(getsockopt(c, IPPROTO_TCP, TCP_MAXSEG, &mss, &ml));
		say("TCP_MAXSEG of a connection > 0: %d", mss > 0);
	}
	x = socket(AF_INET, SOCK_STREAM, 0);
	set_int("TCP_MAXSEG before connect", x, IPPROTO_TCP, TCP_MAXSEG, 1200);
	set_int("TCP_MAXSEG too small", x, IPPROTO_TCP, TCP_MAXSEG, 10);
	close(x);

	section("SO_RCVTIMEO / SO_SNDTIMEO / SO_RCVLOWAT");
	{
		struct timeval tv = { 1, 500000 }, got;
		socklen_t gl = sizeof got;

		R(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
		memset(&got, 0, sizeof got);
		R(getsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &got, &gl));
		say("SO_RCVTIMEO = %ld.%06ld (optlen %u)", (long)got.tv_sec, (long)got.tv_usec, (unsigned)gl);
		tv.tv_sec = 0;
		tv.tv_usec = 250000;
		R(setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
		gl = sizeof got;
		R(getsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &got, &gl));
		say("SO_SNDTIMEO = %ld.%06ld", (long)got.tv_sec, (long)got.tv_usec);
		tv.tv_usec = 2000000;
		R(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
		R(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv - 1));
		tv.tv_sec = 0;
		tv.tv_usec = 0;
		R(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
		R(setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
	}
	set_int("SO_RCVLOWAT", c, SOL_SOCKET, SO_RCVLOWAT, 16);
	get_int("SO_RCVLOWAT", c, SOL_SOCKET, SO_RCVLOWAT);
	set_int("SO_RCVLOWAT", c, SOL_SOCKET, SO_RCVLOWAT, 1);

	section("IP level: IP_TOS, IP_TTL");
	set_int("IP_TOS", c, IPPROTO_IP, IP_TOS, 0x10);
	get_int("IP_TOS", c, IPPROTO_IP, IP_TOS);
	set_int("IP_TTL", c, IPPROTO_IP, IP_TTL, 33);
	get_int("IP_TTL", c, IPPROTO_IP, IP_TTL);
	set_int("IP_TTL", c, IPPROTO_IP, IP_TTL, 300);

	section("what an accepted socket inherits from its listener");
	{
		int il, iport, x, a, one = 1;
		struct linger lg = { 1, 3 };

		il = tcp_listener(SOCK_NONBLOCK, 8, &iport);
		R(setsockopt(il, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one));
		R(setsockopt(il, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
		R(setsockopt(il, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
		set_int("TCP_KEEPIDLE", il, IPPROTO_TCP, TCP_KEEPIDLE, 77);
		buf_opt("SO_RCVBUF", il, SO_RCVBUF, 200000);
		buf_opt("SO_SNDBUF", il, SO_SNDBUF, 100000);
		x = tcp_client(iport);
		wait_ev(il, POLLIN, 2000);
		a = RFD(accept(il, NULL, NULL));
		show_flags("accepted", a);
		get_int("SO_KEEPALIVE (accepted)", a, SOL_SOCKET, SO_KEEPALIVE);
		get_int("TCP_NODELAY (accepted)", a, IPPROTO_TCP, TCP_NODELAY);
		get_int("TCP_KEEPIDLE (accepted)", a, IPPROTO_TCP, TCP_KEEPIDLE);
		get_int("SO_REUSEADDR (accepted)", a, SOL_SOCKET, SO_REUSEADDR);
		{
			struct linger got;
			socklen_t gl = sizeof got;
			int v = 0;
			socklen_t vl = sizeof v;

			getsockopt(a, SOL_SOCKET, SO_LINGER, &got, &gl);
			say("SO_LINGER (accepted) = {%d,%d}", got.l_onoff ? 1 : 0, got.l_linger);
			getsockopt(a, SOL_SOCKET, SO_RCVBUF, &v, &vl);
			say("SO_RCVBUF (accepted) >= 200000: %d", v >= 200000);
			getsockopt(a, SOL_SOCKET, SO_SNDBUF, &v, &vl);
			say("SO_SNDBUF (accepted) >= 100000: %d", v >= 100000);
		}
		close(a);
		close(x);
		close(il);
	}

	section("TCP_DEFER_ACCEPT: a connection is accepted once it has data");
	{
		int dport, dl = tcp_listener(0, 8, &dport), x, a, secs = 5;
		char b[4];

		note_port(dport, "DEFER");
		R(setsockopt(dl, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs));
		x = tcp_client(dport);
		say("client connected; listener within 300 ms: %s", fmt_poll(wait_ev(dl, POLLIN, 300)));
		R(write(x, "req", 3));
		say("after the client's first data: %s", fmt_poll(wait_ev(dl, POLLIN, 2000)));
		a = RFD(accept(dl, NULL, NULL));
		say("accepted with its data: %zu", read_n(a, b, 3, 2000));
		close(a);
		close(x);
		close(dl);
	}

	section("SO_ERROR, SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ACCEPTCONN");
	get_int("SO_ERROR", c, SOL_SOCKET, SO_ERROR);
	set_int("SO_ERROR", c, SOL_SOCKET, SO_ERROR, 0);
	get_int("SO_TYPE", c, SOL_SOCKET, SO_TYPE);
	get_int("SO_DOMAIN", c, SOL_SOCKET, SO_DOMAIN);
	get_int("SO_PROTOCOL", c, SOL_SOCKET, SO_PROTOCOL);
	get_int("SO_ACCEPTCONN", c, SOL_SOCKET, SO_ACCEPTCONN);
	get_int("SO_ACCEPTCONN", l, SOL_SOCKET, SO_ACCEPTCONN);

	section("TCP_INFO");
	{
		struct tcp_info ti;
		socklen_t tl = sizeof ti;

		memset(&ti, 0, sizeof ti);
		R(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tl));
		say("connected tcpi_state = %u (TCP_ESTABLISHED %d), optlen == sizeof: %d",
		    ti.tcpi_state, TCP_ESTABLISHED, tl == sizeof ti);
		tl = sizeof ti;
		R(getsockopt(l, IPPROTO_TCP, TCP_INFO, &ti, &tl));
		say("listener tcpi_state = %u (TCP_LISTEN %d)", ti.tcpi_state, TCP_LISTEN);
		tl = 8;
		R(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tl));
		say("short TCP_INFO optlen = %u", (unsigned)tl);
	}

	section("unknown options and bad lengths");
	v = 1;
	R(setsockopt(c, SOL_SOCKET, 9999, &v, sizeof v));
	vl = sizeof v;
	R(getsockopt(c, SOL_SOCKET, 9999, &v, &vl));
	R(setsockopt(c, IPPROTO_TCP, 9999, &v, sizeof v));
	vl = sizeof v;
	R(getsockopt(c, IPPROTO_TCP, 9999, &v, &vl));
	R(setsockopt(c, 9999, 1, &v, sizeof v));
	R(setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, 2));
	R(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, 2));
	vl = 0;
	R(getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, &vl));
	say("optlen after getsockopt with optlen 0: %u", (unsigned)vl);
	vl = -1;
	R(getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, &vl));
	{
		long long big = -1;
		socklen_t bl = sizeof big;

		R(getsockopt(c, SOL_SOCKET, SO_REUSEADDR, &big, &bl));
		say("optlen after getsockopt with optlen 8: %u", (unsigned)bl);
	}

	section("bad pointers");
	R(setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, conf_badptr, sizeof(int)));
	vl = sizeof v;
	R(getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, conf_badptr, &vl));
	R(getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, conf_badptr));
	R(setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, NULL, sizeof(int)));

	section("not a socket, not an fd");
	{
		int p[2];

		if (pipe(p) < 0)
			die("pipe");
		R(setsockopt(p[0], SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v));
		vl = sizeof v;
		R(getsockopt(p[0], SOL_SOCKET, SO_KEEPALIVE, &v, &vl));
		close(p[0]);
		close(p[1]);
		R(setsockopt(p[0], SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v));
	}

	close(c);
	close(s);
	close(l);
	return conf_end();
}
