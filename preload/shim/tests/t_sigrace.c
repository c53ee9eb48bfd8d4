/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_sigrace: a signal handled while a blocking call is under way must end
 * the call with EINTR (the handler has no SA_RESTART), wherever in the
 * shim the thread was when the signal came: asleep in the wait, in a
 * request's round trip to the daemon (accept's ACCEPT), or looping after a
 * daemon wake-up that was not for it.  A shim that handles the signal
 * outside its sleeping syscall and then goes back to sleep loses it: the
 * handler ran (a server's quit flag is set) and the call blocks on.
 *
 *   t_sigrace [iterations]      (per case; default 200)
 *   t_sigrace iterations spin   (epoll_wait only, run with a long
 *                                FSSTACK_SPIN_US: the signal comes 5 ms
 *                                into the call, while the shim spins
 *                                before it sleeps)
 *
 * For each case and iteration the main thread enters the blocking call;
 * the signaller thread waits until the main thread is seen asleep (state
 * S in /proc: it is inside the call by then, so a signal cannot be "before
 * the call"), waits a few microseconds more (varied, so that some signals
 * land while it runs again), and sends SIGUSR1.  The call must return -1
 * EINTR within 3 s of the signal; otherwise the signaller reports the lost
 * signal and the program exits 1.  A churn thread ping-pongs bytes on
 * another connection meanwhile, so the daemon keeps waking every sleeper.
 * Needs an attached shim (tests/run.sh runs it on the daemon); on the
 * kernel it passes too.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "tcommon.h"

/* odd while the main thread is in a call; -1 at the end */
static _Atomic int seq;
static volatile sig_atomic_t got;
static pthread_t main_thread;
static pid_t main_tid;
static const char *cur_case;
static _Atomic int cur_iter;
static _Atomic int churn_stop;
static int spin_mode;

static void on_usr1(int sig)
{
	(void)sig;
	got = 1;
}

static void t_sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The main thread's scheduler state letter from /proc (R, S, ...). */
static char main_state(void)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)main_tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p != NULL && p[1] == ' ' ? p[2] : '?';
}

static void *signaller(void *arg)
{
	sigset_t all;
	unsigned int seed = 12345;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		int q, spins = 0;
		double t0;

		while ((q = atomic_load(&seq)) >= 0 && q % 2 == 0)
			sched_yield();
		if (q < 0)
			return NULL;
		if (spin_mode) {
			/* inside the call and still spinning (FSSTACK_SPIN_US
			 * is far longer) */
			t_sleep_us(5000);
		} else {
			/* inside the call once it has been seen asleep */
			while (main_state() != 'S' && atomic_load(&seq) == q) {
				if (++spins > 100)
					sched_yield();
			}
			t_sleep_us(rand_r(&seed) % 4 == 0 ? 0 : rand_r(&seed) % 60);
		}
		if (atomic_load(&seq) != q)
			continue;	/* it returned without a signal: reported by main */
		pthread_kill(main_thread, SIGUSR1);
		t0 = now_ms();
		while (atomic_load(&seq) == q) {
			if (now_ms() - t0 > 3000) {
				fprintf(stderr, "t_sigrace: LOST SIGNAL: %s, iteration %d: handler ran: %d, "
					"the call is still blocked 3 s after SIGUSR1 (want -1 EINTR)\n",
					cur_case, atomic_load(&cur_iter), (int)got);
				_exit(1);
			}
			t_sleep_us(100);
		}
	}
}

static void *churn(void *arg)
{
	int *fds = arg;
	char b = 'x';
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	while (!atomic_load(&churn_stop)) {
		if (write(fds[0], &b, 1) != 1 || read(fds[1], &b, 1) != 1)
			break;
	}
	return NULL;
}

static int listener(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int l = T_OK(socket(AF_INET, SOCK_STREAM, 0));

	T_OK(bind(l, (struct sockaddr *)&sa, sizeof(sa)));
	T_OK(listen(l, 16));
	T_OK(getsockname(l, (struct sockaddr *)&sa, &len));
	*port = ntohs(sa.sin_port);
	return l;
}

static void pair(int l, int port, int *c, int *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons(port) };

	*c = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_OK(connect(*c, (struct sockaddr *)&sa, sizeof(sa)));
	*s = T_OK(accept(l, NULL, NULL));
}

enum { C_ACCEPT, C_RECV, C_EPOLL, C_POLL, C_SELECT, C_N };
static const char *case_name[C_N] = { "accept", "recv", "epoll_wait", "poll", "select" };

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 200;
	int l, port, c, s, cx, sx, ep, k, i, fds[2];
	struct sigaction sa;
	struct epoll_event ev = { .events = EPOLLIN };
	pthread_t sig_t, churn_t;
	char buf[16];

	setvbuf(stdout, NULL, _IONBF, 0);
	main_thread = pthread_self();
	main_tid = (pid_t)syscall(SYS_gettid);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;	/* no SA_RESTART: every call says EINTR */
	sigemptyset(&sa.sa_mask);
	T_OK(sigaction(SIGUSR1, &sa, NULL));

	l = listener(&port);
	pair(l, port, &c, &s);
	pair(l, port, &cx, &sx);
	fds[0] = cx;
	fds[1] = sx;
	ep = T_OK(epoll_create1(EPOLL_CLOEXEC));
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	T_OK(pthread_create(&sig_t, NULL, signaller, NULL));

	spin_mode = argc > 2 && strcmp(argv[2], "spin") == 0;
	for (k = 0; k < C_N; k++) {
		int eintr = 0;

		if (spin_mode && k != C_EPOLL)
			continue;
		cur_case = case_name[k];
		if (k == C_RECV)	/* wake-ups that are not for the waiter */
			T_OK(pthread_create(&churn_t, NULL, churn, fds));
		for (i = 0; i < iters; i++) {
			long r = 0;
			int e;

			atomic_store(&cur_iter, i);
			got = 0;
			atomic_fetch_add(&seq, 1);
			errno = 0;
			switch (k) {
			case C_ACCEPT:
				r = accept(l, NULL, NULL);
				break;
			case C_RECV:
				r = recv(s, buf, sizeof(buf), 0);
				break;
			case C_EPOLL:
				r = epoll_wait(ep, &ev, 1, -1);
				break;
			case C_POLL: {
				struct pollfd p = { .fd = s, .events = POLLIN };

				r = poll(&p, 1, -1);
				break;
			}
			case C_SELECT: {
				fd_set rs;

				FD_ZERO(&rs);
				FD_SET(s, &rs);
				r = select(s + 1, &rs, NULL, NULL, NULL);
				break;
			}
			}
			e = errno;
			atomic_fetch_add(&seq, 1);
			if (r != -1 || e != EINTR || !got) {
				fprintf(stderr, "t_sigrace: %s, iteration %d: returned %ld errno %d (%s), "
					"handler ran: %d; want -1 EINTR after the handler\n",
					cur_case, i, r, e, strerror(e), (int)got);
				t_failures++;
				if (r >= 0 && k == C_ACCEPT)
					close((int)r);
				break;
			}
			eintr++;
		}
		printf("t_sigrace: %s: %d/%d calls interrupted\n", cur_case, eintr, iters);
	}
	atomic_store(&seq, -1);
	pthread_join(sig_t, NULL);
	atomic_store(&churn_stop, 1);
	shutdown(cx, SHUT_RDWR);
	shutdown(sx, SHUT_RDWR);
	if (!spin_mode)
		pthread_join(churn_t, NULL);
	close(ep);
	close(c);
	close(s);
	close(cx);
	close(sx);
	close(l);
	return t_done("t_sigrace");
}
