/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_nest - what the conformance suite cannot see of nested epoll sets and
 * guarded copies, run on the daemon:
 *
 *   - no helper thread until an fsstack epoll set is nested; one while it is
 *     (the outer set, a plain kernel set, sees data arrive through it); none
 *     once the nested set is closed;
 *   - a fork child starts its own helper at its first wait and sees data;
 *   - after a guarded copy installed the fault handler, a fault in the
 *     application's own code still kills with SIGSEGV, and (`t_nest
 *     apphandler`) a SIGSEGV handler the application installed before still
 *     gets its faults.
 */
#include <dirent.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tcommon.h"

static int threads(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Waits up to 2 s for the thread count to become want. */
static int threads_become(int want)
{
	int n = threads();

	for (int i = 0; i < 200 && n != want; i++) {
		usleep(10000);
		n = threads();
	}
	return n;
}

static void pair(int *c, int *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int l = T_OK(socket(AF_INET, SOCK_STREAM, 0));

	T_OK(bind(l, (struct sockaddr *)&a, sizeof(a)));
	T_OK(listen(l, 4));
	T_OK(getsockname(l, (struct sockaddr *)&a, &len));
	*c = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_OK(connect(*c, (struct sockaddr *)&a, sizeof(a)));
	*s = T_OK(accept(l, NULL, NULL));
	close(l);
}

static int add(int ep, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static sigjmp_buf app_jb;
static void app_segv(int sig)
{
	(void)sig;
	siglongjmp(app_jb, 1);
}

/* `t_nest apphandler`: the application's SIGSEGV handler, installed before
 * the shim's first copy, still gets the application's faults. */
static int app_handler(void)
{
	char *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int c, s, got = 0;

	signal(SIGSEGV, app_segv);
	pair(&c, &s);
	T_CHECK(write(c, bad, 8) == -1 && errno == EFAULT);
	T_CHECK(recv(s, bad, 8, MSG_DONTWAIT) == -1 && errno == EAGAIN);
	T_OK(write(c, "z", 1));
	usleep(100000);
	T_CHECK(read(s, bad, 8) == -1 && errno == EFAULT);
	if (sigsetjmp(app_jb, 1) == 0)
		*(volatile char *)bad = 1;
	else
		got = 1;
	T_CHECK(got);
	return t_done("t_nest apphandler");
}

int main(int argc, char **argv)
{
	struct epoll_event ev[4];
	int c, s, inner, outer, st;
	char buf[16], *bad;
	pid_t pid;

	if (argc > 1 && strcmp(argv[1], "apphandler") == 0)
		return app_handler();
	pair(&c, &s);
	inner = T_OK(epoll_create1(0));
	T_OK(add(inner, s));
	T_CHECK(threads() == 1);		/* no set nested: no helper */

	outer = T_OK(epoll_create1(0));
	T_OK(add(outer, inner));
	T_CHECK(threads_become(2) == 2);	/* nested: the helper */
	T_CHECK(epoll_wait(outer, ev, 4, 0) == 0);
	T_OK(write(c, "x", 1));
	T_CHECK(epoll_wait(outer, ev, 4, 2000) == 1 && ev[0].data.fd == inner);
	T_CHECK(read(s, buf, sizeof buf) == 1);
	T_CHECK(epoll_wait(outer, ev, 4, 0) == 0);

	fflush(stdout);
	pid = T_OK(fork());
	if (pid == 0) {
		int ok = threads() == 1;	/* the helper did not come along */

		ok = ok && epoll_wait(outer, ev, 4, 3000) == 1 && ev[0].data.fd == inner;
		ok = ok && threads() == 2;	/* the child's own */
		_exit(ok ? 0 : 1);
	}
	usleep(200000);
	T_OK(write(c, "y", 1));
	T_OK(waitpid(pid, &st, 0));
	T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	T_CHECK(read(s, buf, sizeof buf) == 1);

	close(inner);				/* the only nested set */
	T_CHECK(threads_become(1) == 1);	/* the helper ends */
	close(outer);

	/* a guarded copy: EFAULT; the handler is installed now */
	bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	T_CHECK(bad != MAP_FAILED);
	T_CHECK(write(c, bad, 8) == -1 && errno == EFAULT);
	fflush(stdout);
	pid = T_OK(fork());
	if (pid == 0) {
		*(volatile char *)bad = 1;	/* the application's own fault */
		_exit(0);
	}
	T_OK(waitpid(pid, &st, 0));
	T_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);

	close(c);
	close(s);
	return t_done("t_nest");
}
