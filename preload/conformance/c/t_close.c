/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_close: shutdown and close: half-close (SHUT_WR, the peer reads EOF and
 * can still send), SHUT_RD, ECONNRESET from an SO_LINGER {1,0} close and from
 * closing with unread data, EPIPE with SIGPIPE, and MSG_NOSIGNAL.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <sys/uio.h>
#include <sys/wait.h>

static int pipes(void)
{
	return (int)conf_sigcount[SIGPIPE];
}

/* wait_for waits until fd reports one of the bits in want, and returns
 * everything poll reported for POLLIN|POLLOUT|POLLRDHUP then. */
static int wait_for(int fd, short want)
{
	double deadline = now_ms() + 2000;
	int ev = 0;

	while (now_ms() < deadline) {
		ev = wait_ev(fd, POLLIN | POLLOUT | POLLRDHUP | want, 100);
		if (ev & want)
			break;
		usleep(1000);
	}
	return ev;
}

int main(void)
{
	char buf[64];
	int l, c, s, port, p0;
	ssize_t n;

	conf_init("t_close", "half-close, ECONNRESET, EPIPE/SIGPIPE, MSG_NOSIGNAL");
	l = tcp_listener(0, 16, &port);
	note_port(port, "L1");

	section("half-close: SHUT_WR, then the peer reads EOF");
	c = tcp_client(port);
	s = accept_wait(l);
	R(write(c, "last", 4));
	R(shutdown(c, SHUT_WR));
	say("peer read = %zu byte(s)", read_n(s, buf, 4, 2000));
	say("peer revents after FIN = %s", fmt_poll(wait_for(s, POLLRDHUP)));
	R(read(s, buf, sizeof buf));
	R(read(s, buf, sizeof buf));
	R(write(s, "still open", 10));
	n = (ssize_t)read_n(c, buf, 10, 2000);
	say("half-closed end reads what the peer sends: %zd \"%.*s\"", n, (int)n, buf);
	p0 = pipes();
	R(write(c, "x", 1));
	say("SIGPIPE raised: %d", pipes() - p0);
	p0 = pipes();
	R(send(c, "x", 1, MSG_NOSIGNAL));
	say("SIGPIPE raised with MSG_NOSIGNAL: %d", pipes() - p0);
	p0 = pipes();
	{
		struct iovec v = { "x", 1 };
		struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };

		R(sendmsg(c, &m, MSG_NOSIGNAL));
		say("SIGPIPE raised by sendmsg MSG_NOSIGNAL: %d", pipes() - p0);
		R(writev(c, &v, 1));
		say("SIGPIPE raised by writev: %d", pipes() - p0);
	}
	R(shutdown(c, SHUT_WR));
	R(shutdown(s, SHUT_RDWR));
	say("after both shut down: revents = %s", fmt_poll(wait_for(c, POLLHUP)));
	R(read(c, buf, sizeof buf));
	close(c);
	close(s);

	section("SHUT_RD");
	c = tcp_client(port);
	s = accept_wait(l);
	R(shutdown(s, SHUT_RD));
	R(read(s, buf, sizeof buf));
	R(recv(s, buf, sizeof buf, MSG_DONTWAIT));
	R(write(s, "fromS", 5));
	say("other direction still works: %zu", read_n(c, buf, 5, 2000));
	close(c);
	close(s);

	section("ECONNRESET: the peer closes with SO_LINGER {1,0}");
	c = tcp_client(port);
	s = accept_wait(l);
	{
		struct linger lg = { 1, 0 };

		R(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
	}
	R(close(c));
	say("revents after RST = %s", fmt_poll(wait_for(s, POLLERR)));
	{
		int e = -1;
		socklen_t el = sizeof e;

		R(recv(s, buf, sizeof buf, MSG_PEEK));
		R(read(s, buf, sizeof buf));
		R(read(s, buf, sizeof buf));
		getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el);
		say("SO_ERROR after the reset was read = %s", errname(e));
	}
	p0 = pipes();
	R(write(s, "x", 1));
	say("SIGPIPE raised: %d", pipes() - p0);
	R(getpeername(s, (struct sockaddr *)&(struct sockaddr_in){ 0 }, &(socklen_t){ sizeof(struct sockaddr_in) }));
	close(s);

	section("ECONNRESET: the peer closes with unread data");
	c = tcp_client(port);
	s = accept_wait(l);
	R(write(c, "unread", 6));
	if (!(wait_ev(s, POLLIN, 2000) & POLLIN))
		die("data did not arrive");
	R(close(s));
	say("revents after RST = %s", fmt_poll(wait_for(c, POLLERR)));
	R(read(c, buf, sizeof buf));
	{
		int e = -1;
		socklen_t el = sizeof e;

		getsockopt(c, SOL_SOCKET, SO_ERROR, &e, &el);
		say("SO_ERROR after read = %s", errname(e));
	}
	R(read(c, buf, sizeof buf));
	p0 = pipes();
	R(send(c, "x", 1, MSG_NOSIGNAL));
	say("SIGPIPE raised with MSG_NOSIGNAL: %d", pipes() - p0);
	close(c);

	section("EPIPE: writing after the peer closed");
	c = tcp_client(port);
	s = accept_wait(l);
	R(close(s));
	say("revents after FIN = %s", fmt_poll(wait_for(c, POLLRDHUP)));
	R(write(c, "first", 5));
	say("revents after the peer's RST = %s", fmt_poll(wait_for(c, POLLERR)));
	p0 = pipes();
	R(write(c, "second", 6));
	say("SIGPIPE raised: %d", pipes() - p0);
	p0 = pipes();
	R(write(c, "third", 5));
	say("SIGPIPE raised: %d", pipes() - p0);
	R(read(c, buf, sizeof buf));
	close(c);

	section("SO_LINGER {1,1} with unsent data: close blocks about a second");
	{
		int small = 16384, lc, ls;
		struct linger lg = { 1, 1 };
		double t0, c0, el;

		lc = tcp_client(port);
		ls = accept_wait(l);
		setsockopt(lc, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
		setsockopt(ls, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
		say("filled (the peer not reading): %d", fill_sndbuf(lc) > 0);
		R(setsockopt(lc, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
		t0 = now_ms();
		c0 = cpu_ms();
		R(close(lc));
		el = now_ms() - t0;
		say("  close returned: %s, cpu: %s", bucket(el, 1000), spin(cpu_ms() - c0, el));
		close(ls);
	}

	section("SO_LINGER {1,5} with unsent data the peer then reads: close returns once it is sent");
	{
		/* The reader is another process, so that nothing of its own
		 * (its reads' wake-ups) can end the lingering close's wait: only
		 * the room its reads make in the sender's buffers can. */
		int small = 16384, ls, p[2];
		struct linger lg = { 1, 5 };
		long sent, got = -1;
		double t0, el;
		pid_t pid;
		int st = 0;

		if (pipe(p) < 0)
			die("pipe");
		fflush(stdout);
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			long n = 0;
			ssize_t k;
			int rc;

			close(p[0]);
			rc = tcp_client(port);
			usleep(1500000);	/* the sender fills and lingers meanwhile */
			while ((k = read(rc, buf, sizeof buf)) > 0)
				n += k;
			if (write(p[1], &n, sizeof n) != sizeof n)
				_exit(1);
			_exit(0);
		}
		close(p[1]);
		ls = accept_wait(l);
		setsockopt(ls, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
		sent = fill_sndbuf(ls);
		say("filled (the peer not reading): %d", sent > 0);
		R(setsockopt(ls, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
		t0 = now_ms();
		R(close(ls));
		el = now_ms() - t0;
		say("  close returned before the linger time ran out: %d", el < 4000);
		if (read(p[0], &got, sizeof got) != sizeof got)
			got = -1;
		close(p[0]);
		waitpid(pid, &st, 0);
		say("  the peer read everything: %d", got == sent);
	}

	section("reset or closed while still in the accept queue");
	{
		struct linger lg = { 1, 0 };

		c = tcp_client(port);
		setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		R(close(c));
		/* Nothing to wait on: the listener is readable before and after
		 * the RST arrives.  100 ms is ample on any stack. */
		usleep(100000);
		say("listener revents = %s", fmt_poll(wait_ev(l, POLLIN, 0)));
		s = RFD(accept(l, NULL, NULL));
		R(read(s, buf, sizeof buf));
		R(read(s, buf, sizeof buf));
		close(s);
		c = tcp_client(port);
		R(close(c));
		usleep(100000);
		s = RFD(accept(l, NULL, NULL));
		say("revents = %s", fmt_poll(wait_for(s, POLLRDHUP)));
		R(read(s, buf, sizeof buf));
		R(write(s, "x", 1));
		say("after the peer's RST: revents = %s", fmt_poll(wait_for(s, POLLERR)));
		p0 = pipes();
		R(write(s, "x", 1));
		say("SIGPIPE raised: %d", pipes() - p0);
		close(s);
	}

	section("SIGPIPE's default action ends the writer");
	{
		pid_t pid;
		int st = 0;

		c = tcp_client(port);
		s = accept_wait(l);
		R(shutdown(c, SHUT_WR));
		fflush(stdout);
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			signal(SIGPIPE, SIG_DFL);
			if (write(c, "x", 1) < 0)
				_exit(errno == EPIPE ? 10 : 11);
			_exit(12);
		}
		waitpid(pid, &st, 0);
		say("child: exited %d, killed by %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
		    WIFSIGNALED(st) ? sigabbrev_np(WTERMSIG(st)) : "nothing");
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			signal(SIGPIPE, SIG_DFL);
			if (send(c, "x", 1, MSG_NOSIGNAL) < 0)
				_exit(errno == EPIPE ? 10 : 11);
			_exit(12);
		}
		waitpid(pid, &st, 0);
		say("child with MSG_NOSIGNAL: exited %d (10: EPIPE), killed by %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
		    WIFSIGNALED(st) ? sigabbrev_np(WTERMSIG(st)) : "nothing");
		close(c);
		close(s);
	}

	section("a listener closed with connections in its queue resets them");
	{
		int ql, qport, q1, q2;

		ql = tcp_listener(0, 8, &qport);
		q1 = tcp_client(qport);
		q2 = tcp_client(qport);
		R(write(q2, "early", 5));
		R(close(ql));
		say("queued client revents = %s", fmt_poll(wait_for(q1, POLLERR)));
		R(read(q1, buf, sizeof buf));
		say("queued client that had sent data: revents = %s", fmt_poll(wait_for(q2, POLLERR)));
		R(read(q2, buf, sizeof buf));
		close(q1);
		close(q2);
	}

	section("shutdown errors");
	{
		int x = socket(AF_INET, SOCK_STREAM, 0), p[2];

		R(shutdown(x, SHUT_RDWR));
		if (pipe(p) < 0)
			die("pipe");
		R(shutdown(p[0], SHUT_RD));
		c = tcp_client(port);
		s = accept_wait(l);
		R(shutdown(c, 7));
		R(shutdown(c, -1));
		close(x);
		close(p[0]);
		close(p[1]);
		close(c);
		close(s);
	}

	section("shutdown on a listener");
	R(shutdown(l, SHUT_RD));
	say("listener revents = %s", fmt_poll(wait_ev(l, POLLIN, 2000)));
	R(accept4(l, NULL, NULL, SOCK_NONBLOCK));
	R(close(l));
	return conf_end();
}
