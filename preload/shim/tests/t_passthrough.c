/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_passthrough.c - descriptors that are not fsstack sockets must behave
 * exactly as without the shim: files, pipes, unix sockets (with SCM_RIGHTS),
 * UDP, eventfd; dup2/fcntl/ioctl on them; poll, select and epoll
 * over them; errno left alone on success.  Meant to run under
 * FSSTACK_FALLBACK=fail, where AF_INET stream sockets fail and everything
 * else must still work.
 *
 * Exit: 0 ok, 1 a check failed, 3 a call failed.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcommon.h"

static void files(void)
{
	char tmpl[] = "/tmp/fss_pt_XXXXXX", buf[16];
	int fd, fd2, p[2];
	off_t off = 0;

	fd = T_OK(mkstemp(tmpl));
	unlink(tmpl);
	T_CHECK(write(fd, "filedata", 8) == 8);
	T_CHECK(lseek(fd, 0, SEEK_SET) == 0);
	T_CHECK(read(fd, buf, sizeof(buf)) == 8 && memcmp(buf, "filedata", 8) == 0);

	/* dup2 onto a fixed number and fcntl flags */
	T_CHECK(dup2(fd, 77) == 77);
	T_CHECK(lseek(77, 0, SEEK_CUR) == 8);
	T_CHECK(fcntl(77, F_SETFD, FD_CLOEXEC) == 0 && fcntl(77, F_GETFD) == FD_CLOEXEC);
	fd2 = T_OK(fcntl(77, F_DUPFD_CLOEXEC, 200));
	T_CHECK(fd2 >= 200);
	T_CHECK(dup3(fd2, 78, O_CLOEXEC) == 78);
	T_CHECK(close(fd2) == 0 && close(77) == 0 && close(78) == 0);
	T_CHECK(close(77) == -1 && errno == EBADF);

	/* sendfile from a file into a pipe */
	T_OK(pipe(p));
	T_CHECK(sendfile(p[1], fd, &off, 8) == 8);
	T_CHECK(read(p[0], buf, 8) == 8 && memcmp(buf, "filedata", 8) == 0);
	close(p[0]);
	close(p[1]);
	close(fd);

	/* errno is not touched by successful calls */
	errno = 1234;
	fd = T_OK(open("/dev/null", O_RDONLY));
	T_CHECK(read(fd, buf, 1) == 0 && errno == 1234);
	T_CHECK(close(fd) == 0 && errno == 1234);
	T_CHECK(read(-1, buf, 1) == -1 && errno == EBADF);
	T_CHECK(write(1 << 24, buf, 1) == -1 && errno == EBADF);
}

static void pipes(void)
{
	struct epoll_event ev, out[4];
	struct pollfd pfd[2];
	char buf[8];
	int p[2], ep, efd, n;
	uint64_t v;
	fd_set rs;

	T_OK(pipe2(p, O_NONBLOCK));
	T_CHECK(read(p[0], buf, 1) == -1 && errno == EAGAIN);
	T_CHECK(write(p[1], "xy", 2) == 2);
	T_CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == 2);

	pfd[0] = (struct pollfd){ p[0], POLLIN, 0 };
	pfd[1] = (struct pollfd){ p[1], POLLOUT, 0 };
	T_CHECK(poll(pfd, 2, 0) == 2 && pfd[0].revents == POLLIN && pfd[1].revents == POLLOUT);

	FD_ZERO(&rs);
	FD_SET(p[0], &rs);
	T_CHECK(select(p[0] + 1, &rs, NULL, NULL, &(struct timeval){ 0, 0 }) == 1);

	efd = T_OK(eventfd(0, EFD_NONBLOCK));
	ep = T_OK(epoll_create1(0));
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u32 = 1;
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
	ev.events = EPOLLIN;
	ev.data.u32 = 2;
	T_OK(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev));
	T_CHECK(epoll_wait(ep, out, 4, 0) == 1 && out[0].data.u32 == 1);
	T_CHECK(epoll_wait(ep, out, 4, 0) == 0);	/* edge consumed */
	v = 1;
	T_CHECK(write(efd, &v, sizeof(v)) == sizeof(v));
	T_CHECK(epoll_pwait(ep, out, 4, 100, NULL) == 1 && out[0].data.u32 == 2);
	T_CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == -1 && errno == EEXIST);
	T_CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, 999, NULL) == -1 && errno == EBADF);
	T_CHECK(read(p[0], buf, sizeof(buf)) == 2);
	close(ep);
	close(efd);
	close(p[0]);
	close(p[1]);
}

