/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_eintr: a signal arriving during a blocking call. Without SA_RESTART,
 * accept, read, recv, write-side waits return EINTR; with SA_RESTART, accept
 * and read are restarted and complete, while epoll_wait, poll, select and a
 * recv with SO_RCVTIMEO return EINTR anyway (the kernel never restarts
 * those). SO_RCVTIMEO expiry returns EAGAIN. An interrupted blocking
 * connect keeps handshaking: it completes later, and connect then says 0.
 */
#include "conf.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/select.h>

#define SIG_MS 100

struct later {
	int port; /* connect to it, or */
	int fd;   /* write to it */
	int ms;
	int out;  /* the fd the thread connected */
};

static void *later_main(void *arg)
{
	struct later *l = arg;

	usleep((useconds_t)l->ms * 1000);
	if (l->port)
		l->out = tcp_client(l->port);
	else if (write(l->fd, "late", 4) != 4)
		die("late write");
	return NULL;
}

static pthread_t later(struct later *l)
{
	pthread_t t;

	if (pthread_create(&t, NULL, later_main, l) != 0)
		die("pthread_create");
	return t;
}

/* timed runs one blocking call, with SIGUSR1 due after SIG_MS, and reports
 * the call's result, whether the handler ran, and how long it blocked. */
#define TIMED(expr, expect_ms)                                                       \
	do {                                                                         \
		int before_ = (int)conf_sigcount[SIGUSR1];                            \
		double t0_ = now_ms();                                               \
		signal_after(SIGUSR1, SIG_MS);                                       \
		rep(#expr, (long)(expr));                                            \
		say("  handler ran: %d, returned: %s", (int)conf_sigcount[SIGUSR1] - before_, \
		    bucket(now_ms() - t0_, expect_ms));                              \
	} while (0)

int main(void)
{
	char buf[16];
	int l, c, s, port, ep;

	conf_init("t_eintr", "EINTR and SA_RESTART in blocking calls");
	tcp_pair(&l, &port, &c, &s);
	note_port(port, "L1");

	section("without SA_RESTART");
	on_signal(SIGUSR1, 0);
	TIMED(accept(l, NULL, NULL), SIG_MS);
	TIMED(read(s, buf, sizeof buf), SIG_MS);
	TIMED(recv(s, buf, sizeof buf, 0), SIG_MS);
	{
		struct iovec v = { buf, sizeof buf };
		struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };

		TIMED(recvmsg(s, &m, 0), SIG_MS);
	}
	TIMED(recv(s, buf, 8, MSG_WAITALL), SIG_MS);

	section("blocking write on a full send buffer");
	{
		static char chunk[1];
		struct timeval tv = { 0, 300 * 1000 };
		double t0;

		/* A connection with fixed small buffers (no autotuning, so a
		 * full buffer stays full); fill c's send buffer (s never
		 * reads), then block in write. */
		int small = 16384, bl, bport;
		struct sockaddr_in sa;

		close(c);
		close(s);
		bl = tcp_listener(0, 4, &bport);
		setsockopt(bl, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
		c = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
		client_bind(c);
		sa_srv(&sa, bport);
		if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0)
			die("connect");
		s = accept_wait(bl);
		close(bl);
		say("filled: %d", fill_sndbuf(c) > 0);
		TIMED(write(c, chunk, 1), SIG_MS);
		setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		t0 = now_ms();
		R(write(c, chunk, 1));
		say("  SO_SNDTIMEO 300 ms expired: %s", bucket(now_ms() - t0, 300));
		tv.tv_usec = 0;
		setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		/* Start over with an empty connection for what follows. */
		close(c);
		close(s);
		c = tcp_client(port);
		s = accept_wait(l);
	}

	section("blocking connect interrupted: the handshake goes on");
	{
		/* A listener with backlog 0 and one connection queued drops
		 * the next SYN, so that connect blocks until the retry (1 s). */
		int bport, bl = tcp_listener(0, 0, &bport), first = tcp_client(bport), x, a, ev;
		struct sockaddr_in sa;
		double t0;

		x = socket(AF_INET, SOCK_STREAM, 0);
		client_bind(x);
		sa_srv(&sa, bport);
		TIMED(connect(x, (struct sockaddr *)&sa, sizeof sa), SIG_MS);
		a = accept(bl, NULL, NULL);
		t0 = now_ms();
		ev = wait_ev(x, POLLOUT, 3000);
		say("then, once the queue has room: revents %s (%s)", fmt_poll(ev), now_ms() - t0 < 3000 ? "before 3 s" : "timed out");
		{
			int e = -1;
			socklen_t el = sizeof e;

			getsockopt(x, SOL_SOCKET, SO_ERROR, &e, &el);
			say("SO_ERROR = %s", errname(e));
		}
		R(connect(x, (struct sockaddr *)&sa, sizeof sa));
		R(connect(x, (struct sockaddr *)&sa, sizeof sa));
		close(a);
		close(x);
		close(first);
		close(bl);
	}

	section("with SA_RESTART: accept and read restart and complete");
	on_signal(SIGUSR1, 1);
	{
		struct later lt = { .port = port, .ms = 3 * SIG_MS };
		pthread_t t = later(&lt);
		int a;

		TIMED((a = accept(l, NULL, NULL)) >= 0, 3 * SIG_MS);
		pthread_join(t, NULL);
		close(a);
		close(lt.out);
	}
	{
		struct later lt = { .fd = c, .ms = 3 * SIG_MS };
		pthread_t t = later(&lt);

		TIMED(read(s, buf, sizeof buf), 3 * SIG_MS);
		pthread_join(t, NULL);
	}

	section("with SA_RESTART: waits that are never restarted");
	ep = epoll_create1(0);
	{
		struct epoll_event ev = { .events = EPOLLIN }, out;

		epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
		TIMED(epoll_wait(ep, &out, 1, 2000), SIG_MS);
		TIMED(epoll_wait(ep, &out, 1, -1), SIG_MS);
		TIMED(epoll_pwait(ep, &out, 1, 2000, NULL), SIG_MS);
	}
	{
		struct pollfd p = { .fd = s, .events = POLLIN };

		TIMED(poll(&p, 1, 2000), SIG_MS);
		TIMED(poll(&p, 1, -1), SIG_MS);
	}
	{
		fd_set r;
		struct timeval tv = { 2, 0 };

		FD_ZERO(&r);
		FD_SET(s, &r);
		TIMED(select(s + 1, &r, NULL, NULL, &tv), SIG_MS);
	}
	{
		struct timeval tv = { 2, 0 };

		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		TIMED(recv(s, buf, sizeof buf, 0), SIG_MS);
		tv.tv_sec = 0;
		tv.tv_usec = 300 * 1000;
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		{
			double t0 = now_ms();

			R(recv(s, buf, sizeof buf, 0));
			say("  SO_RCVTIMEO 300 ms expired: %s", bucket(now_ms() - t0, 300));
		}
		setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		{
			double t0 = now_ms();

			R(accept(l, NULL, NULL));
			say("  SO_RCVTIMEO 300 ms on accept expired: %s", bucket(now_ms() - t0, 300));
		}
	}

	close(ep);
	close(c);
	close(s);
	close(l);
	return conf_end();
}
