/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_threads: any thread may use any socket. A thread blocked in accept,
 * read or epoll_wait is woken by another thread's connect or write; an
 * epoll set changed (EPOLL_CTL_ADD, MOD) by one thread while another is
 * blocked in epoll_wait on it; a socket created in one thread, used and
 * closed in another; poll woken across threads.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <pthread.h>

struct job {
	int kind;
	int fd, ep, port, ms;
	int out;
};

enum { J_CONNECT, J_WRITE, J_ADD_READY, J_MOD_IN, J_CLOSE_PEER };

static void *run_job(void *arg)
{
	struct job *j = arg;

	usleep((useconds_t)j->ms * 1000);
	switch (j->kind) {
	case J_CONNECT:
		j->out = tcp_client(j->port);
		break;
	case J_WRITE:
		if (write(j->fd, "t", 1) != 1)
			die("thread write");
		break;
	case J_ADD_READY: /* fd already has data: adding it must wake the waiter */
		if (ep_add(j->ep, j->fd, EPOLLIN, "added") < 0)
			die("thread epoll_ctl ADD");
		break;
	case J_MOD_IN:
		if (ep_mod(j->ep, j->fd, EPOLLIN, "modded") < 0)
			die("thread epoll_ctl MOD");
		break;
	case J_CLOSE_PEER:
		close(j->fd);
		break;
	}
	return NULL;
}

static pthread_t start(struct job *j)
{
	pthread_t t;

	if (pthread_create(&t, NULL, run_job, j) != 0)
		die("pthread_create");
	return t;
}

#define WOKEN(label, call, ms)                                                      \
	do {                                                                        \
		double t0_ = now_ms(), c0_ = cpu_ms(), el_;                         \
		long r_ = (long)(call);                                             \
		el_ = now_ms() - t0_;                                               \
		rep(label, r_);                                                     \
		say("  woken: %s, cpu: %s", bucket(el_, ms), spin(cpu_ms() - c0_, el_)); \
	} while (0)

static void *make_socket(void *arg)
{
	int *port = arg;

	return (void *)(intptr_t)tcp_client(*port);
}

int main(void)
{
	char buf[16];
	int l, c, s, port, ep;
	pthread_t t;

	conf_init("t_threads", "sockets used across threads");
	tcp_pair(&l, &port, &c, &s);

	section("blocking calls woken by another thread");
	{
		struct job j = { .kind = J_CONNECT, .port = port, .ms = 200 };
		int a;

		t = start(&j);
		WOKEN("accept (connect from a thread)", (a = accept(l, NULL, NULL)) >= 0, 200);
		pthread_join(t, NULL);
		close(a);
		close(j.out);
	}
	{
		struct job j = { .kind = J_WRITE, .fd = c, .ms = 200 };

		t = start(&j);
		WOKEN("read (write from a thread)", read(s, buf, sizeof buf), 200);
		pthread_join(t, NULL);
	}
	{
		struct job j = { .kind = J_WRITE, .fd = c, .ms = 200 };
		struct pollfd p = { .fd = s, .events = POLLIN };

		t = start(&j);
		WOKEN("poll (write from a thread)", poll(&p, 1, 2000), 200);
		pthread_join(t, NULL);
		R(read(s, buf, sizeof buf));
	}

	section("epoll set changed while another thread waits on it");
	ep = epoll_create1(0);
	{
		struct job j = { .kind = J_WRITE, .fd = c, .ms = 200 };

		R(ep_add(ep, s, EPOLLIN, "s"));
		t = start(&j);
		WOKEN("epoll_wait (write from a thread)", ep_show("  events", ep, 2000), 200);
		pthread_join(t, NULL);
		R(read(s, buf, sizeof buf));
		R(epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL));
	}
	{
		struct job j = { .kind = J_ADD_READY, .fd = s, .ep = ep, .ms = 200 };

		R(write(c, "r", 1));
		wait_ev(s, POLLIN, 2000);
		t = start(&j);
		WOKEN("epoll_wait (a thread ADDs a ready socket)", ep_show("  events", ep, 2000), 200);
		pthread_join(t, NULL);
	}
	{
		struct job j = { .kind = J_MOD_IN, .fd = s, .ep = ep, .ms = 200 };

		R(ep_mod(ep, s, EPOLLRDHUP, "s"));
		ep_show("data pending, only EPOLLRDHUP requested", ep, 0);
		t = start(&j);
		WOKEN("epoll_wait (a thread MODs it to EPOLLIN)", ep_show("  events", ep, 2000), 200);
		pthread_join(t, NULL);
		R(read(s, buf, sizeof buf));
	}

	section("a socket made in one thread, used and closed in another");
	{
		void *ret;
		int x, a;

		pthread_create(&t, NULL, make_socket, &port);
		pthread_join(t, &ret);
		x = (int)(intptr_t)ret;
		wait_ev(l, POLLIN, 2000);
		a = accept(l, NULL, NULL);
		R(write(x, "made in a thread", 16));
		say("peer got: %zu", read_n(a, buf, 16, 2000));
		{
			struct job j = { .kind = J_CLOSE_PEER, .fd = x, .ms = 0 };

			t = start(&j);
			pthread_join(t, NULL);
		}
		say("closed in a thread: peer revents = %s", fmt_poll(wait_ev(a, POLLIN | POLLRDHUP, 2000)));
		R(fcntl(x, F_GETFD));
		close(a);
	}

	close(ep);
	close(c);
	close(s);
	close(l);
	return conf_end();
}