static void unix_sockets(void)
{
	char cbuf[CMSG_SPACE(sizeof(int))], buf[8];
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *cm;
	int sv[2], p[2], got = -1;

	T_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	T_CHECK(send(sv[0], "ab", 2, 0) == 2 && recv(sv[1], buf, 2, 0) == 2);

	/* pass a pipe's fd across */
	T_OK(pipe(p));
	memset(&mh, 0, sizeof(mh));
	iov = (struct iovec){ "F", 1 };
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &p[1], sizeof(int));
	T_CHECK(sendmsg(sv[0], &mh, 0) == 1);
	memset(cbuf, 0, sizeof(cbuf));
	iov = (struct iovec){ buf, 1 };
	mh.msg_controllen = sizeof(cbuf);
	T_CHECK(recvmsg(sv[1], &mh, 0) == 1);
	cm = CMSG_FIRSTHDR(&mh);
	T_CHECK(cm != NULL && cm->cmsg_type == SCM_RIGHTS);
	if (cm != NULL)
		memcpy(&got, CMSG_DATA(cm), sizeof(int));
	T_CHECK(got >= 0 && write(got, "z", 1) == 1 && read(p[0], buf, 1) == 1 && buf[0] == 'z');
	close(got);
	close(p[0]);
	close(p[1]);
	T_CHECK(shutdown(sv[0], SHUT_WR) == 0 && read(sv[1], buf, 1) == 0);
	close(sv[0]);
	close(sv[1]);
}

static void udp(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in from;
	socklen_t len = sizeof(a);
	char buf[8];
	int u;

	u = T_OK(socket(AF_INET, SOCK_DGRAM, 0));
	T_OK(bind(u, (struct sockaddr *)&a, sizeof(a)));
	T_OK(getsockname(u, (struct sockaddr *)&a, &len));
	T_CHECK(sendto(u, "dgram", 5, 0, (struct sockaddr *)&a, sizeof(a)) == 5);
	len = sizeof(from);
	T_CHECK(recvfrom(u, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len) == 5);
	T_CHECK(len == sizeof(from) && from.sin_port == a.sin_port);
	close(u);

	/* IPv6 TCP is fsstack's, like IPv4 (conformance program t_ipv6) */
}

int main(int argc, char **argv)
{
	char buf8[8];
	int tcp = -1;

	/* "attach-first": open an AF_INET stream socket first (attaching to
	 * the daemon), so that everything below runs with fsstack sockets in
	 * the fd table and the passthrough paths are the ones taken */
	if (argc > 1 && strcmp(argv[1], "attach-first") == 0)
		tcp = T_OK(socket(AF_INET, SOCK_STREAM, 0));
	files();
	pipes();
	unix_sockets();
	udp();
	/* with "expect-tcp-fail", AF_INET stream sockets must fail cleanly */
	if (argc > 1 && strcmp(argv[1], "expect-tcp-fail") == 0) {
		errno = 0;
		T_CHECK(socket(AF_INET, SOCK_STREAM, 0) == -1 && errno == ENETDOWN);
		T_CHECK(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP) == -1 &&
			errno == ENETDOWN);
		/* UDP still fine after the failure */
		{
			int u = socket(AF_INET, SOCK_DGRAM, 0);

			T_CHECK(u >= 0);
			close(u);
		}
	}
	if (tcp >= 0) {
		/* a daemonising server's closefrom must leave the shim's own
		 * fds alone: fsstack sockets still work afterwards */
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(a);
		int l, c, s;

		closefrom(tcp + 1);
		T_CHECK(close(tcp) == 0);
		l = T_OK(socket(AF_INET, SOCK_STREAM, 0));
		T_OK(bind(l, (struct sockaddr *)&a, sizeof(a)));
		T_OK(listen(l, 1));
		T_OK(getsockname(l, (struct sockaddr *)&a, &len));
		c = T_OK(socket(AF_INET, SOCK_STREAM, 0));
		T_OK(connect(c, (struct sockaddr *)&a, sizeof(a)));
		s = T_OK(accept(l, NULL, NULL));
		T_CHECK(write(c, "after", 5) == 5 && read(s, buf8, 5) == 5);
		close(s);
		close(c);
		close(l);
	}
	return t_done("t_passthrough");
}
