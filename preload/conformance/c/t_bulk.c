/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_bulk: data integrity and connection churn. Megabytes one way with
 * blocking calls (writer in a thread); both ways at once through
 * non-blocking sockets driven by EPOLLET, read and written to EAGAIN as
 * nginx does; writev/readv with many iovecs; short connections one after
 * another, many connects outstanding at once, and 400 connections open at
 * once (a server's fd count, not a toy's).
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#define ONE_WAY   (8u << 20)
#define BOTH_WAYS (4u << 20)

static unsigned char byte_at(uint32_t seed, size_t i)
{
	uint32_t x = seed ^ (uint32_t)(i / 4093) * 2654435761u;

	return (unsigned char)((x >> 13) ^ i);
}

struct writer {
	int fd;
	size_t len;
	uint32_t seed;
};

static void *blocking_writer(void *arg)
{
	struct writer *w = arg;
	static unsigned char chunk[100000];
	size_t off = 0;

	while (off < w->len) {
		size_t n = w->len - off < sizeof chunk ? w->len - off : sizeof chunk;
		ssize_t r;

		for (size_t i = 0; i < n; i++)
			chunk[i] = byte_at(w->seed, off + i);
		r = write(w->fd, chunk, n);
		if (r <= 0)
			die("blocking writer");
		off += (size_t)r;
	}
	return NULL;
}

struct end {
	int fd;
	const char *name;
	uint32_t out_seed, in_seed;
	size_t sent, got, bad;
	int eof_seen;
};

/* pump moves what it can on one end: write until EAGAIN, read until EAGAIN. */
static void pump(struct end *e, uint32_t events)
{
	static unsigned char buf[65536];

	if (events & EPOLLOUT)
		while (e->sent < BOTH_WAYS) {
			size_t n = BOTH_WAYS - e->sent < sizeof buf ? BOTH_WAYS - e->sent : sizeof buf;
			ssize_t r;

			for (size_t i = 0; i < n; i++)
				buf[i] = byte_at(e->out_seed, e->sent + i);
			r = write(e->fd, buf, n);
			if (r < 0 && errno == EAGAIN)
				break;
			if (r <= 0)
				die("pump write");
			e->sent += (size_t)r;
		}
	if (events & EPOLLIN)
		for (;;) {
			ssize_t r = read(e->fd, buf, sizeof buf);

			if (r < 0 && errno == EAGAIN)
				break;
			if (r < 0)
				die("pump read");
			if (r == 0) {
				e->eof_seen = 1;
				break;
			}
			for (ssize_t i = 0; i < r; i++)
				if (buf[i] != byte_at(e->in_seed, e->got + (size_t)i))
					e->bad++;
			e->got += (size_t)r;
		}
}

