/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_io: the data calls: read/readv/recv/recvfrom/recvmsg and
 * write/writev/send/sendto/sendmsg, MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL,
 * MSG_TRUNC, EAGAIN, FIONREAD, a send buffer filled to EAGAIN and drained.
 *
 * Buffers are fixed-size arrays so that a -D_FORTIFY_SOURCE build routes
 * the reads through __read_chk, __recv_chk and __recvfrom_chk.
 *
 * fsconf:variant fortify
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <limits.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

/* show prints what a read returned, with the bytes for small reads. */
static void show(const char *label, ssize_t n, const char *buf)
{
	if (n < 0)
		printf("%s = -1 %s\n", label, errname(errno));
	else
		printf("%s = %zd \"%.*s\"\n", label, n, (int)(n > 40 ? 40 : n), buf);
}

/* arrive waits until fd has n bytes queued (FIONREAD), so the call under
 * test then sees all of them whichever stack delivered them. */
static void arrive(int fd, int n)
{
	double deadline = now_ms() + 2000;
	int q = 0;

	while (now_ms() < deadline) {
		if (ioctl(fd, FIONREAD, &q) == 0 && q >= n)
			return;
		wait_ev(fd, POLLIN, 10);
		usleep(2000);
	}
	die("arrive: %d of %d bytes after 2 s", q, n);
}

/* A length gcc cannot see through, so that fortified builds call the
 * __*_chk entry points instead of checking at compile time. */
static volatile size_t v64 = 64;

