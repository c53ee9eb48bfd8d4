/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_sendfile: sendfile and sendfile64 from a regular file to a socket, with
 * an offset pointer and with the file position, a count past EOF, and the
 * errors for a socket as the source and a bad offset.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <sys/sendfile.h>

#define FILE_LEN (256 * 1024 + 123)

static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 7 + i / 251) & 0xff);
}

/* verify reads n bytes from s and reports whether they are the file's
 * bytes from offset off. */
static int verify(int s, size_t off, size_t n)
{
	static unsigned char buf[FILE_LEN];
	size_t got = read_n(s, buf, n, 3000);

	if (got != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (buf[i] != pattern(off + i))
			return 0;
	return 1;
}

int main(void)
{
	char path[] = "/tmp/fsconf-sendfile-XXXXXX";
	static unsigned char data[FILE_LEN];
	int f, c, s, big = 4 * 1024 * 1024;
	off_t off;
	ssize_t n;

	conf_init("t_sendfile", "sendfile/sendfile64 from a file");
	f = mkstemp(path);
	if (f < 0)
		die("mkstemp");
	unlink(path);
	for (size_t i = 0; i < FILE_LEN; i++)
		data[i] = pattern(i);
	if (write(f, data, FILE_LEN) != FILE_LEN)
		die("write file");
	tcp_pair(NULL, NULL, &c, &s);
	setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
	setsockopt(c, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);

	section("sendfile with an offset pointer");
	off = 0;
	lseek(f, 7, SEEK_SET);
	n = sendfile(s, f, &off, 1000);
	say("sendfile(s, f, &off=0, 1000) = %zd, off = %lld", n, (long long)off);
	say("peer got the file's bytes: %d", verify(c, 0, 1000));
	say("file position (7) unchanged: %d", lseek(f, 0, SEEK_CUR) == 7);
	off = 5000;
	n = sendfile64(s, f, (off64_t *)&off, 3000);
	say("sendfile64(s, f, &off=5000, 3000) = %zd, off = %lld", n, (long long)off);
	say("peer got the file's bytes: %d", verify(c, 5000, 3000));

	section("sendfile of a large range, looped until done");
	{
		size_t total = 0;
		int rounds = 0, ok = 1;
		static unsigned char buf[FILE_LEN];
		size_t got = 0;

		off = 0;
		fcntl(s, F_SETFL, O_NONBLOCK);
		/* The peer drains as we go, so this works whatever the buffer sizes. */
		while ((total < FILE_LEN || got < FILE_LEN) && rounds++ < 100000) {
			if (total < FILE_LEN) {
				n = sendfile(s, f, &off, FILE_LEN - total);
				if (n > 0)
					total += (size_t)n;
				else if (n < 0 && errno != EAGAIN) {
					ok = 0;
					break;
				}
			}
			n = recv(c, buf + got, FILE_LEN - got, MSG_DONTWAIT);
			if (n > 0)
				got += (size_t)n;
			else if (n < 0 && errno == EAGAIN)
				wait_ev(c, POLLIN, 10);
		}
		fcntl(s, F_SETFL, 0);
		for (size_t i = 0; i < got && ok; i++)
			if (buf[i] != pattern(i))
				ok = 0;
		say("sent %zu of %d, off = %lld, received %zu, bytes match: %d", total, FILE_LEN, (long long)off,
		    got, ok);
	}

	section("non-blocking sendfile into a full buffer (nginx's sendfile path)");
	{
		static char sink[65536];
		long total, drained = 0;
		double deadline;
		int fl = fcntl(s, F_GETFL);

		fcntl(s, F_SETFL, fl | O_NONBLOCK);
		total = fill_sndbuf(s);
		say("filled: %d", total > 0);
		off = 4096;
		R(sendfile(s, f, &off, 1000));
		say("off unchanged: %d", off == 4096);
		deadline = now_ms() + 5000;
		while (drained < total && now_ms() < deadline) {
			ssize_t r;

			if (!wait_ev(c, POLLIN, 200))
				continue;
			r = recv(c, sink, sizeof sink, MSG_DONTWAIT);
			if (r > 0)
				drained += r;
		}
		say("peer drained the filler: %d", drained == total);
		say("POLLOUT after the drain: %s", fmt_poll(wait_ev(s, POLLOUT, 2000)));
		n = sendfile(s, f, &off, 1000);
		say("sendfile then = %zd, off = %lld", n, (long long)off);
		say("peer got the file's bytes: %d", verify(c, 4096, 1000));
		fcntl(s, F_SETFL, fl);
	}

	section("sendfile from the file position");
	lseek(f, 100, SEEK_SET);
	R(sendfile(s, f, NULL, 50));
	say("file position after = %lld", (long long)lseek(f, 0, SEEK_CUR));
	say("peer got the file's bytes: %d", verify(c, 100, 50));

	section("edges");
	off = FILE_LEN - 10;
	n = sendfile(s, f, &off, 100);
	say("sendfile past EOF = %zd, off = %lld", n, (long long)off);
	say("peer got the file's bytes: %d", verify(c, FILE_LEN - 10, 10));
	off = FILE_LEN;
	R(sendfile(s, f, &off, 100));
	off = 0;
	R(sendfile(s, f, &off, 0));
	off = -1;
	R(sendfile(s, f, &off, 10));
	off = 0;
	R(sendfile(s, c, &off, 10));
	R(sendfile(s, f, conf_badptr, 10));
	{
		int ro = open("/dev/null", O_WRONLY);

		off = 0;
		R(sendfile(s, ro, &off, 10));
		close(ro);
	}
	off = 0;
	R(sendfile(-1, f, &off, 10));

	section("sendfile after the peer closed");
	R(close(c));
	wait_ev(s, POLLRDHUP, 2000);
	off = 0;
	n = sendfile(s, f, &off, 10);
	say("first sendfile after FIN = %zd", n);
	{
		double deadline = now_ms() + 2000;

		while (!(wait_ev(s, POLLIN, 100) & POLLERR) && now_ms() < deadline)
			;
	}
	{
		int p0 = (int)conf_sigcount[SIGPIPE];

		R(sendfile(s, f, &off, 10));
		say("SIGPIPE raised: %d", (int)conf_sigcount[SIGPIPE] - p0);
	}
	close(s);
	close(f);
	return conf_end();
}
