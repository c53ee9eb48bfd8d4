/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_splice: splice(2) between a TCP socket and a pipe, both ways, the way
 * haproxy's option splice-* uses it (non-blocking sockets, SPLICE_F_MOVE |
 * SPLICE_F_NONBLOCK, pipes of its own): bytes intact, EAGAIN on an empty
 * socket, a full pipe and an empty pipe, nothing lost on a full pipe, 0 at
 * the peer's FIN and from a pipe without writers, 1 MiB looped through
 * socket -> pipe -> socket, and the argument errors (offsets, no pipe at
 * either end, wrong pipe end, bad flags), EPIPE + SIGPIPE after the peer
 * left.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <sys/ioctl.h>

#define BIG (1024 * 1024)
#define SPL (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)

static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 13 + i / 241) & 0xff);
}

/* arrive waits until fd has at least n bytes queued (FIONREAD). */
static int arrive(int fd, int n)
{
	double deadline = now_ms() + 3000;
	int q = 0;

	while (now_ms() < deadline) {
		if (ioctl(fd, FIONREAD, &q) == 0 && q >= n)
			return 1;
		wait_ev(fd, POLLIN, 20);
	}
	return 0;
}

static int check(const unsigned char *b, size_t off, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pattern(off + i))
			return 0;
	return 1;
}