int main(void)
{
	char buf[64], b1[4], b2[8];
	int l, c, s, port, q;
	ssize_t n;

	conf_init("t_io", "read/write families, MSG_PEEK/DONTWAIT/WAITALL, EAGAIN, FIONREAD");
	tcp_pair(&l, &port, &c, &s);
	note_port(port, "L1");

	section("write / read");
	R(write(c, "hello", 5));
	arrive(s, 5);
	q = -1;
	R(ioctl(s, FIONREAD, &q));
	say("FIONREAD = %d", q);
	n = read(s, buf, v64);
	show("read(s, buf, 64)", n, buf);
	R(write(c, "abcdefgh", 8));
	arrive(s, 8);
	n = read(s, buf, 3);
	show("read(s, buf, 3)", n, buf);
	n = read(s, buf, v64);
	show("read(s, buf, 64)", n, buf);
	R(write(c, "", 0));
	R(read(s, buf, 0));
	n = recv(s, buf, v64, MSG_DONTWAIT);
	show("recv MSG_DONTWAIT on an empty socket", n, buf);

	section("writev / readv");
	{
		struct iovec w[3] = { { "one", 3 }, { "", 0 }, { "-two-three", 10 } };
		struct iovec r[2] = { { b1, sizeof b1 }, { b2, sizeof b2 } };

		R(writev(c, w, 3));
		arrive(s, 13);
		n = readv(s, r, 2);
		printf("readv = %zd \"%.*s\" \"%.*s\"\n", n, 4, b1, 8, b2);
		n = read(s, buf, v64);
		show("read rest", n, buf);
		R(writev(c, w, 0));
		/* volatile: the counts are wrong on purpose, out of gcc's sight */
		volatile int minus_one = -1, iov_max_plus_1 = IOV_MAX + 1;

		R(writev(c, w, minus_one));
		R(writev(c, w, iov_max_plus_1));
	}

	section("send / recv");
	R(send(c, "peekaboo", 8, 0));
	arrive(s, 8);
	n = recv(s, buf, 4, MSG_PEEK);
	show("recv 4 MSG_PEEK", n, buf);
	n = recv(s, buf, v64, MSG_PEEK);
	show("recv 64 MSG_PEEK", n, buf);
	q = -1;
	ioctl(s, FIONREAD, &q);
	say("FIONREAD after peeks = %d", q);
	n = recv(s, buf, v64, 0);
	show("recv 64", n, buf);
	n = recv(s, buf, v64, MSG_PEEK | MSG_DONTWAIT);
	show("recv MSG_PEEK|MSG_DONTWAIT on an empty socket", n, buf);
	R(send(c, "0123456789", 10, MSG_DONTWAIT));
	arrive(s, 10);
	n = recv(s, buf, 4, MSG_TRUNC);
	printf("recv 4 MSG_TRUNC = %zd\n", n);
	n = recv(s, buf, v64, 0);
	show("recv after MSG_TRUNC", n, buf);

	section("MSG_WAITALL across two writes");
	R(send(c, "part1", 5, 0));
	R(send(c, "part2", 5, 0));
	n = recv(s, buf, 10, MSG_WAITALL);
	show("recv 10 MSG_WAITALL", n, buf);
	R(send(c, "xyz", 3, 0));
	arrive(s, 3);
	n = recv(s, buf, 3, MSG_WAITALL | MSG_DONTWAIT);
	show("recv 3 MSG_WAITALL|MSG_DONTWAIT with 3 queued", n, buf);
	n = recv(s, buf, 3, MSG_WAITALL | MSG_DONTWAIT);
	show("recv 3 MSG_WAITALL|MSG_DONTWAIT, empty", n, buf);

	section("sendto / recvfrom");
	{
		struct sockaddr_in from, to;
		socklen_t fl = sizeof from;

		R(sendto(c, "st", 2, 0, NULL, 0));
		arrive(s, 2);
		memset(&from, 0x55, sizeof from);
		n = recvfrom(s, buf, v64, 0, (struct sockaddr *)&from, &fl);
		show("recvfrom", n, buf);
		say("recvfrom addrlen = %u", (unsigned)fl);
		sa_srv(&to, port);
		R(sendto(c, "st2", 3, 0, (struct sockaddr *)&to, sizeof to));
		arrive(s, 3);
		n = recvfrom(s, buf, v64, 0, NULL, NULL);
		show("recvfrom NULL address", n, buf);
		fl = sizeof from;
		n = recvfrom(s, buf, v64, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		show("recvfrom MSG_DONTWAIT on an empty socket", n, buf);
	}

	section("sendmsg / recvmsg");
	{
		struct iovec w[2] = { { "msg-", 4 }, { "parts", 5 } };
		struct iovec r[2] = { { b1, sizeof b1 }, { b2, sizeof b2 } };
		struct sockaddr_in name;
		struct msghdr m;

		memset(&m, 0, sizeof m);
		m.msg_iov = w;
		m.msg_iovlen = 2;
		R(sendmsg(c, &m, 0));
		arrive(s, 9);
		memset(&m, 0, sizeof m);
		m.msg_name = &name;
		m.msg_namelen = sizeof name;
		m.msg_iov = r;
		m.msg_iovlen = 2;
		m.msg_flags = 0x7fff0000;
		n = recvmsg(s, &m, 0);
		printf("recvmsg = %zd \"%.*s\" \"%.*s\" namelen=%u flags=0x%x controllen=%zu\n", n, 4, b1,
		       (int)(n > 4 ? n - 4 : 0), b2, (unsigned)m.msg_namelen, (unsigned)m.msg_flags,
		       (size_t)m.msg_controllen);
		memset(&m, 0, sizeof m);
		m.msg_iov = r;
		m.msg_iovlen = 2;
		R(recvmsg(s, &m, MSG_DONTWAIT));
		m.msg_iov = w;
		R(sendmsg(c, &m, MSG_DONTWAIT | MSG_NOSIGNAL));
		arrive(s, 9);
		n = recv(s, buf, v64, 0);
		show("recv after sendmsg MSG_DONTWAIT", n, buf);
	}

	section("sendmmsg / recvmmsg on a stream socket");
	{
		struct iovec w1 = { "mm-one|", 7 }, w2 = { "mm-two", 6 };
		struct mmsghdr out[2], in[2];
		char r1[8], r2[32];
		struct iovec v1 = { r1, sizeof r1 }, v2 = { r2, sizeof r2 };

		memset(out, 0, sizeof out);
		out[0].msg_hdr.msg_iov = &w1;
		out[0].msg_hdr.msg_iovlen = 1;
		out[1].msg_hdr.msg_iov = &w2;
		out[1].msg_hdr.msg_iovlen = 1;
		R(sendmmsg(c, out, 2, 0));
		say("msg_len: %u %u", out[0].msg_len, out[1].msg_len);
		arrive(s, 13);
		memset(in, 0, sizeof in);
		in[0].msg_hdr.msg_iov = &v1;
		in[0].msg_hdr.msg_iovlen = 1;
		in[1].msg_hdr.msg_iov = &v2;
		in[1].msg_hdr.msg_iovlen = 1;
		R(recvmmsg(s, in, 2, MSG_DONTWAIT, NULL));
		say("msg_len: %u %u \"%.*s\" \"%.*s\"", in[0].msg_len, in[1].msg_len, (int)in[0].msg_len, r1,
		    (int)in[1].msg_len, r2);
		R(recvmmsg(s, in, 2, MSG_DONTWAIT, NULL));
		R(sendmmsg(c, out, 0, 0));
	}

	section("EAGAIN on a full send buffer, then drained");
	{
		static char chunk[16];
		long total = fill_sndbuf(c);
		int ev;

		say("send buffer filled (the peer not reading): %d", total > 0);
		n = R(send(c, chunk, 1, MSG_DONTWAIT));
		if (n > 0)
			total += n;
		R(write(c, chunk, 0));
		ev = wait_ev(c, POLLOUT, 0);
		say("poll POLLOUT when full = %s", fmt_poll(ev));
		{
			long drained = 0;
			double deadline = now_ms() + 5000;

			while (drained < total && now_ms() < deadline) {
				static char sink[65536];
				ssize_t r;

				if (!wait_ev(s, POLLIN, 200))
					continue;
				r = recv(s, sink, sizeof sink, MSG_DONTWAIT);
				if (r > 0)
					drained += r;
			}
			say("peer drained everything written: %d", drained == total);
		}
		ev = wait_ev(c, POLLOUT, 2000);
		say("poll POLLOUT after drain = %s", fmt_poll(ev));
	}

	section("FIONREAD on a listener and on a pipe");
	q = -1;
	R(ioctl(l, FIONREAD, &q));
	{
		int p[2];

		if (pipe(p) < 0)
			die("pipe");
		R(write(p[1], "pipe", 4));
		R(ioctl(p[0], FIONREAD, &q));
		say("pipe FIONREAD = %d", q);
		n = read(p[0], buf, v64);
		show("pipe read", n, buf);
		close(p[0]);
		close(p[1]);
	}

	close(c);
	close(s);
	close(l);
	return conf_end();
}
