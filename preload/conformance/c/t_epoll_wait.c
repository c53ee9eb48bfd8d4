/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_epoll_wait: epoll_wait and epoll_pwait timing — timeout 0 returns at
 * once, a timeout blocks about that long without spinning, -1 blocks until
 * an event (from another thread) — epoll_pwait's signal mask, and one epoll
 * set mixing a pipe, an eventfd, a listener, connected sockets and a nested
 * epoll fd, each becoming ready on its own.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <pthread.h>
#include <sys/eventfd.h>

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

static int ev_name_cmp(const void *a, const void *b)
{
	const struct epoll_event *x = a, *y = b;

	return strcmp((const char *)x->data.ptr, (const char *)y->data.ptr);
}

/* timed_wait runs one epoll_wait(timeout) and reports its result, how long
 * it took against expect_ms, and whether it slept or spun. */
static void timed_wait(const char *label, int ep, int timeout, int expect_ms)
{
	double t0 = now_ms(), c0 = cpu_ms(), el;
	char l[128];

	snprintf(l, sizeof l, "%s: epoll_wait(%d)", label, timeout);
	ep_show(l, ep, timeout);
	el = now_ms() - t0;
	say("  returned: %s, cpu: %s", bucket(el, expect_ms), spin(cpu_ms() - c0, el));
}

