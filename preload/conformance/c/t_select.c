/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_select: select and pselect over a pipe, a listener and sockets (one
 * dup'ed to a high fd number): read/write/except sets as they become ready,
 * timeouts (the timeval is updated with the time left), NULL timeout until
 * another thread writes, pselect's signal mask, and EBADF/EINVAL.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <pthread.h>
#include <sys/select.h>

#define HIGH_FD 1000

enum { F_PIPE_R, F_PIPE_W, F_LISTEN, F_S, F_C, F_HIGH, NF };
static const char *const names[NF] = { "pipe-r", "pipe-w", "listener", "s", "c", "high" };
static int fds[NF];

static void add_all(fd_set *r, fd_set *w, fd_set *e, int *maxfd)
{
	FD_ZERO(r);
	FD_ZERO(w);
	FD_ZERO(e);
	*maxfd = -1;
	for (int i = 0; i < NF; i++) {
		if (fds[i] < 0)
			continue;
		if (i != F_PIPE_W)
			FD_SET(fds[i], r);
		if (i == F_PIPE_W || i == F_C)
			FD_SET(fds[i], w);
		FD_SET(fds[i], e);
		if (fds[i] > *maxfd)
			*maxfd = fds[i];
	}
}

static void show(const char *label, int n, fd_set *r, fd_set *w, fd_set *e)
{
	if (n < 0) {
		printf("%s = -1 %s\n", label, errname(errno));
		return;
	}
	printf("%s = %d", label, n);
	for (int i = 0; i < NF; i++) {
		if (fds[i] < 0)
			continue;
		if (FD_ISSET(fds[i], r) || FD_ISSET(fds[i], w) || FD_ISSET(fds[i], e))
			printf(" %s:%s%s%s", names[i], FD_ISSET(fds[i], r) ? "r" : "", FD_ISSET(fds[i], w) ? "w" : "",
			       FD_ISSET(fds[i], e) ? "e" : "");
	}
	putchar('\n');
}

/* settle selects (50 ms timeouts) until at least want bits are set. */
static void settle(const char *label, int want)
{
	fd_set r, w, e;
	int maxfd, n;
	double deadline = now_ms() + 2000;

	do {
		struct timeval tv = { 0, 50000 };

		add_all(&r, &w, &e, &maxfd);
		n = select(maxfd + 1, &r, &w, &e, &tv);
	} while (n >= 0 && n < want && now_ms() < deadline);
	show(label, n, &r, &w, &e);
}

struct delayed {
	int fd, ms;
};

static void *delayed_write(void *arg)
{
	struct delayed *d = arg;

	usleep((useconds_t)d->ms * 1000);
	if (write(d->fd, "w", 1) != 1)
		die("delayed write");
	return NULL;
}

int main(void)
{
	char buf[16];
	int l, c, s, port, pp[2], c2, s2, maxfd, n;
	fd_set r, w, e;
	double t0, c0, el;

	conf_init("t_select", "select and pselect");
	tcp_pair(&l, &port, &c, &s);
	c2 = tcp_client(port);
	s2 = accept_wait(l);
	if (pipe(pp) < 0)
		die("pipe");
	if (dup2(s2, HIGH_FD) != HIGH_FD)
		die("dup2 to %d", HIGH_FD);
	close(s2);
	fds[F_PIPE_R] = pp[0];
	fds[F_PIPE_W] = pp[1];
	fds[F_LISTEN] = l;
	fds[F_S] = s;
	fds[F_C] = c;
	fds[F_HIGH] = HIGH_FD;

	section("initial state");
	{
		struct timeval tv = { 0, 0 };

		add_all(&r, &w, &e, &maxfd);
		n = select(maxfd + 1, &r, &w, &e, &tv);
		show("select(timeout 0)", n, &r, &w, &e);
	}

	section("readiness one at a time");
	R(write(pp[1], "x", 1));
	settle("pipe written", 3);
	R(read(pp[0], buf, sizeof buf));
	{
		int x = tcp_client(port), a;

		settle("connection pending", 3);
		a = accept(l, NULL, NULL);
		close(a);
		close(x);
	}
	R(write(c, "d", 1));
	settle("data for s", 3);
	R(read(s, buf, sizeof buf));
	R(write(c2, "h", 1));
	settle("data for the high fd", 3);
	R(read(HIGH_FD, buf, sizeof buf));
	R(shutdown(c2, SHUT_WR));
	settle("FIN on the high fd", 3);

	section("timeouts");
	{
		struct timeval tv = { 0, 300000 };

		FD_ZERO(&r);
		FD_SET(s, &r);
		t0 = now_ms();
		c0 = cpu_ms();
		R(select(s + 1, &r, NULL, NULL, &tv));
		el = now_ms() - t0;
		say("  returned: %s, cpu: %s, timeval left: %ld.%06ld", bucket(el, 300), spin(cpu_ms() - c0, el),
		    (long)tv.tv_sec, (long)tv.tv_usec);
		tv.tv_sec = 0;
		tv.tv_usec = 200000;
		t0 = now_ms();
		R(select(0, NULL, NULL, NULL, &tv));
		say("  returned: %s", bucket(now_ms() - t0, 200));
		tv.tv_sec = 2;
		tv.tv_usec = 0;
		R(write(c, "q", 1));
		usleep(50000);
		FD_ZERO(&r);
		FD_SET(s, &r);
		R(select(s + 1, &r, NULL, NULL, &tv));
		{
			long left = (long)tv.tv_sec * 1000000 + tv.tv_usec;

			say("  ready at once: timeval left in (1.5 s, 2 s]: %d", left > 1500000 && left <= 2000000);
		}
		R(read(s, buf, sizeof buf));
		{
			struct delayed d = { c, 300 };
			pthread_t t;

			FD_ZERO(&r);
			FD_SET(s, &r);
			pthread_create(&t, NULL, delayed_write, &d);
			t0 = now_ms();
			c0 = cpu_ms();
			R(select(s + 1, &r, NULL, NULL, NULL));
			el = now_ms() - t0;
			say("  s readable: %d, returned: %s, cpu: %s", FD_ISSET(s, &r), bucket(el, 300), spin(cpu_ms() - c0, el));
			pthread_join(t, NULL);
			R(read(s, buf, sizeof buf));
		}
	}

	section("pselect");
	{
		struct timespec ts = { 0, 200 * 1000000L };
		sigset_t block, none;

		FD_ZERO(&r);
		FD_SET(s, &r);
		t0 = now_ms();
		R(pselect(s + 1, &r, NULL, NULL, &ts, NULL));
		say("  returned: %s, timespec untouched: %d", bucket(now_ms() - t0, 200), ts.tv_nsec == 200 * 1000000L);
		on_signal(SIGUSR1, 0);
		sigemptyset(&block);
		sigaddset(&block, SIGUSR1);
		signal_after(SIGUSR1, 50);
		FD_SET(s, &r);
		t0 = now_ms();
		R(pselect(s + 1, &r, NULL, NULL, &ts, &block));
		say("  signal blocked: returned: %s, handler ran: %d", bucket(now_ms() - t0, 200),
		    (int)conf_sigcount[SIGUSR1]);
		sigprocmask(SIG_BLOCK, &block, NULL);
		sigemptyset(&none);
		signal_after(SIGUSR1, 50);
		ts.tv_sec = 1;
		ts.tv_nsec = 0;
		FD_SET(s, &r);
		t0 = now_ms();
		R(pselect(s + 1, &r, NULL, NULL, &ts, &none));
		say("  signal unblocked by pselect: returned: %s, handler ran: %d", bucket(now_ms() - t0, 50),
		    (int)conf_sigcount[SIGUSR1]);
		sigprocmask(SIG_UNBLOCK, &block, NULL);
	}

	section("peer reset");
	{
		struct linger lg = { 1, 0 };

		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		R(close(c));
		fds[F_C] = -1;
		wait_ev(s, POLLERR, 2000);
		settle("after RST", 3);
	}

	section("errors");
	{
		struct timeval tv = { 0, 0 }, neg = { -1, 0 };
		int cl = dup(0);

		close(cl);
		FD_ZERO(&r);
		FD_SET(cl, &r);
		R(select(cl + 1, &r, NULL, NULL, &tv));
		FD_ZERO(&r);
		R(select(-1, &r, NULL, NULL, &tv));
		FD_SET(s, &r);
		R(select(s + 1, &r, NULL, NULL, &neg));
		FD_SET(s, &r);
		R(select(s + 1, conf_badptr, NULL, NULL, &tv));
	}

	close(s);
	close(c2);
	close(HIGH_FD);
	close(pp[0]);
	close(pp[1]);
	close(l);
	return conf_end();
}
