/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_ipv6: AF_INET6 stream sockets: bind/connect address checks, an echo
 * over IPv6 (SRV6, FSCONF_ADDR6), accept/getsockname/getpeername as
 * sockaddr_in6 (and truncated), IPV6_V6ONLY (default, set before bind,
 * refused after), a dual-stack [::] listener serving an IPv4 client
 * (v4-mapped peer), an IPv6-only listener refusing one, a v4-mapped
 * connect and bind, ENETUNREACH for a v4-mapped connect of an IPv6-only
 * socket.
 */
#include "conf.h"

static int v6only(int fd)
{
	int v = -1;
	socklen_t l = sizeof v;

	if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) < 0)
		return -1;
	return v;
}

static void names(const char *label, int fd)
{
	struct sockaddr_in6 a;
	socklen_t len = sizeof a;

	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		say("%s getsockname = -1 %s", label, errname(errno));
	else
		say("%s getsockname = %s len %u", label, fmt_sa((struct sockaddr *)&a, len), (unsigned)len);
	len = sizeof a;
	if (getpeername(fd, (struct sockaddr *)&a, &len) < 0)
		say("%s getpeername = -1 %s", label, errname(errno));
	else
		say("%s getpeername = %s len %u", label, fmt_sa((struct sockaddr *)&a, len), (unsigned)len);
}

static void sa_mapped(struct sockaddr_in6 *sa, struct in_addr v4, int port)
{
	memset(sa, 0, sizeof *sa);
	sa->sin6_family = AF_INET6;
	sa->sin6_addr.s6_addr[10] = 0xff;
	sa->sin6_addr.s6_addr[11] = 0xff;
	memcpy(&sa->sin6_addr.s6_addr[12], &v4, 4);
	sa->sin6_port = htons((uint16_t)port);
}

/* A listener of family AF_INET6 on sa (port 0), with IPV6_V6ONLY set to
 * only (-1: left alone); its port is noted as name. */
static int listener6(const struct sockaddr_in6 *sa, int only, const char *name, int *port)
{
	struct sockaddr_in6 got;
	socklen_t len = sizeof got;
	int l = socket(AF_INET6, SOCK_STREAM, 0);

	if (l < 0)
		die("socket AF_INET6");
	if (only >= 0 && setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only) < 0)
		die("IPV6_V6ONLY");
	if (bind(l, (const struct sockaddr *)sa, sizeof *sa) < 0 || listen(l, 16) < 0)
		die("bind/listen AF_INET6");
	if (getsockname(l, (struct sockaddr *)&got, &len) < 0)
		die("getsockname");
	*port = ntohs(got.sin6_port);
	note_port(*port, name);
	return l;
}

/* Bytes both ways and EOF, between a connected client and the accepted
 * end. */
static void echo(int c, int s)
{
	char buf[64];
	size_t n;

	R(write(c, "ping6", 5));
	n = read_n(s, buf, 5, 2000);
	say("server read %zu: %.*s", n, (int)n, buf);
	R(write(s, buf, n));
	n = read_n(c, buf, 5, 2000);
	say("client read %zu: %.*s", n, (int)n, buf);
	R(shutdown(c, SHUT_WR));
	wait_ev(s, POLLIN, 2000);
	R(read(s, buf, sizeof buf));
}