int main(void)
{
	char buf[16];
	int l, c, s, c2, s2, port, ep, p[2], efd, inner;

	conf_init("t_epoll_wait", "epoll_wait timeouts and blocking, epoll_pwait, mixed sets");
	tcp_pair(&l, &port, &c, &s);
	c2 = tcp_client(port);
	s2 = accept_wait(l);
	if (pipe(p) < 0)
		die("pipe");
	efd = eventfd(0, EFD_NONBLOCK);
	ep = epoll_create1(0);

	section("timeouts with nothing ready");
	R(ep_add(ep, s, EPOLLIN, "s"));
	timed_wait("empty timeout 0", ep, 0, 0);
	timed_wait("timeout 300", ep, 300, 300);
	timed_wait("timeout 50", ep, 50, 50);
	{
		int e2 = epoll_create1(0);

		timed_wait("empty set, timeout 200", e2, 200, 200);
		close(e2);
	}

	section("blocking until another thread writes");
	{
		struct delayed d = { c, 300 };
		pthread_t t;

		pthread_create(&t, NULL, delayed_write, &d);
		timed_wait("timeout -1, data at 300 ms", ep, -1, 300);
		pthread_join(t, NULL);
		R(read(s, buf, sizeof buf));
		d.ms = 200;
		pthread_create(&t, NULL, delayed_write, &d);
		timed_wait("timeout 2000, data at 200 ms", ep, 2000, 200);
		pthread_join(t, NULL);
		R(read(s, buf, sizeof buf));
	}

	section("epoll_pwait");
	{
		sigset_t block;
		struct epoll_event ev[4];
		double t0;

		on_signal(SIGUSR1, 0);
		sigemptyset(&block);
		sigaddset(&block, SIGUSR1);
		t0 = now_ms();
		R(epoll_pwait(ep, ev, 4, 100, NULL));
		say("  returned: %s", bucket(now_ms() - t0, 100));
		/* SIGUSR1 blocked during the wait: the timer fires, the wait
		 * runs to its timeout, and the handler runs when pwait
		 * restores the mask. */
		signal_after(SIGUSR1, 50);
		t0 = now_ms();
		R(epoll_pwait(ep, ev, 4, 300, &block));
		say("  returned: %s, handler ran: %d", bucket(now_ms() - t0, 300), (int)conf_sigcount[SIGUSR1]);
		/* Blocked in the thread, unblocked by pwait: interrupted. */
		sigprocmask(SIG_BLOCK, &block, NULL);
		signal_after(SIGUSR1, 50);
		{
			sigset_t none;

			sigemptyset(&none);
			t0 = now_ms();
			R(epoll_pwait(ep, ev, 4, 1000, &none));
			say("  returned: %s, handler ran: %d", bucket(now_ms() - t0, 50),
			    (int)conf_sigcount[SIGUSR1]);
		}
		sigprocmask(SIG_UNBLOCK, &block, NULL);
	}

	section("epoll_pwait2 (timespec timeout)");
	{
		struct epoll_event ev[4];
		struct timespec zero = { 0, 0 }, t150 = { 0, 150 * 1000000L };
		double t0;

		t0 = now_ms();
		R(epoll_pwait2(ep, ev, 4, &zero, NULL));
		say("  returned: %s", bucket(now_ms() - t0, 0));
		t0 = now_ms();
		R(epoll_pwait2(ep, ev, 4, &t150, NULL));
		say("  returned: %s, timespec untouched: %d", bucket(now_ms() - t0, 150), t150.tv_nsec == 150 * 1000000L);
		R(write(c, "2", 1));
		R(epoll_pwait2(ep, ev, 4, NULL, NULL));
		R(read(s, buf, sizeof buf));
		t150.tv_nsec = 1000000000L;
		R(epoll_pwait2(ep, ev, 4, &t150, NULL));
	}

	section("one set: pipe, eventfd, listener, two sockets, a nested epoll");
	inner = epoll_create1(0);
	R(ep_add(inner, s2, EPOLLIN, "inner-s2"));
	R(ep_add(ep, p[0], EPOLLIN, "pipe"));
	R(ep_add(ep, efd, EPOLLIN, "eventfd"));
	R(ep_add(ep, l, EPOLLIN, "listener"));
	R(ep_add(ep, inner, EPOLLIN, "inner-ep"));
	R(ep_add(ep, c, EPOLLIN, "c"));
	ep_show("nothing ready", ep, 0);
	R(write(p[1], "p", 1));
	ep_settle("pipe written", ep, 1, 2000);
	R(read(p[0], buf, sizeof buf));
	R(eventfd_write(efd, 3));
	ep_settle("eventfd written", ep, 1, 2000);
	{
		eventfd_t v = 0;

		R(eventfd_read(efd, &v));
		say("eventfd value = %llu", (unsigned long long)v);
	}
	{
		int x = tcp_client(port), a;

		ep_settle("a connection pending", ep, 1, 2000);
		a = accept(l, NULL, NULL);
		close(a);
		close(x);
	}
	R(write(c2, "n", 1));
	ep_settle("data for the socket in the nested set", ep, 1, 2000);
	ep_show("the nested set itself", inner, 0);
	R(read(s2, buf, sizeof buf));
	R(write(s, "c", 1));
	ep_settle("data for c", ep, 1, 2000);
	R(read(c, buf, sizeof buf));
	ep_show("all consumed", ep, 0);

	section("everything at once");
	R(write(p[1], "p", 1));
	R(eventfd_write(efd, 1));
	R(write(c2, "n", 1));
	R(write(s, "c", 1));
	{
		int x = tcp_client(port);

		ep_settle("all ready", ep, 5, 2000);
		ep_show("a second look (level-triggered)", ep, 0);
		{
			struct epoll_event ev[2];
			int n1 = epoll_wait(ep, ev, 2, 0), n2 = epoll_wait(ep, ev, 2, 0),
			    n3 = epoll_wait(ep, ev, 2, 0);

			say("maxevents 2 with 5 ready: %d, %d, %d", n1, n2, n3);
		}
		close(accept_wait(l));
		close(x);
	}

	section("64 connections in one set, a fixed pseudo-random third written");
	{
		enum { N = 64 };
		static char names[N][16];
		int cs[N], ss[N], ep2 = epoll_create1(0), want = 0, n;
		unsigned x = 12345;
		struct epoll_event evs[N];

		for (int i = 0; i < N; i++) {
			snprintf(names[i], sizeof names[i], "s%02d", i);
			cs[i] = tcp_client(port);
			ss[i] = accept_wait(l);
			if (ep_add(ep2, ss[i], EPOLLIN | EPOLLRDHUP, names[i]) < 0)
				die("epoll_ctl");
		}
		for (int i = 0; i < N; i++) {
			x = x * 1103515245u + 12345u;
			if ((x >> 16) % 3 == 0) {
				if (write(cs[i], "r", 1) != 1)
					die("write");
				want++;
			}
		}
		say("written: %d", want);
		{
			double deadline = now_ms() + 3000;

			do
				n = epoll_wait(ep2, evs, N, 50);
			while (n >= 0 && n < want && now_ms() < deadline);
		}
		{
			/* One line per ten events, sorted, so a diff points at them. */
			char line[256] = "";
			size_t used = 0;

			qsort(evs, (size_t)(n > 0 ? n : 0), sizeof evs[0], ev_name_cmp);
			say("ready: %d", n);
			for (int i = 0; i < n; i++) {
				used += (size_t)snprintf(line + used, sizeof line - used, " %s:%s",
							 (const char *)evs[i].data.ptr, fmt_epoll(evs[i].events));
				if (i % 10 == 9 || i == n - 1) {
					say(" %s", line);
					used = 0;
					line[0] = 0;
				}
			}
		}
		for (int i = 0; i < N; i += 2)
			close(cs[i]);
		{
			double deadline = now_ms() + 3000;
			int hup;

			do {
				n = epoll_wait(ep2, evs, N, 50);
				hup = 0;
				for (int i = 0; i < n; i++)
					hup += !!(evs[i].events & EPOLLRDHUP);
			} while (n >= 0 && hup < N / 2 && now_ms() < deadline);
			say("after closing every other client: %d ready, %d with RDHUP", n, hup);
		}
		for (int i = 0; i < N; i++) {
			if (i % 2)
				close(cs[i]);
			close(ss[i]);
		}
		close(ep2);
	}

	close(inner);
	close(ep);
	close(efd);
	close(p[0]);
	close(p[1]);
	close(c);
	close(s);
	close(c2);
	close(s2);
	close(l);
	return conf_end();
}
