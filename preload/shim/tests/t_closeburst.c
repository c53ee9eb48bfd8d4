/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_closeburst.c - many connections closed back to back.  A connection's
 * CLOSE is posted to the daemon without waiting for its completion, so a
 * burst fills the completion ring with completions nobody waits for, the
 * daemon stops taking requests (FSS_DSLEEP_CMPL), and the request ring fills
 * behind it.  The shim must drain the completions and ring the doorbell, or
 * the next close() waits for room on the request ring forever (alarm).
 *
 *   t_closeburst [pairs] [rounds]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcommon.h"

int main(int argc, char **argv)
{
	int pairs = argc > 1 ? atoi(argv[1]) : 400, rounds = argc > 2 ? atoi(argv[2]) : 10;
	struct sockaddr_in srv = { .sin_family = AF_INET };
	socklen_t len = sizeof(srv);
	struct rlimit rl;
	int l, r, i, *cs, *ss;
	char b;

	alarm(60);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	cs = calloc((size_t)pairs, sizeof(int));
	ss = calloc((size_t)pairs, sizeof(int));
	srv.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_OK(bind(l, (struct sockaddr *)&srv, sizeof(srv)));
	T_OK(listen(l, 1024));
	T_OK(getsockname(l, (struct sockaddr *)&srv, &len));
	for (r = 0; r < rounds; r++) {
		for (i = 0; i < pairs; i++) {
			cs[i] = T_OK(socket(AF_INET, SOCK_STREAM, 0));
			T_OK(connect(cs[i], (struct sockaddr *)&srv, sizeof(srv)));
			ss[i] = T_OK(accept(l, NULL, NULL));
		}
		for (i = 0; i < pairs; i++) {
			T_CHECK(write(cs[i], "a", 1) == 1);
			T_CHECK(read(ss[i], &b, 1) == 1 && b == 'a');
		}
		for (i = 0; i < pairs; i++) {	/* 2 x pairs CLOSEs, back to back */
			T_CHECK(close(cs[i]) == 0);
			T_CHECK(close(ss[i]) == 0);
		}
	}
	close(l);
	printf("t_closeburst %d pairs x %d rounds\n", pairs, rounds);
	return t_done("t_closeburst");
}
