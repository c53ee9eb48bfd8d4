/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_connect: blocking and non-blocking connect, EINPROGRESS then SO_ERROR,
 * ECONNREFUSED from a port that is bound but not listening, EISCONN, and
 * how many connections a listen backlog lets complete.
 */
#include "conf.h"

static void so_error(const char *label, int fd)
{
	int e = -1;
	socklen_t el = sizeof e;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
		printf("%s SO_ERROR: getsockopt = -1 %s\n", label, errname(errno));
	else
		printf("%s SO_ERROR = %s\n", label, errname(e));
}

int main(void)
{
	struct sockaddr_in sa, got;
	socklen_t len;
	int l, c, s, port, closed_port, hold, ev;

	conf_init("t_connect", "blocking/non-blocking connect, EINPROGRESS, SO_ERROR, ECONNREFUSED");
	l = tcp_listener(0, 16, &port);
	note_port(port, "L1");
	/* A port that is bound (so nobody else takes it) but not listening:
	 * a SYN to it is answered with RST. */
	hold = socket(AF_INET, SOCK_STREAM, 0);
	sa_srv(&sa, 0);
	if (hold < 0 || bind(hold, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("bind the closed port");
	len = sizeof got;
	getsockname(hold, (struct sockaddr *)&got, &len);
	closed_port = ntohs(got.sin_port);
	note_port(closed_port, "CLOSED");

	section("blocking connect");
	c = RFD(socket(AF_INET, SOCK_STREAM, 0));
	client_bind(c);
	sa_srv(&sa, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa - 1));
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	len = sizeof got;
	R(getpeername(c, (struct sockaddr *)&got, &len));
	say("peer = %s", fmt_sa((struct sockaddr *)&got, len));
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	so_error("connected", c);
	s = accept_wait(l);
	close(s);
	close(c);

	section("blocking connect to a closed port");
	c = socket(AF_INET, SOCK_STREAM, 0);
	client_bind(c);
	sa_srv(&sa, closed_port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	so_error("after refusal", c);
	len = sizeof got;
	R(getpeername(c, (struct sockaddr *)&got, &len));
	close(c);

	section("connect on a listening socket");
	sa_srv(&sa, port);
	R(connect(l, (struct sockaddr *)&sa, sizeof sa));

	section("non-blocking connect");
	c = RFD(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
	client_bind(c);
	sa_srv(&sa, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	ev = wait_ev(c, POLLOUT, 2000);
	say("poll POLLOUT after EINPROGRESS: revents = %s", fmt_poll(ev));
	so_error("completed", c);
	len = sizeof got;
	R(getpeername(c, (struct sockaddr *)&got, &len));
	say("peer = %s", fmt_sa((struct sockaddr *)&got, len));
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	s = accept_wait(l);
	R(write(c, "x", 1));
	say("accepted end read: %zu byte(s)", read_n(s, (char[4]){ 0 }, 1, 2000));
	close(s);
	close(c);

	section("non-blocking connect to a closed port");
	c = RFD(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
	client_bind(c);
	sa_srv(&sa, closed_port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	ev = wait_ev(c, POLLOUT | POLLIN, 2000);
	say("poll POLLIN|POLLOUT after refusal: revents = %s", fmt_poll(ev));
	so_error("refused", c);
	so_error("read again", c);
	R(write(c, "x", 1));
	say("SIGPIPE raised: %d", (int)conf_sigcount[SIGPIPE]);
	R(read(c, (char[4]){ 0 }, 1));
	close(c);

	section("non-blocking connect, refusal reported by connect");
	c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	client_bind(c);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	wait_ev(c, POLLOUT, 2000);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	so_error("after connect reported it", c);
	close(c);

	section("non-blocking connect watched by epoll (EPOLLET), as proxies do");
	{
		int ep = epoll_create1(0), ok_c, bad_c, a;

		ok_c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		bad_c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		client_bind(ok_c);
		client_bind(bad_c);
		R(ep_add(ep, ok_c, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, "to-listener"));
		R(ep_add(ep, bad_c, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, "to-closed-port"));
		ep_show("registered before connect", ep, 0);
		sa_srv(&sa, port);
		R(connect(ok_c, (struct sockaddr *)&sa, sizeof sa));
		sa_srv(&sa, closed_port);
		R(connect(bad_c, (struct sockaddr *)&sa, sizeof sa));
		/* Let both settle first (poll does not consume epoll edges),
		 * so one epoll_wait sees both whatever the timing. */
		wait_ev(ok_c, POLLOUT, 2000);
		wait_ev(bad_c, POLLERR, 2000);
		ep_show("both settled", ep, 0);
		ep_show("edges consumed", ep, 0);
		so_error("to-listener", ok_c);
		so_error("to-closed-port", bad_c);
		a = accept_wait(l);
		R(write(a, "hi", 2));
		ep_show("data on the connected one", ep, 2000);
		close(a);
		close(ok_c);
		close(bad_c);
		close(ep);
	}

	section("listen backlog: backlog + 1 connections complete, the others wait");
	for (int backlog = 0; backlog <= 2; backlog += 2) {
		int bl_port, bl = tcp_listener(SOCK_NONBLOCK, backlog, &bl_port), cl[6], done = 0, accepted = 0, a;

		/* One connect at a time, each given time to finish its
		 * handshake: a burst of SYNs that arrive while earlier
		 * handshakes are still in flight finds the accept queue empty,
		 * and a stack that answers the surplus with SYN cookies (as
		 * Linux does once its SYN queue is full) lets more connects
		 * complete than the backlog holds. Over the kernel's own
		 * loopback-like path each handshake ends inside connect(), so
		 * the burst never shows it there; spacing the connects asks
		 * the same question of every stack. The SYNs beyond the queue
		 * are dropped and retried after 1 s: look before then. */
		for (int i = 0; i < 6; i++) {
			cl[i] = tcp_client_nb(bl_port);
			wait_ev(cl[i], POLLOUT, 100);
		}
		usleep(100000);
		for (int i = 0; i < 6; i++) {
			int e = -1;
			socklen_t el = sizeof e;

			if ((wait_ev(cl[i], POLLOUT, 0) & POLLOUT) &&
			    getsockopt(cl[i], SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
				done++;
		}
		while ((a = accept(bl, NULL, NULL)) >= 0) {
			accepted++;
			close(a);
		}
		say("backlog %d, 6 connects: completed %d, accepted %d", backlog, done, accepted);
		for (int i = 0; i < 6; i++)
			close(cl[i]);
		close(bl);
	}

	section("connect after the listener closed");
	R(close(l));
	c = socket(AF_INET, SOCK_STREAM, 0);
	client_bind(c);
	sa_srv(&sa, port);
	R(connect(c, (struct sockaddr *)&sa, sizeof sa));
	close(c);
	close(hold);
	return conf_end();
}
