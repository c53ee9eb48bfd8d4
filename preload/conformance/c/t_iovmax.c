/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_iovmax: more than 64 iovecs, up to IOV_MAX (1024) — writev/readv/
 * sendmsg/recvmsg with 1024 one-byte iovecs, IOV_MAX + 1 (EINVAL for
 * readv/writev, EMSGSIZE for sendmsg/recvmsg), a blocking writev of 200
 * iovecs larger than every buffer on the way completing in full, and
 * recvmsg MSG_WAITALL over 100 iovecs collecting data sent in pieces.
 * All byte-exact.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <limits.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

enum { MANY = 1024, BIG_N = 200, BIG_LEN = 8192, WA_N = 100, WA_LEN = 1000 };

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + i / 251);
}

static int queued(int s, int want)
{
	double deadline = now_ms() + 2000;
	int n = 0;

	for (;;) {
		if (ioctl(s, FIONREAD, &n) < 0)
			die("FIONREAD");
		if (n >= want || now_ms() > deadline)
			return n;
		usleep(5000);
	}
}

struct reader {
	int fd;
	size_t want, got, bad;
};

/* Reads want bytes slowly (small reads, pauses) and checks the pattern. */
static void *slow_reader(void *arg)
{
	struct reader *r = arg;
	unsigned char buf[4096];

	while (r->got < r->want) {
		ssize_t n = read(r->fd, buf, sizeof buf);

		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			r->bad += buf[i] != pattern(r->got + (size_t)i);
		r->got += (size_t)n;
		if ((r->got / sizeof buf) % 64 == 0)
			usleep(2000);
	}
	return NULL;
}

struct writer {
	int fd;
	size_t len;
};

/* Writes len bytes of the pattern in 7 pieces, 30 ms apart. */
static void *piece_writer(void *arg)
{
	struct writer *w = arg;
	static unsigned char buf[WA_N * WA_LEN];
	size_t off = 0, piece = w->len / 7 + 1;

	for (size_t i = 0; i < w->len; i++)
		buf[i] = pattern(i);
	while (off < w->len) {
		size_t n = w->len - off < piece ? w->len - off : piece;

		usleep(30000);
		write_all(w->fd, buf + off, n);
		off += n;
	}
	return NULL;
}

int main(void)
{
	static unsigned char one[MANY], big[BIG_N][BIG_LEN], wa[WA_N][WA_LEN];
	static struct iovec iov[MANY + 1];
	int l, port, c, s;

	conf_init("t_iovmax", "more than 64 iovecs, up to IOV_MAX");
	tcp_pair(&l, &port, &c, &s);
	say("IOV_MAX = %d", IOV_MAX);

	section("1024 one-byte iovecs");
	for (int i = 0; i < MANY; i++) {
		one[i] = pattern((size_t)i);
		iov[i].iov_base = &one[i];
		iov[i].iov_len = 1;
	}
	R(writev(c, iov, MANY));
	say("queued: %d", queued(s, MANY));
	memset(one, 0, sizeof one);
	R(readv(s, iov, MANY));
	{
		int bad = 0;

		for (int i = 0; i < MANY; i++)
			bad += one[i] != pattern((size_t)i);
		say("byte-exact: %s", bad ? "no" : "yes");
	}
	{
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = MANY };

		for (int i = 0; i < MANY; i++)
			one[i] = pattern((size_t)i + 5);
		R(sendmsg(c, &m, 0));
		say("queued: %d", queued(s, MANY));
		memset(one, 0, sizeof one);
		R(recvmsg(s, &m, 0));
		{
			int bad = 0;

			for (int i = 0; i < MANY; i++)
				bad += one[i] != pattern((size_t)i + 5);
			say("byte-exact: %s", bad ? "no" : "yes");
		}
	}

	section("IOV_MAX + 1");
	iov[MANY].iov_base = &one[0];
	iov[MANY].iov_len = 1;
	R(writev(c, iov, MANY + 1));
	R(readv(s, iov, MANY + 1));
	{
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = MANY + 1 };

		R(sendmsg(c, &m, 0));
		R(recvmsg(s, &m, MSG_DONTWAIT));
	}

	section("a blocking writev of 200 iovecs, more than the buffers hold");
	{
		struct reader r = { s, (size_t)BIG_N * BIG_LEN, 0, 0 };
		pthread_t t;

		for (int i = 0; i < BIG_N; i++) {
			for (int j = 0; j < BIG_LEN; j++)
				big[i][j] = pattern((size_t)i * BIG_LEN + (size_t)j);
			iov[i].iov_base = big[i];
			iov[i].iov_len = BIG_LEN;
		}
		pthread_create(&t, NULL, slow_reader, &r);
		R(writev(c, iov, BIG_N));
		pthread_join(t, NULL);
		say("reader got %zu, %zu bad bytes", r.got, r.bad);
	}
	{
		struct reader r = { s, (size_t)BIG_N * BIG_LEN, 0, 0 };
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = BIG_N };
		pthread_t t;

		pthread_create(&t, NULL, slow_reader, &r);
		R(sendmsg(c, &m, 0));
		pthread_join(t, NULL);
		say("reader got %zu, %zu bad bytes", r.got, r.bad);
	}

	section("recvmsg MSG_WAITALL over 100 iovecs, data in 7 pieces");
	{
		struct writer w = { c, (size_t)WA_N * WA_LEN };
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = WA_N };
		size_t bad = 0;
		pthread_t t;

		for (int i = 0; i < WA_N; i++) {
			iov[i].iov_base = wa[i];
			iov[i].iov_len = WA_LEN;
		}
		pthread_create(&t, NULL, piece_writer, &w);
		R(recvmsg(s, &m, MSG_WAITALL));
		pthread_join(t, NULL);
		for (int i = 0; i < WA_N; i++)
			for (int j = 0; j < WA_LEN; j++)
				bad += wa[i][j] != pattern((size_t)i * WA_LEN + (size_t)j);
		say("byte-exact: %s", bad ? "no" : "yes");
	}

	close(c);
	close(s);
	close(l);
	return conf_end();
}
