/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_fastsocket.c - a program written against Fastsocket's /dev/fastsocket
 * ioctl ABI (kmod-compat/fastsocket_abi.h), the way libfsocket-style code
 * uses it, to run under libfsstack.so.
 *
 *   t_fastsocket serve ADDR PORT WORKERS   open the device, SOCKET, bind,
 *       LISTEN, fork WORKERS workers that SPAWN_ALL_LISTEN (or SPAWN_LISTEN)
 *       and loop ACCEPT / read / write / CLOSE, answering each connection
 *       with a small HTTP response naming the worker and its CPU.  Prints
 *       "ready" once listening; runs until SIGTERM.  Exit 4 if the device
 *       is absent (ENOENT).
 *   t_fastsocket errors       the bad-argument cases (needs an attached shim
 *       with the module's default enable_listen_spawn=2)
 *   t_fastsocket spawn-off    SPAWN_* fail with EPERM (enable_listen_spawn=0)
 *   t_fastsocket spawn-app    enable_listen_spawn=1: SPAWN needs the
 *       application to have pinned itself
 *   t_fastsocket fuzz N       N ioctls with random arguments and commands
 *   t_fastsocket absent       open("/dev/fastsocket") fails with ENOENT
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fastsocket_abi.h"
#include "tcommon.h"

static int chan;

static int fsock(unsigned long cmd, struct fsocket_ioctl_arg *a)
{
	return ioctl(chan, cmd, a);
}

static int fsock_socket(int type)
{
	struct fsocket_ioctl_arg a = { 0 };

	a.op.socket_op.family = AF_INET;
	a.op.socket_op.type = (uint32_t)type;
	a.op.socket_op.protocol = 0;
	return fsock(FSOCKET_IOC_SOCKET, &a);
}

static int fsock_fd(unsigned long cmd, int fd)
{
	struct fsocket_ioctl_arg a = { 0 };

	a.fd = (uint32_t)fd;
	return fsock(cmd, &a);
}

static int fsock_listen(int fd, int backlog)
{
	struct fsocket_ioctl_arg a = { 0 };

	a.fd = (uint32_t)fd;
	a.backlog = (uint32_t)backlog;
	return fsock(FSOCKET_IOC_LISTEN, &a);
}

static int fsock_spawn(int fd, int cpu)
{
	struct fsocket_ioctl_arg a = { 0 };

	a.fd = (uint32_t)fd;
	a.op.spawn_op.cpu = cpu;
	return fsock(FSOCKET_IOC_SPAWN_LISTEN, &a);
}

static int fsock_accept(int fd, struct sockaddr_in *sin, int flags)
{
	struct fsocket_ioctl_arg a = { 0 };
	int len = sizeof(*sin);

	a.fd = (uint32_t)fd;
	a.op.accept_op.sockaddr = sin;
	a.op.accept_op.sockaddr_len = &len;
	a.op.accept_op.flags = flags;
	return fsock(FSOCKET_IOC_ACCEPT, &a);
}

static int open_device(void)
{
	chan = open(FSOCKET_DEVICE, O_RDONLY | O_CLOEXEC);
	return chan;
}

static int listener(const char *addr, int port, int type)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd, one = 1;

	fd = T_OK(fsock_socket(SOCK_STREAM | type));
	T_OK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
	inet_pton(AF_INET, addr, &sin.sin_addr);
	T_OK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)));
	T_OK(fsock_listen(fd, 128));
	return fd;
}

/* ---- serve ------------------------------------------------------------- */

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static void worker(int id, int lfd)
{
	struct sockaddr_in peer;
	char req[2048], resp[256], body[128];
	int c, n, cpu;

	/* after fork: spawn the inherited listeners locally (libfsocket does it
	 * for every worker); worker 1 uses the per-listener form */
	if (id == 1)
		T_OK(fsock_spawn(lfd, -1));
	else
		T_OK(fsock_fd(FSOCKET_IOC_SPAWN_ALL_LISTEN, -1));
	{
		cpu_set_t set;

		T_OK(sched_getaffinity(0, sizeof(set), &set));
		if (CPU_COUNT(&set) != 1) {
			fprintf(stderr, "worker %d: spawned but runs on %d CPUs\n", id, CPU_COUNT(&set));
			exit(5);
		}
	}
	while (!stop) {
		c = fsock_accept(lfd, &peer, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "worker %d: accept: %s\n", id, strerror(errno));
			exit(6);
		}
		if (peer.sin_family != AF_INET)
			fprintf(stderr, "worker %d: accept gave family %d\n", id, peer.sin_family);
		n = (int)read(c, req, sizeof(req) - 1);
		if (n > 0) {
			cpu = sched_getcpu();
			int bl = snprintf(body, sizeof(body), "fastsocket worker %d cpu %d\n", id, cpu);
			int rl = snprintf(resp, sizeof(resp),
					  "HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
					  bl, body);
			if (write(c, resp, (size_t)rl) != rl)
				fprintf(stderr, "worker %d: short write: %s\n", id, strerror(errno));
		}
		if (fsock_fd(FSOCKET_IOC_CLOSE, c) < 0) {
			fprintf(stderr, "worker %d: close: %s\n", id, strerror(errno));
			exit(7);
		}
	}
	exit(0);
}

