/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_fdops: fcntl (O_NONBLOCK, FD_CLOEXEC, F_DUPFD, fcntl64), ioctl (FIONBIO,
 * FIONREAD, an unknown request), dup/dup2/dup3 of a socket and what closing
 * one copy does: the connection stays open until the last copy goes, and
 * O_NONBLOCK is shared by the copies while FD_CLOEXEC is not; a socket's fd
 * number reused (after close, dup2 over it, close_range) by a pipe.
 */
#include "conf.h"

#include <sys/ioctl.h>
#include <termios.h>

int fcntl64(int fd, int cmd, ...);

/* peer_at reports what the peer fd sees within ms: revents and what one
 * read takes.  peer_sees is for a step after which the kernel delivers
 * something (bytes, FIN), so it waits up to 2 s for it: under the shim the
 * daemon moves it, later than loopback on a loaded machine.  peer_quiet is
 * for a step after which nothing should arrive, so 150 ms of nothing is
 * the answer. */
static void peer_at(const char *label, int fd, int ms)
{
	int ev = wait_ev(fd, POLLIN | POLLRDHUP, ms);
	char buf[16];
	ssize_t n = 0;

	if (ev & POLLIN)
		n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
	printf("%s: peer revents = %s, read = %zd\n", label, fmt_poll(ev), n);
}

static void peer_sees(const char *label, int fd)
{
	peer_at(label, fd, 2000);
}

static void peer_quiet(const char *label, int fd)
{
	peer_at(label, fd, 150);
}

