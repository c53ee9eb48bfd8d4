/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_echo.c - a small TCP echo server and client on 127.0.0.1 that goes
 * through the calls a real server makes: socket, setsockopt, bind, listen,
 * getsockname, non-blocking connect (EINPROGRESS, poll, SO_ERROR), accept4,
 * epoll (level and EPOLLET), poll, select, read/write, readv/writev,
 * send/recv, sendmsg/recvmsg, sendfile, shutdown, FIONREAD, fcntl, dup2,
 * fork.  Run plainly, under the shim's kernel fallback, or on fsstack: the
 * outcome must be the same.
 *
 * Exit: 0 ok, 1 a check failed, 2 socket() failed (prints the errno),
 * 3 another call failed.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tcommon.h"

#define MSG "hello, fsstack"
#define ROUNDS 50

static int tcp_socket(int flags)
{
	int fd = socket(AF_INET, SOCK_STREAM | flags, 0);

	if (fd < 0) {
		printf("socket: %s\n", strerror(errno));
		fflush(stdout);
		exit(2);
	}
	return fd;
}

static void full_write(int fd, const void *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = { fd, POLLOUT, 0 };

			poll(&p, 1, 1000);
			continue;
		}
		T_OK(n);
		buf = (const char *)buf + n;
		len -= (size_t)n;
	}
}

static void full_read(int fd, void *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = read(fd, buf, len);

		T_OK(n);
		if (n == 0) {
			fprintf(stderr, "unexpected end of stream\n");
			exit(1);
		}
		buf = (char *)buf + n;
		len -= (size_t)n;
	}
}

/* The client: connects non-blocking, then talks in several styles. */
static int client(struct sockaddr_in *sin)
{
	char buf[4096], a[8], b[16];
	struct iovec iov[2];
	struct msghdr mh;
	socklen_t len;
	int fd, err, i, avail;
	fd_set rs;
	char tmpl[] = "/tmp/fss_echo_XXXXXX";
	int file;
	off_t off = 0;

	fd = tcp_socket(SOCK_NONBLOCK);
	if (connect(fd, (struct sockaddr *)sin, sizeof(*sin)) < 0) {
		struct pollfd p = { fd, POLLOUT, 0 };

		T_CHECK(errno == EINPROGRESS);
		T_CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLOUT));
	}
	len = sizeof(err);
	T_OK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len));
	T_CHECK(err == 0);
	/* back to blocking, through fcntl */
	T_OK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK));
	T_CHECK(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
	T_OK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int)));

	/* write/read, many rounds */
	for (i = 0; i < ROUNDS; i++) {
		full_write(fd, MSG, sizeof(MSG));
		full_read(fd, buf, sizeof(MSG));
		T_CHECK(memcmp(buf, MSG, sizeof(MSG)) == 0);
	}

	/* writev / select / FIONREAD / readv */
	iov[0] = (struct iovec){ "0123456", 8 };
	iov[1] = (struct iovec){ "89abcdefghijklm", 16 };
	T_CHECK(writev(fd, iov, 2) == 24);
	FD_ZERO(&rs);
	FD_SET(fd, &rs);
	T_CHECK(select(fd + 1, &rs, NULL, NULL, &(struct timeval){ 5, 0 }) == 1 && FD_ISSET(fd, &rs));
	for (i = 0; i < 100; i++) {	/* the echo may come in pieces */
		T_OK(ioctl(fd, FIONREAD, &avail));
		if (avail >= 24)
			break;
		usleep(10000);
	}
	T_CHECK(avail == 24);
	iov[0] = (struct iovec){ a, sizeof(a) };
	iov[1] = (struct iovec){ b, sizeof(b) };
	T_CHECK(readv(fd, iov, 2) == 24);
	T_CHECK(memcmp(a, "0123456", 8) == 0 && memcmp(b, "89abcdefghijklm", 16) == 0);

	/* sendmsg / recv(MSG_WAITALL) */
	memset(&mh, 0, sizeof(mh));
	iov[0] = (struct iovec){ (void *)MSG, sizeof(MSG) };
	mh.msg_iov = iov;
	mh.msg_iovlen = 1;
	T_CHECK(sendmsg(fd, &mh, MSG_NOSIGNAL) == sizeof(MSG));
	T_CHECK(recv(fd, buf, sizeof(MSG), MSG_WAITALL) == sizeof(MSG));
	T_CHECK(memcmp(buf, MSG, sizeof(MSG)) == 0);

	/* sendfile from a temporary file */
	file = T_OK(mkstemp(tmpl));
	unlink(tmpl);
	for (i = 0; i < (int)sizeof(buf); i++)
		buf[i] = (char)('a' + i % 26);
	T_CHECK(write(file, buf, sizeof(buf)) == sizeof(buf));
	T_CHECK(sendfile(fd, file, &off, sizeof(buf)) == sizeof(buf) && off == sizeof(buf));
	close(file);
	{
		char back[sizeof(buf)];

		full_read(fd, back, sizeof(back));
		T_CHECK(memcmp(back, buf, sizeof(buf)) == 0);
	}

	/* dup2 the socket onto another number, talk through the copy */
	T_OK(dup2(fd, 100));
	full_write(100, MSG, sizeof(MSG));
	full_read(fd, buf, sizeof(MSG));
	T_CHECK(close(100) == 0);

	/* half-close: the server sees EOF and closes; we see EOF */
	T_OK(shutdown(fd, SHUT_WR));
	T_CHECK(read(fd, buf, sizeof(buf)) == 0);
	T_OK(close(fd));
	return t_failures ? 1 : 0;
}

