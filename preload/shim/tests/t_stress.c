/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_stress.c - many connections, many threads: an epoll echo server (level
 * or edge triggered, one thread) and client threads each keeping several
 * connections busy with blocking writes and reads.  A lost wake-up shows as
 * a hang (alarm), a lost or reordered byte as a failed check.
 *
 *   t_stress [lt|et] [threads] [conns per thread] [rounds]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcommon.h"

static struct sockaddr_in srv;
static int nconns = 8, rounds = 200;
static _Atomic int clients_done;

static void *client(void *arg)
{
	int id = (int)(long)arg, i, r, *fds = calloc((size_t)nconns, sizeof(int));
	char msg[64], buf[64];

	for (i = 0; i < nconns; i++) {
		fds[i] = T_OK(socket(AF_INET, SOCK_STREAM, 0));
		T_OK(connect(fds[i], (struct sockaddr *)&srv, sizeof(srv)));
	}
	for (r = 0; r < rounds; r++) {
		for (i = 0; i < nconns; i++) {
			int len = snprintf(msg, sizeof(msg), "t%d c%d r%d", id, i, r);

			T_CHECK(write(fds[i], msg, (size_t)len) == len);
		}
		for (i = 0; i < nconns; i++) {
			int len = snprintf(msg, sizeof(msg), "t%d c%d r%d", id, i, r), got = 0;

			while (got < len) {
				ssize_t n = read(fds[i], buf + got, (size_t)(len - got));

				if (n <= 0) {
					T_CHECK(n > 0);
					goto out;
				}
				got += (int)n;
			}
			T_CHECK(memcmp(buf, msg, (size_t)len) == 0);
		}
	}
out:
	for (i = 0; i < nconns; i++)
		close(fds[i]);
	free(fds);
	clients_done++;
	return NULL;
}

int main(int argc, char **argv)
{
	bool et = argc > 1 && strcmp(argv[1], "et") == 0;
	int nthreads = argc > 2 ? atoi(argv[2]) : 4, i, l, ep, open_conns = 0, accepted = 0;
	int timeouts = 0;
	pthread_t th[64];
	socklen_t len = sizeof(srv);
	struct epoll_event ev, evs[64];
	char buf[4096];

	if (argc > 3)
		nconns = atoi(argv[3]);
	if (argc > 4)
		rounds = atoi(argv[4]);
	alarm(60);
	signal(SIGPIPE, SIG_IGN);
	l = T_OK(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
	srv.sin_family = AF_INET;
	srv.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	T_OK(bind(l, (struct sockaddr *)&srv, sizeof(srv)));
	T_OK(listen(l, 1024));
	T_OK(getsockname(l, (struct sockaddr *)&srv, &len));
	ep = T_OK(epoll_create1(0));
	ev.events = EPOLLIN;
	ev.data.fd = l;
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev));
	for (i = 0; i < nthreads && i < 64; i++)
		pthread_create(&th[i], NULL, client, (void *)(long)i);

	while (clients_done < nthreads || open_conns > 0) {
		int n = epoll_wait(ep, evs, 64, 1000), k;

		T_OK(n);
		if (n == 0)
			timeouts++;
		for (k = 0; k < n; k++) {
			int fd = evs[k].data.fd;

			if (fd == l) {
				int c;

				while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					ev.events = EPOLLIN | (et ? EPOLLET : 0);
					ev.data.fd = c;
					T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev));
					open_conns++;
					accepted++;
				}
				T_CHECK(errno == EAGAIN);
				continue;
			}
			for (;;) {
				ssize_t r = read(fd, buf, sizeof(buf));

				if (r > 0) {
					ssize_t w = 0;

					while (w < r) {
						ssize_t x = write(fd, buf + w, (size_t)(r - w));

						if (x < 0 && errno == EAGAIN)
							continue;	/* tiny replies: the FIFO drains */
						T_OK(x);
						w += x;
					}
					if (!et)
						break;
					continue;
				}
				if (r == 0 || (r < 0 && errno != EAGAIN)) {
					close(fd);
					open_conns--;
				}
				break;
			}
		}
	}
	for (i = 0; i < nthreads && i < 64; i++)
		pthread_join(th[i], NULL);
	T_CHECK(accepted == nthreads * nconns);
	close(ep);
	close(l);
	printf("t_stress %s: %d threads x %d conns x %d rounds, %d idle epoll_wait timeouts\n",
	       et ? "et" : "lt", nthreads, nconns, rounds, timeouts);
	return t_done("t_stress");
}
