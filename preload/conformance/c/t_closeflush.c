/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_closeflush: close(2) and shutdown(SHUT_WR) are graceful. Bytes queued
 * on a connection whose peer is not reading are all delivered, then EOF,
 * when the writer closes it right away, shuts it down for writing (and
 * then closes it), closes it and exits at once, shuts it down, closes it
 * and exits, and exits without closing it (haproxy's soft stop shuts down
 * and closes idle keep-alive connections whose last response is still
 * queued, then exits).
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <sys/wait.h>

/* drain reads c until EOF or an error; it reports the byte count and how
 * the stream ended. */
static void drain(int c, long want)
{
	static char buf[65536];
	long got = 0;
	ssize_t n;

	for (;;) {
		if (!wait_ev(c, POLLIN, 5000)) {
			say("peer: no EOF after %s bytes", got == want ? "all the" : "some of the");
			return;
		}
		n = read(c, buf, sizeof buf);
		if (n <= 0)
			break;
		got += n;
	}
	say("peer got all %s queued bytes: %d, then read = %s", want > 0 ? "the" : "(none)", got == want,
	    n == 0 ? "0 (EOF)" : errname(errno));
}

/* writer fills s, reports how much it queued on fd wr, and ends as told. */
static void writer(int s, int wr, int how)
{
	long total = fill_sndbuf(s);

	if (write(wr, &total, sizeof total) != sizeof total)
		_exit(3);
	if (how == 2)
		shutdown(s, SHUT_WR);
	if (how >= 1)
		close(s);
	_exit(0);
}

static void child_case(const char *title, int how)
{
	int c, s, p[2], st;
	long total = 0;
	pid_t pid;

	section(title);
	tcp_pair(NULL, NULL, &c, &s);
	if (pipe(p) < 0)
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(c);
		writer(s, p[1], how);
		_exit(0);
	}
	close(s);
	if (read(p[0], &total, sizeof total) != sizeof total)
		die("read total");
	say("writer queued bytes: %d", total > 0);
	waitpid(pid, &st, 0);
	say("writer exited: %d", WIFEXITED(st) && WEXITSTATUS(st) == 0);
	drain(c, total);
	close(c);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	int c, s;
	long total;

	conf_init("t_closeflush", "close is graceful: queued bytes arrive, then EOF");
	/* Six fill_sndbuf calls, each bounded at 100 rounds of 50 ms: up to
	 * 30 s by its own bound.  Under the shim a fill takes about 1 s (the
	 * daemon keeps moving bytes into the kernel socket, so rounds keep
	 * adding), and CONF_WATCHDOG_S alone killed runs that were merely
	 * slow (about 1 in 8 against shimd). */
	alarm(6 * 5 + CONF_WATCHDOG_S);

	section("close with bytes queued, the peer reads afterwards");
	tcp_pair(NULL, NULL, &c, &s);
	total = fill_sndbuf(s);
	say("queued bytes: %d", total > 0);
	R(close(s));
	drain(c, total);
	close(c);

	section("shutdown(SHUT_WR) with bytes queued, the peer reads afterwards");
	tcp_pair(NULL, NULL, &c, &s);
	total = fill_sndbuf(s);
	say("queued bytes: %d", total > 0);
	R(shutdown(s, SHUT_WR));
	drain(c, total);
	R(close(s));
	close(c);

	section("shutdown(SHUT_WR) then close with bytes queued, the peer reads afterwards");
	tcp_pair(NULL, NULL, &c, &s);
	total = fill_sndbuf(s);
	say("queued bytes: %d", total > 0);
	R(shutdown(s, SHUT_WR));
	R(close(s));
	drain(c, total);
	close(c);

	child_case("a child closes with bytes queued and exits at once", 1);
	child_case("a child shuts down, closes with bytes queued and exits at once", 2);
	child_case("a child exits with bytes queued, without closing", 0);
	return conf_end();
}
