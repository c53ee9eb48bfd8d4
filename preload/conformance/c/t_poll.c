/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_poll: poll and ppoll over a pipe, a listener, connected, unconnected,
 * closed and negative fds: revents for each as they become ready, timeouts
 * (at once, about the timeout without spinning, -1 until another thread
 * writes), ppoll's signal mask, and the argument errors.
 *
 * fsconf:variant fortify
 * (nfds is not a compile-time constant, so fortified builds call __poll_chk
 * and __ppoll_chk.)
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <pthread.h>
#include <sys/resource.h>

enum { P_PIPE_R, P_PIPE_W, P_LISTEN, P_S, P_C, P_UNCONN, P_NEG, P_CLOSED, P_DUP, NFDS };
static const char *const names[NFDS] = { "pipe-r", "pipe-w", "listener", "s", "c", "unconnected", "negative", "closed", "s-again" };
static volatile nfds_t nfds = NFDS;

static void show(const char *label, int n, struct pollfd *p)
{
	if (n < 0) {
		printf("%s = -1 %s\n", label, errname(errno));
		return;
	}
	printf("%s = %d", label, n);
	for (int i = 0; i < NFDS; i++)
		if (p[i].revents)
			printf(" %s:%s", names[i], fmt_poll(p[i].revents));
	putchar('\n');
}

/* settle polls (timeout 50) until at least want entries are ready: five
 * are ready from the start (pipe-w, c, unconnected, closed, s-again), so a
 * wait for one more event asks for six. */
static void settle(const char *label, struct pollfd *p, int want)
{
	double deadline = now_ms() + 2000;
	int n;

	do {
		n = poll(p, nfds, 50);
	} while (n >= 0 && n < want && now_ms() < deadline);
	show(label, n, p);
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
	struct pollfd p[NFDS];
	char buf[16];
	int l, c, s, port, pp[2], u, closed, n;
	double t0, c0, el;

	conf_init("t_poll", "poll and ppoll");
	tcp_pair(&l, &port, &c, &s);
	if (pipe(pp) < 0)
		die("pipe");
	u = socket(AF_INET, SOCK_STREAM, 0);
	closed = dup(0);
	dup2(closed, 901);
	close(closed);
	close(901);
	closed = 901;
	{
		int fds[NFDS] = { pp[0], pp[1], l, s, c, u, -1, closed, s };
		short evs[NFDS] = { POLLIN | POLLRDHUP, POLLOUT, POLLIN, POLLIN | POLLRDHUP | POLLPRI,
				    POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM, POLLIN | POLLOUT, POLLIN, POLLIN,
				    POLLOUT };

		for (int i = 0; i < NFDS; i++) {
			p[i].fd = fds[i];
			p[i].events = evs[i];
			p[i].revents = (short)0x7777; /* poll must overwrite every revents */
		}
	}

	section("initial state");
	n = poll(p, nfds, 0);
	show("poll(0)", n, p);

	section("readiness one at a time (closed fd and unconnected socket stay)");
	R(write(pp[1], "x", 1));
	settle("pipe written", p, 6);
	R(read(pp[0], buf, sizeof buf));
	{
		int x = tcp_client(port), a;

		settle("connection pending", p, 6);
		a = accept(l, NULL, NULL);
		close(a);
		close(x);
	}
	R(write(c, "d", 1));
	settle("data for s", p, 6);
	R(read(s, buf, sizeof buf));
	n = poll(p, nfds, 0);
	show("consumed", n, p);

	section("timeouts");
	{
		struct pollfd q = { .fd = s, .events = POLLIN };
		volatile nfds_t one = 1, zero = 0;

		t0 = now_ms();
		R(poll(&q, one, 0));
		say("  returned: %s", bucket(now_ms() - t0, 0));
		t0 = now_ms();
		c0 = cpu_ms();
		R(poll(&q, one, 300));
		el = now_ms() - t0;
		say("  returned: %s, cpu: %s", bucket(el, 300), spin(cpu_ms() - c0, el));
		t0 = now_ms();
		c0 = cpu_ms();
		R(poll(NULL, zero, 200));
		el = now_ms() - t0;
		say("  returned: %s, cpu: %s", bucket(el, 200), spin(cpu_ms() - c0, el));
		{
			struct delayed d = { c, 300 };
			pthread_t t;

			pthread_create(&t, NULL, delayed_write, &d);
			t0 = now_ms();
			c0 = cpu_ms();
			R(poll(&q, one, -1));
			el = now_ms() - t0;
			say("  revents %s, returned: %s, cpu: %s", fmt_poll(q.revents), bucket(el, 300),
			    spin(cpu_ms() - c0, el));
			pthread_join(t, NULL);
			R(read(s, buf, sizeof buf));
		}
	}

	section("ppoll");
	{
		struct pollfd q = { .fd = s, .events = POLLIN };
		struct timespec ts = { 0, 200 * 1000000L };
		volatile nfds_t one = 1;
		sigset_t block, none;

		t0 = now_ms();
		R(ppoll(&q, one, &ts, NULL));
		say("  returned: %s, timespec untouched: %d", bucket(now_ms() - t0, 200), ts.tv_nsec == 200 * 1000000L);
		on_signal(SIGUSR1, 0);
		sigemptyset(&block);
		sigaddset(&block, SIGUSR1);
		signal_after(SIGUSR1, 50);
		t0 = now_ms();
		R(ppoll(&q, one, &ts, &block));
		say("  signal blocked: returned: %s, handler ran: %d", bucket(now_ms() - t0, 200),
		    (int)conf_sigcount[SIGUSR1]);
		sigprocmask(SIG_BLOCK, &block, NULL);
		sigemptyset(&none);
		signal_after(SIGUSR1, 50);
		ts.tv_sec = 1;
		ts.tv_nsec = 0;
		t0 = now_ms();
		R(ppoll(&q, one, &ts, &none));
		say("  signal unblocked by ppoll: returned: %s, handler ran: %d", bucket(now_ms() - t0, 50),
		    (int)conf_sigcount[SIGUSR1]);
		sigprocmask(SIG_UNBLOCK, &block, NULL);
		R(write(c, "z", 1));
		R(ppoll(&q, one, NULL, NULL));
		R(read(s, buf, sizeof buf));
	}

	section("hang-ups");
	R(shutdown(c, SHUT_WR));
	settle("peer's FIN", p, 6);
	R(close(pp[1]));
	p[P_PIPE_W].fd = -1;
	settle("pipe writer closed", p, 6);
	{
		struct linger lg = { 1, 0 };

		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	}
	R(close(c));
	p[P_C].fd = -1;
	{
		double deadline = now_ms() + 2000;

		do
			n = poll(p, nfds, 50);
		while (!(p[P_S].revents & POLLERR) && now_ms() < deadline);
		show("peer reset", n, p);
	}

	section("errors");
	{
		struct rlimit rl;
		volatile nfds_t too_many;

		getrlimit(RLIMIT_NOFILE, &rl);
		/* Through a volatile pointer: a fortified build would abort
		 * here instead of letting the kernel say EINVAL. */
		struct pollfd *volatile unsized = p;

		too_many = (nfds_t)rl.rlim_cur + 1;
		R(poll(unsized, too_many, 0));
		R(poll(conf_badptr, nfds, 0));
	}

	close(s);
	close(u);
	close(pp[0]);
	close(l);
	return conf_end();
}