int main(void)
{
	struct sockaddr_in6 sa, got;
	struct sockaddr_in sin;
	socklen_t len;
	int fd, l, c, s, port, one = 1, zero = 0, v;
	short sh = 1;

	conf_init("t_ipv6", "AF_INET6 streams: echo, names, IPV6_V6ONLY, dual stack, v4-mapped");

	section("socket");
	fd = RFD(socket(AF_INET6, SOCK_STREAM, 0));
	len = sizeof v;
	R(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len));
	say("SO_DOMAIN = %d (AF_INET6 is %d)", v, AF_INET6);
	say("IPV6_V6ONLY default = %d", v6only(fd));
	names("unbound", fd);
	len = sizeof got;
	R(getsockname(fd, (struct sockaddr *)&got, &len));
	say("len = %u", (unsigned)len);
	len = 8;
	memset(&got, 0, sizeof got);
	R(getsockname(fd, (struct sockaddr *)&got, &len));
	say("short: len = %u family = %d", (unsigned)len, got.sin6_family);

	section("bind: address checks");
	sa_srv(&sin, 0);
	R(bind(fd, (struct sockaddr *)&sin, sizeof sin));
	sa_srv6(&sa, 0);
	sa.sin6_family = AF_INET;
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	sa_srv6(&sa, 0);
	R(bind(fd, (struct sockaddr *)&sa, 23));
	memset(&sa, 0, sizeof sa);
	sa.sin6_family = AF_INET6;
	sa.sin6_addr.s6_addr[0] = 0xff;
	sa.sin6_addr.s6_addr[1] = 0x02;
	sa.sin6_addr.s6_addr[15] = 1;
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	R(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
	say("IPV6_V6ONLY = %d", v6only(fd));
	sa_mapped(&sa, conf_srv_ip, 0);
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	R(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &sh, sizeof sh));
	R(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero));
	say("IPV6_V6ONLY = %d", v6only(fd));
	sa_srv6(&sa, 0);
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	names("bound", fd);
	R(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
	say("IPV6_V6ONLY after bind = %d", v6only(fd));
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	close(fd);

	section("IPv4 socket and IPv6 options");
	fd = socket(AF_INET, SOCK_STREAM, 0);
	R(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
	len = sizeof v;
	R(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len));
	sa_srv6(&sa, 0);
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	close(fd);

	section("echo over IPv6");
	sa_srv6(&sa, 0);
	l = listener6(&sa, -1, "L6", &port);
	names("listener", l);
	c = RFD(socket(AF_INET6, SOCK_STREAM, 0));
	sa_srv6(&sa, port);
	R(connect(c, (struct sockaddr *)&sa, 23));
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	names("client", c);
	wait_ev(l, POLLIN, 2000);
	len = sizeof got;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accepted peer = %s len %u", fmt_sa((struct sockaddr *)&got, len), (unsigned)len);
	names("accepted", s);
	len = sizeof v;
	R(getsockopt(s, SOL_SOCKET, SO_DOMAIN, &v, &len));
	say("accepted SO_DOMAIN = %d", v);
	echo(c, s);
	close(c);
	close(s);

	section("accept with a short address length");
	c = socket(AF_INET6, SOCK_STREAM, 0);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	wait_ev(l, POLLIN, 2000);
	memset(&got, 0, sizeof got);
	len = 16;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("len = %u family = %d port = %s", (unsigned)len, got.sin6_family,
	    ntohs(got.sin6_port) ? "set" : "0");
	close(c);
	close(s);

	section("an IPv6 listener refuses an IPv4 address");
	c = socket(AF_INET, SOCK_STREAM, 0);
	sa_srv(&sin, port);
	R(connect(c, (struct sockaddr *)&sin, sizeof sin));
	close(c);
	close(l);

	section("dual stack: [::] with IPV6_V6ONLY 0");
	memset(&sa, 0, sizeof sa);
	sa.sin6_family = AF_INET6;
	l = listener6(&sa, 0, "LD", &port);
	names("listener", l);
	say("listener IPV6_V6ONLY = %d", v6only(l));
	c = RFD(socket(AF_INET, SOCK_STREAM, 0));
	sa_srv(&sin, port);
	R(connect(c, (struct sockaddr *)&sin, sizeof sin));
	wait_ev(l, POLLIN, 2000);
	len = sizeof got;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accepted peer = %s len %u", fmt_sa((struct sockaddr *)&got, len), (unsigned)len);
	names("accepted", s);
	say("accepted IPV6_V6ONLY = %d", v6only(s));
	echo(c, s);
	close(c);
	close(s);
	section("dual stack: a v4-mapped connect from an AF_INET6 socket");
	c = RFD(socket(AF_INET6, SOCK_STREAM, 0));
	sa_mapped(&sa, conf_srv_ip, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	names("client", c);
	wait_ev(l, POLLIN, 2000);
	len = sizeof got;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accepted peer = %s", fmt_sa((struct sockaddr *)&got, len));
	echo(c, s);
	close(c);
	close(s);
	section("dual stack: an IPv6 client");
	c = socket(AF_INET6, SOCK_STREAM, 0);
	sa_srv6(&sa, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	wait_ev(l, POLLIN, 2000);
	len = sizeof got;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accepted peer = %s", fmt_sa((struct sockaddr *)&got, len));
	names("accepted", s);
	close(c);
	close(s);
	close(l);

	section("IPv6 only: [::] with IPV6_V6ONLY 1");
	memset(&sa, 0, sizeof sa);
	sa.sin6_family = AF_INET6;
	l = listener6(&sa, 1, "LO", &port);
	say("listener IPV6_V6ONLY = %d", v6only(l));
	c = socket(AF_INET, SOCK_STREAM, 0);
	sa_srv(&sin, port);
	R(connect(c, (struct sockaddr *)&sin, sizeof sin));
	close(c);
	c = socket(AF_INET6, SOCK_STREAM, 0);
	R(setsockopt(c, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
	sa_mapped(&sa, conf_srv_ip, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	close(c);
	c = socket(AF_INET6, SOCK_STREAM, 0);
	sa_srv6(&sa, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	wait_ev(l, POLLIN, 2000);
	len = sizeof got;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accepted peer = %s", fmt_sa((struct sockaddr *)&got, len));
	say("accepted IPV6_V6ONLY = %d", v6only(s));
	echo(c, s);
	close(c);
	close(s);
	close(l);

	section("a v4-mapped bind");
	sa_mapped(&sa, conf_srv_ip, 0);
	l = listener6(&sa, -1, "LM", &port);
	names("listener", l);
	c = socket(AF_INET, SOCK_STREAM, 0);
	sa_srv(&sin, port);
	R(connect(c, (struct sockaddr *)&sin, sizeof sin));
	wait_ev(l, POLLIN, 2000);
	len = sizeof got;
	s = RFD(accept(l, (struct sockaddr *)&got, &len));
	say("accepted peer = %s", fmt_sa((struct sockaddr *)&got, len));
	names("accepted", s);
	close(c);
	close(s);
	c = socket(AF_INET6, SOCK_STREAM, 0);
	sa_srv6(&sa, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	close(c);
	close(l);

	return conf_end();
}