int main(void)
{
	static unsigned char buf[BIG], got[BIG];
	int c, s, p[2], q[2], f;
	loff_t off = 0;
	ssize_t n;

	conf_init("t_splice", "splice between sockets and pipes");
	for (size_t i = 0; i < BIG; i++)
		buf[i] = pattern(i);
	tcp_pair(NULL, NULL, &c, &s);
	if (pipe2(p, O_NONBLOCK) < 0 || pipe(q) < 0)
		die("pipe");
	fcntl(s, F_SETFL, O_NONBLOCK);

	section("socket -> pipe");
	R(splice(s, NULL, p[1], NULL, 65536, SPL));
	write_all(c, buf, 1000);
	say("arrived: %d", arrive(s, 1000));
	R(splice(s, NULL, p[1], NULL, 65536, SPL));
	n = read(p[0], got, sizeof got);
	say("pipe holds %zd bytes, intact: %d", n, n == 1000 && check(got, 0, 1000));
	write_all(c, buf, 3000);
	say("arrived: %d", arrive(s, 3000));
	R(splice(s, NULL, p[1], NULL, 100, SPL));
	R(splice(s, NULL, q[1], NULL, 65536, SPLICE_F_MOVE));
	n = read(p[0], got, sizeof got);
	say("first pipe: %zd bytes, intact: %d", n, n == 100 && check(got, 0, 100));
	n = read(q[0], got, sizeof got);
	say("second pipe: %zd bytes, intact: %d", n, n == 2900 && check(got, 100, 2900));

	section("socket -> full pipe loses nothing");
	{
		long filled = 0;

		while ((n = write(p[1], buf, 4096)) > 0)
			filled += n;
		say("pipe filled: %d", filled > 0);
		write_all(c, buf, 500);
		say("arrived: %d", arrive(s, 500));
		R(splice(s, NULL, p[1], NULL, 65536, SPL));
		while (read(p[0], got, sizeof got) > 0)
			;
		R(splice(s, NULL, p[1], NULL, 65536, SPL));
		n = read(p[0], got, sizeof got);
		say("then %zd bytes, intact: %d", n, n == 500 && check(got, 0, 500));
	}

	section("pipe -> socket");
	R(splice(p[0], NULL, s, NULL, 65536, SPL));
	write_all(p[1], buf, 5000);
	R(splice(p[0], NULL, s, NULL, 65536, SPL));
	say("peer got them: %d", read_n(c, got, 5000, 3000) == 5000 && check(got, 0, 5000));
	write_all(q[1], buf, 3000);
	R(splice(q[0], NULL, s, NULL, 1000, 0));
	R(splice(q[0], NULL, s, NULL, 65536, SPLICE_F_MORE));
	say("peer got them: %d", read_n(c, got, 3000, 3000) == 3000 && check(got, 0, 3000));

	section("1 MiB: peer -> socket -> pipe -> socket -> peer, non-blocking");
	{
		size_t sent = 0, back = 0, inpipe = 0, rounds = 0;
		int ok = 1;

		fcntl(c, F_SETFL, O_NONBLOCK);
		while (back < BIG && rounds++ < 200000 && ok) {
			if (sent < BIG) {
				n = write(c, buf + sent, BIG - sent);
				if (n > 0)
					sent += (size_t)n;
			}
			n = splice(s, NULL, p[1], NULL, 65536, SPL);
			if (n > 0)
				inpipe += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				ok = 0;
			if (inpipe > 0) {
				n = splice(p[0], NULL, s, NULL, inpipe, SPL);
				if (n > 0)
					inpipe -= (size_t)n;
				else if (n < 0 && errno != EAGAIN)
					ok = 0;
			}
			n = read(c, got + back, BIG - back);
			if (n > 0)
				back += (size_t)n;
			else if (n < 0 && errno == EAGAIN)
				wait_ev(c, POLLIN, 5);
		}
		fcntl(c, F_SETFL, 0);
		say("no error: %d, sent %zu, back %zu, intact: %d", ok, sent, back, back == BIG && check(got, 0, BIG));
	}

	section("errors");
	write_all(c, buf, 10);
	say("arrived: %d", arrive(s, 10));
	R(splice(s, &off, p[1], NULL, 10, SPL));
	R(splice(s, NULL, p[1], &off, 10, SPL));
	R(splice(p[0], &off, s, NULL, 10, SPL));
	R(splice(p[0], NULL, s, &off, 10, SPL));
	R(splice(s, NULL, c, NULL, 10, SPL));
	R(splice(s, NULL, p[0], NULL, 10, SPL));
	R(splice(p[1], NULL, s, NULL, 10, SPL));
	R(splice(s, NULL, p[1], NULL, 10, 0x100));
	R(splice(s, NULL, p[1], NULL, 0, SPL));
	f = open("/dev/null", O_WRONLY);
	R(splice(s, NULL, f, NULL, 10, SPL));
	close(f);
	R(splice(s, NULL, -1, NULL, 10, SPL));
	R(splice(-1, NULL, p[1], NULL, 10, SPL));
	R(splice(s, NULL, p[1], NULL, 65536, SPL));
	n = read(p[0], got, sizeof got);
	say("the 10 bytes still came through: %d", n == 10 && check(got, 0, 10));

	section("EOF");
	R(shutdown(c, SHUT_WR));
	wait_ev(s, POLLRDHUP, 2000);
	R(splice(s, NULL, p[1], NULL, 65536, SPL));
	{
		int r[2];

		if (pipe(r) < 0)
			die("pipe");
		close(r[1]);
		R(splice(r[0], NULL, s, NULL, 100, 0));
		close(r[0]);
	}

	section("pipe -> socket after the peer left");
	R(close(c));
	write_all(q[1], buf, 10);
	n = splice(q[0], NULL, s, NULL, 10, SPL);
	say("first splice after the peer's close = %zd", n);
	{
		/* the peer's reset shows at once on the kernel; a daemon serving
		 * the whole suite at once on a loaded machine once took over 2 s */
		double deadline = now_ms() + 10000;

		while (!(wait_ev(s, POLLIN, 100) & POLLERR) && now_ms() < deadline)
			;
	}
	write_all(q[1], buf, 10);
	{
		int p0 = (int)conf_sigcount[SIGPIPE];

		R(splice(q[0], NULL, s, NULL, 10, SPL));
		say("SIGPIPE raised: %d", (int)conf_sigcount[SIGPIPE] - p0);
	}
	close(s);
	return conf_end();
}
