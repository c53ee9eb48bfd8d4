/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_passthrough: what the shim must hand to the kernel untouched, through
 * the same wrappers: AF_UNIX stream and datagram socketpairs, UDP on
 * loopback, an AF_INET6 TCP connection over ::1 (when the host has IPv6),
 * and these fds in epoll and poll next to a TCP socket.
 */
#include "conf.h"

#include <arpa/inet.h>
#include <sys/un.h>

int main(void)
{
	char buf[64];
	int sp[2], dp[2], u1, u2, ep, c, s;
	struct sockaddr_in a1, a2, from;
	socklen_t al, fl;
	ssize_t n;

	conf_init("t_passthrough", "AF_UNIX, UDP and IPv6 sockets through the shim's wrappers");
	tcp_pair(NULL, NULL, &c, &s);

	section("AF_UNIX stream socketpair");
	R(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp));
	show_flags("socketpair end", sp[0]);
	R(write(sp[0], "unix", 4));
	n = read(sp[1], buf, sizeof buf);
	say("read = %zd \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);
	R(send(sp[1], "back", 4, MSG_NOSIGNAL));
	R(recv(sp[0], buf, sizeof buf, 0));
	R(shutdown(sp[0], SHUT_WR));
	R(read(sp[1], buf, sizeof buf));
	{
		int v = -1;
		socklen_t vl = sizeof v;

		R(getsockopt(sp[0], SOL_SOCKET, SO_TYPE, &v, &vl));
		say("SO_TYPE is SOCK_STREAM: %d", v == SOCK_STREAM);
		R(getsockopt(sp[0], SOL_SOCKET, SO_DOMAIN, &v, &vl));
		say("SO_DOMAIN is AF_UNIX: %d", v == AF_UNIX);
		R(setsockopt(sp[0], IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int)));
	}

	section("AF_UNIX datagram socketpair");
	R(socketpair(AF_UNIX, SOCK_DGRAM, 0, dp));
	R(send(dp[0], "d1", 2, 0));
	R(send(dp[0], "d22", 3, 0));
	R(recv(dp[1], buf, sizeof buf, 0));
	R(recv(dp[1], buf, 1, 0));
	R(recv(dp[1], buf, sizeof buf, MSG_DONTWAIT));

	section("UDP on loopback");
	u1 = RFD(socket(AF_INET, SOCK_DGRAM, 0));
	u2 = RFD(socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0));
	sa_srv(&a1, 0);
	R(bind(u1, (struct sockaddr *)&a1, sizeof a1));
	al = sizeof a1;
	getsockname(u1, (struct sockaddr *)&a1, &al);
	note_port(ntohs(a1.sin_port), "U1");
	sa_srv(&a2, 0);
	R(bind(u2, (struct sockaddr *)&a2, sizeof a2));
	al = sizeof a2;
	getsockname(u2, (struct sockaddr *)&a2, &al);
	note_port(ntohs(a2.sin_port), "U2");
	R(sendto(u2, "dgram", 5, 0, (struct sockaddr *)&a1, sizeof a1));
	fl = sizeof from;
	n = recvfrom(u1, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
	say("recvfrom = %zd \"%.*s\" from %s", n, (int)(n > 0 ? n : 0), buf, fmt_sa((struct sockaddr *)&from, fl));
	R(recvfrom(u2, buf, sizeof buf, 0, NULL, NULL));
	R(connect(u2, (struct sockaddr *)&a1, sizeof a1));
	R(send(u2, "connected", 9, 0));
	R(recv(u1, buf, sizeof buf, 0));
	{
		int v = -1;
		socklen_t vl = sizeof v;

		R(getsockopt(u1, SOL_SOCKET, SO_TYPE, &v, &vl));
		say("SO_TYPE is SOCK_DGRAM: %d", v == SOCK_DGRAM);
		R(listen(u1, 1));
		R(accept(u1, NULL, NULL));
	}

	section("in one epoll set and one poll with a TCP socket");
	ep = epoll_create1(0);
	R(ep_add(ep, sp[1], EPOLLIN, "unix-stream"));
	R(ep_add(ep, dp[1], EPOLLIN, "unix-dgram"));
	R(ep_add(ep, u1, EPOLLIN, "udp"));
	R(ep_add(ep, s, EPOLLIN, "tcp"));
	ep_show("after the reads above (unix-stream has EOF)", ep, 0);
	R(send(dp[0], "d", 1, 0));
	R(sendto(u2, "u", 1, 0, NULL, 0));
	R(write(c, "t", 1));
	ep_settle("all four", ep, 4, 2000);
	{
		struct pollfd p[4] = { { .fd = sp[1], .events = POLLIN }, { .fd = dp[1], .events = POLLIN },
				       { .fd = u1, .events = POLLIN }, { .fd = s, .events = POLLIN } };

		R(poll(p, 4, 0));
		say("revents: unix-stream %s, unix-dgram %s, udp %s, tcp %s", fmt_poll(p[0].revents),
		    fmt_poll(p[1].revents), fmt_poll(p[2].revents), fmt_poll(p[3].revents));
	}
	close(ep);

	section("AF_INET6 TCP over ::1");
	{
		int l6 = socket(AF_INET6, SOCK_STREAM, 0), c6, s6;
		struct sockaddr_in6 sa6;
		socklen_t sl = sizeof sa6;

		memset(&sa6, 0, sizeof sa6);
		sa6.sin6_family = AF_INET6;
		sa6.sin6_addr = in6addr_loopback;
		if (l6 < 0 || bind(l6, (struct sockaddr *)&sa6, sizeof sa6) < 0) {
			say("no IPv6 loopback here: skipped");
		} else {
			R(listen(l6, 4));
			getsockname(l6, (struct sockaddr *)&sa6, &sl);
			c6 = RFD(socket(AF_INET6, SOCK_STREAM, 0));
			R(connect(c6, (struct sockaddr *)&sa6, sizeof sa6));
			s6 = RFD(accept(l6, NULL, NULL));
			R(write(c6, "six", 3));
			say("read %zu", read_n(s6, buf, 3, 2000));
			sl = sizeof sa6;
			R(getpeername(s6, (struct sockaddr *)&sa6, &sl));
			say("peer family AF_INET6: %d, loopback: %d", sa6.sin6_family == AF_INET6,
			    IN6_IS_ADDR_LOOPBACK(&sa6.sin6_addr));
			close(c6);
			close(s6);
		}
		if (l6 >= 0)
			close(l6);
	}

	close(sp[0]);
	close(sp[1]);
	close(dp[0]);
	close(dp[1]);
	close(u1);
	close(u2);
	close(c);
	close(s);
	return conf_end();
}