int main(void)
{
	char buf[64];
	int l, c, s, d, fl, on, q, spare;

	conf_init("t_fdops", "fcntl, ioctl FIONBIO/FIONREAD, dup/dup2/dup3");
	tcp_pair(&l, NULL, &c, &s);

	section("fcntl O_NONBLOCK");
	fl = (int)R(fcntl(s, F_GETFL));
	say("access mode O_RDWR: %d, O_NONBLOCK: %d", (fl & O_ACCMODE) == O_RDWR, !!(fl & O_NONBLOCK));
	R(fcntl(s, F_SETFL, fl | O_NONBLOCK));
	show_flags("after F_SETFL O_NONBLOCK", s);
	R(read(s, buf, sizeof buf));
	R(fcntl(s, F_SETFL, fl));
	show_flags("after F_SETFL 0", s);
	R(fcntl64(s, F_SETFL, O_NONBLOCK | O_APPEND));
	fl = (int)R(fcntl64(s, F_GETFL));
	say("fcntl64 F_GETFL: O_NONBLOCK %d", !!(fl & O_NONBLOCK));
	R(fcntl(s, F_SETFL, 0));

	section("fcntl FD_CLOEXEC");
	R(fcntl(s, F_GETFD));
	R(fcntl(s, F_SETFD, FD_CLOEXEC));
	R(fcntl(s, F_GETFD));
	show_flags("after F_SETFD FD_CLOEXEC", s);
	R(fcntl(s, F_SETFD, 0));
	R(fcntl(s, 9999));

	section("ioctl FIONBIO");
	on = 1;
	R(ioctl(s, FIONBIO, &on));
	show_flags("after FIONBIO 1", s);
	R(recv(s, buf, sizeof buf, 0));
	on = 0;
	R(ioctl(s, FIONBIO, &on));
	show_flags("after FIONBIO 0", s);
	R(ioctl(s, FIONBIO, conf_badptr));

	section("ioctl FIONREAD and others");
	q = -1;
	R(ioctl(s, FIONREAD, &q));
	say("FIONREAD empty = %d", q);
	R(write(c, "twelve bytes", 12));
	wait_ev(s, POLLIN, 2000);
	R(ioctl(s, FIONREAD, &q));
	say("FIONREAD = %d", q);
	R(ioctl(s, FIONREAD, conf_badptr));
	R(read(s, buf, sizeof buf));
	{
		struct termios tio;

		R(ioctl(s, TCGETS, &tio));
	}
	R(ioctl(s, TIOCOUTQ, &q)); /* SIOCOUTQ */
	say("SIOCOUTQ = %d", q);

	section("dup: the copy shares the connection");
	d = RFD(dup(s));
	R(write(d, "via dup", 7));
	say("peer got: %zu", read_n(c, buf, 7, 2000));
	R(fcntl(s, F_SETFD, FD_CLOEXEC));
	show_flags("original after FD_CLOEXEC", s);
	show_flags("dup (FD_CLOEXEC is per fd)", d);
	R(fcntl(d, F_SETFL, O_NONBLOCK));
	show_flags("original after O_NONBLOCK on the dup", s);
	R(fcntl(d, F_SETFL, 0));
	R(fcntl(s, F_SETFD, 0));
	{
		struct sockaddr_in a;
		socklen_t al = sizeof a;

		R(getpeername(d, (struct sockaddr *)&a, &al));
	}
	R(close(s));
	peer_quiet("original closed, dup open", c);
	R(write(d, "still", 5));
	peer_sees("write through the dup", c);
	R(write(c, "back", 4));
	wait_ev(d, POLLIN, 2000);
	R(read(d, buf, sizeof buf));
	R(read(s, buf, sizeof buf));

	section("dup2 and dup3");
	spare = RFD(socket(AF_INET, SOCK_STREAM, 0));
	R(dup2(d, spare) == spare);
	R(write(spare, "dup2", 4));
	peer_sees("write through dup2's copy", c);
	R(dup2(d, d) == d);
	R(dup3(d, d, 0));
	R(dup3(d, spare, 0x1234));
	R(dup3(d, spare, O_CLOEXEC) == spare);
	show_flags("dup3 O_CLOEXEC copy", spare);
	{
		int lo = fcntl(d, F_DUPFD, 0);

		say("F_DUPFD 0: fd %d", lo >= 0);
		show_flags("F_DUPFD copy", lo);
		R(close(lo));
	}
	{
		int hi = fcntl(d, F_DUPFD_CLOEXEC, 200);

		say("F_DUPFD_CLOEXEC 200: >= 200: %d", hi >= 200);
		show_flags("F_DUPFD_CLOEXEC copy", hi);
		R(close(hi));
	}
	R(dup2(d, -1));
	R(dup2(-1, spare));
	R(close(d));
	peer_quiet("one copy left", c);
	R(close(spare));
	peer_sees("all copies closed", c);

	section("a socket's fd number reused by a pipe");
	{
		int n, p2[2], v = 0, cl, sv;
		socklen_t vl = sizeof v;

		if (pipe(p2) < 0)
			die("pipe");
		/* close, then dup2 onto the freed number */
		tcp_pair(NULL, NULL, &cl, &sv);
		n = sv;
		R(close(sv));
		R(dup2(p2[0], n) == n);
		R(getsockopt(n, SOL_SOCKET, SO_TYPE, &v, &vl));
		R(write(p2[1], "p", 1));
		say("poll on the reused number: %s", fmt_poll(wait_ev(n, POLLIN, 2000)));
		R(read(n, buf, sizeof buf));
		R(close(n));
		close(cl);
		/* dup2 straight over a live socket: it is closed */
		tcp_pair(NULL, NULL, &cl, &sv);
		R(dup2(p2[0], sv) == sv);
		R(getsockopt(sv, SOL_SOCKET, SO_TYPE, &v, &vl));
		peer_sees("socket replaced by dup2", cl);
		R(close(sv));
		close(cl);
		/* close_range, then the number reused */
		tcp_pair(NULL, NULL, &cl, &sv);
		R(close_range((unsigned)sv, (unsigned)sv, 0));
		peer_sees("socket closed by close_range", cl);
		R(dup2(p2[0], sv) == sv);
		R(getsockopt(sv, SOL_SOCKET, SO_TYPE, &v, &vl));
		R(write(p2[1], "q", 1));
		say("poll on the reused number: %s", fmt_poll(wait_ev(sv, POLLIN, 2000)));
		R(read(sv, buf, sizeof buf));
		R(close(sv));
		close(cl);
		close(p2[0]);
		close(p2[1]);
	}

	section("closefrom");
	{
		int cl, sv;

		tcp_pair(NULL, NULL, &cl, &sv);
		R(dup2(sv, 600) == 600);
		R(dup2(sv, 601) == 601);
		R(close(sv));
		peer_quiet("copies at 600 and 601 open", cl);
		closefrom(600);
		R(fcntl(600, F_GETFD));
		R(fcntl(601, F_GETFD));
		peer_sees("after closefrom(600)", cl);
		close(cl);
	}

	section("dup of a listener: accept on either copy");
	{
		int ld = dup(l), x;

		{
			struct sockaddr_in sa;
			socklen_t sl = sizeof sa;

			getsockname(l, (struct sockaddr *)&sa, &sl);
			x = tcp_client(ntohs(sa.sin_port));
		}
		R(close(l));
		wait_ev(ld, POLLIN, 2000);
		s = RFD(accept(ld, NULL, NULL));
		close(s);
		close(x);
		close(ld);
	}
	close(c);
	return conf_end();
}