int main(void)
{
	int l, c, s, port;

	conf_init("t_bulk", "data integrity and connection churn");
	tcp_pair(&l, &port, &c, &s);

	section("8 MiB one way, blocking");
	{
		struct writer w = { c, ONE_WAY, 1 };
		static unsigned char buf[131072];
		size_t got = 0, bad = 0;
		pthread_t t;

		pthread_create(&t, NULL, blocking_writer, &w);
		while (got < ONE_WAY) {
			ssize_t r = read(s, buf, sizeof buf);

			if (r <= 0)
				break;
			for (ssize_t i = 0; i < r; i++)
				if (buf[i] != byte_at(1, got + (size_t)i))
					bad++;
			got += (size_t)r;
		}
		pthread_join(t, NULL);
		say("received %zu of %u, corrupt bytes: %zu", got, ONE_WAY, bad);
	}

	section("4 MiB each way at once, non-blocking, EPOLLET");
	{
		struct end ends[2] = { { c, "c", 2, 3, 0, 0, 0, 0 }, { s, "s", 3, 2, 0, 0, 0, 0 } };
		int ep = epoll_create1(0), rounds = 0;
		double deadline = now_ms() + 8000;

		fcntl(c, F_SETFL, O_NONBLOCK);
		fcntl(s, F_SETFL, O_NONBLOCK);
		for (int i = 0; i < 2; i++) {
			struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &ends[i] };

			if (epoll_ctl(ep, EPOLL_CTL_ADD, ends[i].fd, &ev) < 0)
				die("epoll_ctl");
		}
		while ((ends[0].got < BOTH_WAYS || ends[1].got < BOTH_WAYS) && now_ms() < deadline) {
			struct epoll_event evs[2];
			int n = epoll_wait(ep, evs, 2, 1000);

			rounds++;
			for (int i = 0; i < n; i++)
				pump(evs[i].data.ptr, evs[i].events);
		}
		for (int i = 0; i < 2; i++)
			say("%s: sent %zu, received %zu of %u, corrupt bytes: %zu", ends[i].name, ends[i].sent,
			    ends[i].got, BOTH_WAYS, ends[i].bad);
		say("finished before the deadline: %d", now_ms() < deadline);
		close(ep);
		fcntl(c, F_SETFL, 0);
		fcntl(s, F_SETFL, 0);
	}

	section("writev and readv with 64 iovecs");
	{
		static char wbuf[64][100], rbuf[64][100];
		struct iovec wv[64], rv[64];
		size_t got = 0;
		int same = 1;

		for (int i = 0; i < 64; i++) {
			memset(wbuf[i], 'A' + i % 26, sizeof wbuf[i]);
			wv[i].iov_base = wbuf[i];
			wv[i].iov_len = (size_t)(i + 37);
			rv[i].iov_base = rbuf[i];
			rv[i].iov_len = (size_t)(100 - i);
		}
		R(writev(c, wv, 64));
		{
			/* Wait until all 4,384 bytes are queued, so one readv
			 * sees them all on any stack. */
			double deadline = now_ms() + 2000;
			int q = 0;

			while (now_ms() < deadline && (ioctl(s, FIONREAD, &q) < 0 || q < 4384))
				usleep(2000);
		}
		{
			ssize_t r = readv(s, rv, 64);

			got = r > 0 ? (size_t)r : 0;
		}
		say("readv = %zu", got);
		{
			size_t k = 0, ri = 0, ro = 0;

			for (int i = 0; i < 64 && same; i++)
				for (size_t j = 0; j < wv[i].iov_len; j++, k++) {
					while (ri < 64 && ro == rv[ri].iov_len) {
						ri++;
						ro = 0;
					}
					if (ri == 64 || rbuf[ri][ro++] != wbuf[i][j]) {
						same = 0;
						break;
					}
				}
			say("bytes land across the read iovecs in order: %d", same && k == got);
		}
	}
	close(c);
	close(s);

	section("200 short connections, one after another");
	{
		int ok = 0;

		for (int i = 0; i < 200; i++) {
			char buf[8];
			int x = tcp_client(port), a = accept_wait(l);

			if (write(x, "GET", 3) == 3 && read_n(a, buf, 3, 2000) == 3 && write(a, "OK", 2) == 2 &&
			    close(a) == 0 && read_n(x, buf, 8, 2000) == 2)
				ok++;
			close(x);
		}
		say("request/response/close cycles completed: %d of 200", ok);
	}

	section("50 connects outstanding at once");
	close(l);
	l = tcp_listener(SOCK_NONBLOCK, 128, &port);
	{
		int cl[50], accepted = 0, connected = 0;
		double deadline = now_ms() + 5000;

		for (int i = 0; i < 50; i++)
			cl[i] = tcp_client_nb(port);
		while (accepted < 50 && now_ms() < deadline) {
			int a;

			wait_ev(l, POLLIN, 100);
			while ((a = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
				accepted++;
				close(a);
			}
		}
		for (int i = 0; i < 50; i++) {
			int e = -1;
			socklen_t el = sizeof e;

			wait_ev(cl[i], POLLOUT, 2000);
			if (getsockopt(cl[i], SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
				connected++;
			close(cl[i]);
		}
		say("connected: %d, accepted: %d", connected, accepted);
	}

	section("400 connections open at once (800 sockets), one byte each way");
	{
		enum { N = 400 };
		static int cs[N], ss[N];
		int opened = 0, ok = 0, ml, mport;
		char b;

		ml = tcp_listener(0, 512, &mport);
		for (int i = 0; i < N; i++) {
			cs[i] = tcp_client(mport);
			ss[i] = accept_wait(ml);
			opened++;
		}
		for (int i = 0; i < N; i++)
			if (write(cs[i], "a", 1) == 1 && write(ss[i], "b", 1) == 1)
				ok++;
		for (int i = 0; i < N; i++) {
			if (read_n(ss[i], &b, 1, 2000) != 1 || b != 'a' || read_n(cs[i], &b, 1, 2000) != 1 || b != 'b')
				ok--;
		}
		say("opened %d of %d, exchanged on %d", opened, N, ok);
		for (int i = 0; i < N; i++) {
			close(cs[i]);
			close(ss[i]);
		}
		close(ml);
	}

	close(l);
	return conf_end();
}
