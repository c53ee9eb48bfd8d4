/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_epoll_nest: an epoll fd holding sockets, itself in another epoll set
 * (level-triggered, EPOLLET, EPOLLONESHOT), polled and selected: it reads
 * readable exactly while an epoll_wait on it would report something.  A set
 * added to the outer one before it held a socket, waits woken by another
 * thread, a nested set inherited across fork, and dups of an epoll fd
 * sharing its interest list.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <pthread.h>
#include <sys/select.h>
#include <sys/wait.h>

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

/* Reads what arrived on s (waiting for it) and reports the count. */
static void drain(const char *label, int s)
{
	char buf[64];

	say("%s: read %zu", label, read_n(s, buf, 1, 2000));
	while (recv(s, buf, sizeof buf, MSG_DONTWAIT) > 0)
		;
}

static int select_in(int fd, int ms)
{
	fd_set r;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	int n;

	FD_ZERO(&r);
	FD_SET(fd, &r);
	n = select(fd + 1, &r, NULL, NULL, &tv);
	return n < 0 ? -1 : n * 10 + (FD_ISSET(fd, &r) ? 1 : 0);
}

int main(void)
{
	int l, port, c, s, c2, s2, inner, outer;

	conf_init("t_epoll_nest", "an epoll fd inside another epoll set, poll and select");
	tcp_pair(&l, &port, &c, &s);
	c2 = tcp_client(port);
	s2 = accept_wait(l);
	inner = epoll_create1(0);
	R(ep_add(inner, s, EPOLLIN, "s"));

	section("level-triggered outer set");
	outer = epoll_create1(0);
	R(ep_add(outer, inner, EPOLLIN, "inner"));
	ep_show("nothing ready", outer, 0);
	R(write(c, "a", 1));
	ep_settle("data for s", outer, 1, 2000);
	ep_show("still (level)", outer, 0);
	ep_show("the inner set", inner, 0);
	ep_show("the outer set after the inner one was waited on", outer, 0);
	drain("s", s);
	ep_show("s read: the outer set", outer, 0);
	ep_show("the inner set", inner, 0);
	close(outer);

	section("EPOLLET outer set");
	outer = epoll_create1(0);
	R(ep_add(outer, inner, EPOLLIN | EPOLLET, "inner"));
	ep_show("nothing ready", outer, 0);
	R(write(c, "b", 1));
	ep_settle("data for s", outer, 1, 2000);
	ep_show("no new event", outer, 100);
	R(write(c, "c", 1));
	ep_settle("more data for s: a new edge", outer, 1, 2000);
	ep_show("no new event", outer, 100);
	ep_show("the inner set (level)", inner, 0);
	ep_show("waiting on the inner set is no event", outer, 0);
	drain("s", s);
	ep_show("s read", outer, 0);
	close(outer);

	section("EPOLLONESHOT outer set");
	outer = epoll_create1(0);
	R(ep_add(outer, inner, EPOLLIN | EPOLLONESHOT, "inner"));
	R(write(c, "d", 1));
	ep_settle("data for s", outer, 1, 2000);
	ep_show("disabled", outer, 100);
	R(write(c, "e", 1));
	ep_show("more data, still disabled", outer, 100);
	R(ep_mod(outer, inner, EPOLLIN | EPOLLONESHOT, "inner"));
	ep_show("re-armed with data pending", outer, 0);
	ep_show("disabled again", outer, 0);
	drain("s", s);
	R(ep_mod(outer, inner, EPOLLIN | EPOLLONESHOT, "inner"));
	ep_show("re-armed, nothing pending", outer, 0);
	close(outer);

	section("poll and select on the inner set");
	{
		struct pollfd p = { .fd = inner, .events = POLLIN };

		R(poll(&p, 1, 0));
		say("  revents %s", fmt_poll(p.revents));
		R(select_in(inner, 0));
		R(write(c, "f", 1));
		say("wait_ev(inner, POLLIN) = %s", fmt_poll(wait_ev(inner, POLLIN, 2000)));
		R(select_in(inner, 2000));
		ep_show("the inner set", inner, 0);
		drain("s", s);
		p.revents = 0;
		R(poll(&p, 1, 0));
		say("  revents %s", fmt_poll(p.revents));
		R(select_in(inner, 50));
	}

	section("blocking waits woken by another thread");
	{
		struct delayed d = { c, 200 };
		struct epoll_event ev[4];
		struct pollfd p = { .fd = inner, .events = POLLIN };
		pthread_t t;
		double t0;

		outer = epoll_create1(0);
		R(ep_add(outer, inner, EPOLLIN, "inner"));
		pthread_create(&t, NULL, delayed_write, &d);
		t0 = now_ms();
		R(epoll_wait(outer, ev, 4, -1));
		say("  returned: %s, event %s", bucket(now_ms() - t0, 200), fmt_epoll(ev[0].events));
		pthread_join(t, NULL);
		drain("s", s);
		pthread_create(&t, NULL, delayed_write, &d);
		t0 = now_ms();
		R(poll(&p, 1, -1));
		say("  returned: %s, revents %s", bucket(now_ms() - t0, 200), fmt_poll(p.revents));
		pthread_join(t, NULL);
		drain("s", s);
		close(outer);
	}

	section("a set added to the outer one before it held a socket");
	{
		int in2 = epoll_create1(0);

		outer = epoll_create1(0);
		R(ep_add(outer, in2, EPOLLIN, "in2"));
		R(ep_add(in2, s2, EPOLLIN, "s2"));
		ep_show("nothing ready", outer, 0);
		R(write(c2, "g", 1));
		ep_settle("data for s2", outer, 1, 2000);
		drain("s2", s2);
		ep_show("s2 read", outer, 0);
		close(outer);
		close(in2);
	}

	section("a nested set inherited across fork");
	{
		int status = 0;
		pid_t pid;

		outer = epoll_create1(0);
		R(ep_add(outer, inner, EPOLLIN, "inner"));
		fflush(stdout);
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			struct epoll_event ev[4];
			int n = epoll_wait(outer, ev, 4, 3000);

			_exit(n == 1 && ev[0].data.ptr != NULL &&
			      strcmp(ev[0].data.ptr, "inner") == 0 ? 7 : 1);
		}
		usleep(200 * 1000);
		R(write(c, "h", 1));
		waitpid(pid, &status, 0);
		say("child saw the inner set readable: %s",
		    WIFEXITED(status) && WEXITSTATUS(status) == 7 ? "yes" : "no");
		ep_show("parent", outer, 0);
		drain("s", s);
		ep_show("s read", outer, 0);
		close(outer);
	}

	section("dups of an epoll fd share its interest list");
	{
		int e = epoll_create1(0), d, d2;

		R(ep_add(e, s2, EPOLLIN, "s2"));
		d = dup(e);
		R(ep_add(d, s2, EPOLLIN, "s2 again"));
		R(write(c2, "i", 1));
		ep_settle("the dup sees s2", d, 1, 2000);
		ep_show("the original too", e, 0);
		R(epoll_ctl(d, EPOLL_CTL_DEL, s2, NULL));
		ep_show("deleted through the dup", e, 0);
		R(ep_add(e, s2, EPOLLIN, "s2"));
		d2 = fcntl(d, F_DUPFD_CLOEXEC, 0);
		close(e);
		ep_show("the original closed, the dup", d, 0);
		close(d);
		ep_show("F_DUPFD copy", d2, 0);
		R(ep_mod(d2, s2, EPOLLOUT, "s2 out"));
		ep_show("modified through the last copy", d2, 0);
		drain("s2", s2);
		close(d2);
	}

	close(inner);
	close(c);
	close(s);
	close(c2);
	close(s2);
	close(l);
	return conf_end();
}