/* The server: one connection, served from epoll (EPOLLET, non-blocking). */
static void serve(int lfd)
{
	struct epoll_event ev, evs[8];
	int ep, cfd = -1, n, i, done = 0;
	char buf[65536];

	ep = T_OK(epoll_create1(EPOLL_CLOEXEC));
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev));
	while (!done) {
		n = epoll_wait(ep, evs, 8, 10000);
		T_OK(n);
		if (n == 0) {
			fprintf(stderr, "server: epoll_wait timed out\n");
			exit(1);
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.fd == lfd) {
				struct sockaddr_in peer;
				socklen_t plen = sizeof(peer);

				cfd = T_OK(accept4(lfd, (struct sockaddr *)&peer, &plen,
						   SOCK_NONBLOCK | SOCK_CLOEXEC));
				T_CHECK(plen == sizeof(peer) && peer.sin_family == AF_INET);
				T_CHECK(fcntl(cfd, F_GETFD) & FD_CLOEXEC);
				ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
				ev.data.fd = cfd;
				T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev));
				T_OK(epoll_ctl(ep, EPOLL_CTL_DEL, lfd, NULL));
				continue;
			}
			/* edge-triggered: drain until EAGAIN */
			for (;;) {
				ssize_t r = read(cfd, buf, sizeof(buf));

				if (r < 0) {
					T_CHECK(errno == EAGAIN);
					break;
				}
				if (r == 0) {
					done = 1;
					break;
				}
				full_write(cfd, buf, (size_t)r);
			}
		}
	}
	close(cfd);
	close(ep);
}

int main(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int lfd, status;
	pid_t pid;

	signal(SIGPIPE, SIG_IGN);
	alarm(30);		/* a hang is a failure, not a stuck test run */
	lfd = tcp_socket(0);
	T_OK(setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int)));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	T_OK(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)));
	T_OK(listen(lfd, 16));
	T_OK(getsockname(lfd, (struct sockaddr *)&sin, &len));
	T_CHECK(sin.sin_port != 0);

	fflush(stdout);
	pid = T_OK(fork());
	if (pid == 0) {
		close(lfd);
		_exit(client(&sin));
	}
	serve(lfd);
	close(lfd);
	T_OK(waitpid(pid, &status, 0));
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return t_done("t_echo");
}