static int serve(const char *addr, int port, int workers)
{
	struct sigaction sa = { .sa_handler = on_term };
	pid_t pids[64];
	int lfd, i, st, rc = 0;

	if (open_device() < 0) {
		printf("open %s: %s\n", FSOCKET_DEVICE, strerror(errno));
		return errno == ENOENT ? 4 : 3;
	}
	sigaction(SIGTERM, &sa, NULL);	/* no SA_RESTART: accept returns EINTR */
	lfd = listener(addr, port, 0);
	if (workers > 64)
		workers = 64;
	for (i = 0; i < workers; i++) {
		pids[i] = T_OK(fork());
		if (pids[i] == 0)
			worker(i, lfd);
	}
	printf("ready\n");
	fflush(stdout);
	while (!stop)
		pause();
	for (i = 0; i < workers; i++) {
		kill(pids[i], SIGTERM);
		if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "worker %d ended with status %#x\n", i, st);
			rc = 1;
		}
	}
	T_OK(fsock_fd(FSOCKET_IOC_CLOSE, lfd));
	return rc;
}

/* ---- bad arguments ------------------------------------------------------ */

#define T_ERR(expr, err)						\
	do {								\
		errno = 0;						\
		int t_e_ = (expr);					\
		if (t_e_ != -1 || errno != (err)) {			\
			fprintf(stderr, "%s:%d: %s = %d errno %d (%s), want -1 %s\n", \
				__FILE__, __LINE__, #expr, t_e_, errno,	\
				strerror(errno), #err);			\
			t_failures++;					\
		}							\
	} while (0)

/* ACCEPT on a non-blocking listener, waiting until a connection is queued. */
static int accept_queued(struct fsocket_ioctl_arg *b)
{
	int k, r = -1;

	for (k = 0; k < 200; k++) {
		errno = 0;
		r = fsock(FSOCKET_IOC_ACCEPT, b);
		if (r >= 0 || errno != EAGAIN)
			break;
		usleep(10000);
	}
	return r;
}

static int errors(void)
{
	struct fsocket_ioctl_arg a = { 0 };
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	int lfd, s, c, p[2], nul, ch2, on = 1, acc = 0;
	void *page;

	T_OK(open_device());
	T_CHECK((fcntl(chan, F_GETFD) & FD_CLOEXEC) != 0);
	/* the argument is read first: unreadable pointers are EFAULT */
	T_ERR(ioctl(chan, FSOCKET_IOC_SOCKET, NULL), EFAULT);
	T_ERR(ioctl(chan, FSOCKET_IOC_LISTEN, (void *)1), EFAULT);
	/* a page nobody may touch, kept reserved so nothing else lands there */
	page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	T_CHECK(page != MAP_FAILED);
	T_ERR(ioctl(chan, FSOCKET_IOC_ACCEPT, page), EFAULT);
	T_ERR(ioctl(chan, FSOCKET_IOC_SOCKET, (char *)-4096L), EFAULT);
	/* unknown commands, and a known number with size bits: EINVAL */
	T_ERR(ioctl(chan, _IO(FSOCKET_IOC_ID, 0x05), &a), EINVAL);	/* EPOLL_CTL: never served */
	T_ERR(ioctl(chan, _IO(FSOCKET_IOC_ID, 0x7f), &a), EINVAL);
	T_ERR(ioctl(chan, _IOW(FSOCKET_IOC_ID, 0x01, struct fsocket_ioctl_arg), &a), EINVAL);
	T_ERR(ioctl(chan, TCGETS, &a), EINVAL);
	/* generic fd ioctls are the kernel's */
	T_OK(ioctl(chan, FIONBIO, &on));
	T_CHECK(fcntl(chan, F_GETFL) & O_NONBLOCK);
	/* Fastsocket commands on an fd that is not a channel: the kernel's ENOTTY */
	nul = T_OK(open("/dev/null", O_RDWR));
	T_ERR(ioctl(nul, FSOCKET_IOC_SOCKET, &a), ENOTTY);
	/* bad fds */
	T_ERR(fsock_listen(9999, 1), EBADF);
	T_ERR(fsock_listen(-1, 1), EBADF);
	T_ERR(fsock_fd(FSOCKET_IOC_CLOSE, 9999), EBADF);
	T_ERR(fsock_spawn(9999, -1), EBADF);
	T_ERR(fsock_accept(9999, &sin, 0), EBADF);
	T_ERR(fsock_accept(nul, &sin, 0), ENOTSOCK);
	T_ERR(fsock_fd(FSOCKET_IOC_CLOSE, -1), EBADF);
	T_ERR(fsock_listen((int)0x80000000u, 1), EBADF);	/* fd is a u32: above INT_MAX */
	a = (struct fsocket_ioctl_arg){ .fd = 9999 };
	a.op.shutdown_op.how = SHUT_RDWR;
	T_ERR(fsock(FSOCKET_IOC_SHUTDOWN_LISTEN, &a), EBADF);
	/* an fd that is not a socket: the kernel's ENOTSOCK */
	T_ERR(fsock_listen(nul, 1), ENOTSOCK);
	a.fd = (uint32_t)nul;
	T_ERR(fsock(FSOCKET_IOC_SHUTDOWN_LISTEN, &a), ENOTSOCK);
	T_ERR(fsock_spawn(nul, -1), EINVAL);
	/* the argument's tail on an unreadable page (a short argument): EFAULT */
	{
		char *two = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		T_CHECK(two != MAP_FAILED && mprotect(two + 4096, 4096, PROT_NONE) == 0);
		T_ERR(ioctl(chan, FSOCKET_IOC_SOCKET, two + 4096 - 16), EFAULT);
		T_ERR(ioctl(chan, FSOCKET_IOC_CLOSE, two + 4096 - 4), EFAULT);
		T_ERR(ioctl(chan, FSOCKET_IOC_SPAWN_ALL_LISTEN, two + 4096 - 8), EFAULT);
		munmap(two, 8192);
	}
	/* LISTEN on a datagram socket: the kernel's EOPNOTSUPP */
	a = (struct fsocket_ioctl_arg){ 0 };
	a.op.socket_op.family = AF_INET;
	a.op.socket_op.type = SOCK_DGRAM;
	s = T_OK(fsock(FSOCKET_IOC_SOCKET, &a));
	T_ERR(fsock_listen(s, 1), EOPNOTSUPP);
	T_OK(fsock_fd(FSOCKET_IOC_CLOSE, s));
	/* SOCKET with type bits no socket has: EINVAL */
	a.op.socket_op.type = SOCK_STREAM | 0x40000000;
	T_ERR(fsock(FSOCKET_IOC_SOCKET, &a), EINVAL);
	a = (struct fsocket_ioctl_arg){ 0 };
	/* SOCKET: fsstack for AF_INET stream (flags honoured), kernel otherwise */
	a.op.socket_op.family = 12345;
	a.op.socket_op.type = SOCK_STREAM;
	T_ERR(fsock(FSOCKET_IOC_SOCKET, &a), EAFNOSUPPORT);
	a.op.socket_op.family = AF_UNIX;
	s = T_OK(fsock(FSOCKET_IOC_SOCKET, &a));
	T_CHECK(getsockopt(s, SOL_SOCKET, SO_DOMAIN, &acc, &slen) == 0 && acc == AF_UNIX);
	T_OK(fsock_fd(FSOCKET_IOC_CLOSE, s));
	s = T_OK(fsock_socket(SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC));
	T_CHECK(fcntl(s, F_GETFL) & O_NONBLOCK);
	T_CHECK(fcntl(s, F_GETFD) & FD_CLOEXEC);
	/* not listening: ACCEPT and SPAWN are EINVAL; SPAWN on a kernel fd too */
	T_ERR(fsock_accept(s, &sin, 0), EINVAL);
	T_ERR(fsock_spawn(s, -1), EINVAL);
	T_OK(pipe(p));
	T_ERR(fsock_spawn(p[0], -1), EINVAL);
	/* a listener: bad CPUs and flags */
	lfd = listener("127.0.0.1", 0, SOCK_NONBLOCK);
	T_ERR(fsock_spawn(lfd, 1 << 20), EINVAL);
	T_ERR(fsock_spawn(lfd, -2), EINVAL);
	T_ERR(fsock_accept(lfd, &sin, 0x40000000), EINVAL);
	T_ERR(fsock_accept(lfd, &sin, 0), EAGAIN);	/* non-blocking, nothing queued */
	slen = sizeof(acc);
	T_CHECK(getsockopt(lfd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &slen) == 0 && acc == 1);
	/* a connection: ACCEPT with a bad sockaddr is EFAULT, not a crash */
	slen = sizeof(sin);
	T_OK(getsockname(lfd, (struct sockaddr *)&sin, &slen));
	c = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	T_OK(connect(c, (struct sockaddr *)&sin, sizeof(sin)));
	{
		struct fsocket_ioctl_arg b = { 0 };
		int len = sizeof(sin), c2;

		b.fd = (uint32_t)lfd;
		b.op.accept_op.sockaddr = (void *)16;
		b.op.accept_op.sockaddr_len = &len;
		T_ERR(accept_queued(&b), EFAULT);
		/* as in the kernel, that connection is gone; another one */
		c2 = T_OK(socket(AF_INET, SOCK_STREAM, 0));
		T_OK(connect(c2, (struct sockaddr *)&sin, sizeof(sin)));
		b.op.accept_op.sockaddr = &sin;
		b.op.accept_op.sockaddr_len = (int *)page;
		T_ERR(accept_queued(&b), EFAULT);
		close(c2);
	}
	/* SPAWN on the listener: the caller is pinned to one CPU */
	T_OK(fsock_spawn(lfd, -1));
	{
		cpu_set_t set;

		T_OK(sched_getaffinity(0, sizeof(set), &set));
		T_CHECK(CPU_COUNT(&set) == 1);
	}
	T_OK(fsock_spawn(lfd, 0));
	T_OK(fsock_fd(FSOCKET_IOC_SPAWN_ALL_LISTEN, -1));
	/* SHUTDOWN_LISTEN is shutdown(): a bad how is EINVAL, then SHUT_RD works */
	a = (struct fsocket_ioctl_arg){ .fd = (uint32_t)lfd };
	a.op.shutdown_op.how = 99;
	T_ERR(fsock(FSOCKET_IOC_SHUTDOWN_LISTEN, &a), EINVAL);
	a.op.shutdown_op.how = SHUT_RDWR;
	T_OK(fsock(FSOCKET_IOC_SHUTDOWN_LISTEN, &a));
	/* CLOSE closes any fd; a second CLOSE is EBADF */
	T_OK(fsock_fd(FSOCKET_IOC_CLOSE, p[1]));
	T_ERR(write(p[1], "x", 1), EBADF);
	T_ERR(fsock_fd(FSOCKET_IOC_CLOSE, p[1]), EBADF);
	/* a dup of the channel is a channel; the closed channel's number,
	 * reused by a file, is not */
	ch2 = T_OK(dup(chan));
	T_OK(close(chan));
	chan = ch2;
	s = T_OK(fsock_socket(SOCK_STREAM));
	T_OK(fsock_fd(FSOCKET_IOC_CLOSE, s));
	T_OK(close(ch2));
	nul = T_OK(open("/dev/null", O_RDWR));	/* likely ch2's number */
	T_ERR(ioctl(nul, FSOCKET_IOC_SOCKET, &a), ENOTTY);
	/* a fork child inherits a working channel */
	T_OK(open_device());
	{
		pid_t pid = T_OK(fork());
		int st;

		if (pid == 0) {
			s = fsock_socket(SOCK_STREAM);
			_exit(s >= 0 && fsock_fd(FSOCKET_IOC_CLOSE, s) == 0 ? 0 : 1);
		}
		T_OK(waitpid(pid, &st, 0));
		T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	T_OK(fsock_fd(FSOCKET_IOC_CLOSE, lfd));
	T_OK(close(c));
	return t_done("t_fastsocket errors");
}

static int spawn_off(void)
{
	int lfd;

	T_OK(open_device());
	lfd = listener("127.0.0.1", 0, 0);
	T_ERR(fsock_spawn(lfd, -1), EPERM);
	T_ERR(fsock_fd(FSOCKET_IOC_SPAWN_ALL_LISTEN, -1), EPERM);
	return t_done("t_fastsocket spawn-off");
}

static int spawn_app(void)
{
	cpu_set_t set;
	int lfd, cpu;

	T_OK(open_device());
	lfd = listener("127.0.0.1", 0, 0);
	T_OK(sched_getaffinity(0, sizeof(set), &set));
	if (CPU_COUNT(&set) > 1)	/* not pinned: the application must pin first */
		T_ERR(fsock_spawn(lfd, -1), EINVAL);
	cpu = sched_getcpu();
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	T_OK(sched_setaffinity(0, sizeof(set), &set));
	T_OK(fsock_spawn(lfd, -1));
	T_OK(fsock_spawn(lfd, cpu));
	T_ERR(fsock_spawn(lfd, cpu == 0 ? 1 : 0), EINVAL);
	return t_done("t_fastsocket spawn-app");
}

/*
 * Random arguments: every field of the argument random (pointers too), the
 * fd field either never open or one of three sacrificial fds (a socket that
 * does not listen, a pipe end, a file), random commands of Fastsocket's type
 * with random direction and size bits.  Invariants: the host never crashes,
 * every call returns a new fd (closed again) or -1 with an errno the kernel
 * could give for it, and the channel and the test's own fds stay open.
 */
static int fuzz(int rounds)
{
	static const int ok_errno[] = { EBADF, EINVAL, EFAULT, ENOTSOCK, EPERM, EAFNOSUPPORT,
		EPROTONOSUPPORT, ESOCKTNOSUPPORT, EPROTOTYPE, EOPNOTSUPP, ENOTCONN, EAGAIN,
		EACCES, ENOTTY };
	unsigned long long x = 0x9e3779b97f4a7c15ull ^ (unsigned long long)getpid();
	int sac[3], i, j, k, r;

	T_OK(open_device());
	for (i = 0; i < rounds; i++) {
		struct fsocket_ioctl_arg a;
		unsigned char *b = (unsigned char *)&a;
		unsigned long cmd;

		if (i % 64 == 0) {	/* (re)make the sacrificial fds a CLOSE may have taken */
			int p[2];

			if (i)
				for (j = 0; j < 3; j++)
					close(sac[j]);
			sac[0] = T_OK(fsock_socket(SOCK_STREAM | SOCK_NONBLOCK));
			T_OK(pipe(p));
			close(p[1]);
			sac[1] = p[0];
			sac[2] = T_OK(open("/dev/null", O_RDONLY));
		}
		for (k = 0; k < (int)sizeof(a); k++) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			b[k] = (unsigned char)x;
		}
		a.fd = (x & 3) == 3 ? 5000 + (uint32_t)(x >> 40 & 1023) : (uint32_t)sac[x & 3];
		if ((x >> 8 & 3) == 0)	/* a socket()-like triple now and then */
			a.op.socket_op.family = (x >> 10 & 1) ? AF_INET : AF_UNIX;
		cmd = _IOC((unsigned)(x >> 12 & 3), FSOCKET_IOC_ID, (unsigned)(x >> 14 & 15),
			   (x >> 18 & 7) == 0 ? (unsigned)(x >> 21 & 63) : 0);
		errno = 0;
		r = ioctl(chan, cmd, (x >> 30 & 7) == 0 ? (void *)(uintptr_t)(x >> 8) : (void *)&a);
		if (r >= 0) {
			if (_IOC_NR(cmd) == 0x01 || _IOC_NR(cmd) == 0x03)
				close(r);	/* a new fd */
			continue;
		}
		for (k = 0; k < (int)(sizeof(ok_errno) / sizeof(ok_errno[0])); k++)
			if (errno == ok_errno[k])
				break;
		if (k == (int)(sizeof(ok_errno) / sizeof(ok_errno[0]))) {
			fprintf(stderr, "ioctl(%#lx) fd %u: errno %d (%s)\n", cmd, a.fd, errno, strerror(errno));
			t_failures++;
		}
	}
	T_CHECK(fcntl(chan, F_GETFD) >= 0);
	return t_done("t_fastsocket fuzz");
}

static int absent(void)
{
	T_ERR(open_device(), ENOENT);
	T_ERR(openat(AT_FDCWD, FSOCKET_DEVICE, O_RDWR), ENOENT);
	return t_done("t_fastsocket absent");
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 5 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2], atoi(argv[3]), atoi(argv[4]));
	if (argc == 2 && strcmp(argv[1], "errors") == 0)
		return errors();
	if (argc == 2 && strcmp(argv[1], "spawn-off") == 0)
		return spawn_off();
	if (argc == 2 && strcmp(argv[1], "spawn-app") == 0)
		return spawn_app();
	if (argc == 3 && strcmp(argv[1], "fuzz") == 0)
		return fuzz(atoi(argv[2]));
	if (argc == 2 && strcmp(argv[1], "absent") == 0)
		return absent();
	fprintf(stderr, "usage: t_fastsocket serve ADDR PORT WORKERS | errors | spawn-off | spawn-app | fuzz N | absent\n");
	return 2;
}
