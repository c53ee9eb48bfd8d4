/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_badargs: EBADF for fds that are not open (-1, a closed number, one past
 * RLIMIT_NOFILE) on every call, ENOTSOCK for a file, and EFAULT for bad
 * sockaddr, buffer and length pointers.
 */
#include "conf.h"

#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/uio.h>

static void ebadf_all(const char *what, int fd)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof sa;
	char buf[8];
	int v = 1, ep;
	struct iovec iov = { buf, sizeof buf };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct epoll_event ev = { .events = EPOLLIN };

	printf("### fd = %s\n", what);
	sa_srv(&sa, 1);
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	R(listen(fd, 1));
	R(accept(fd, NULL, NULL));
	R(accept4(fd, NULL, NULL, SOCK_CLOEXEC));
	R(connect(fd, (struct sockaddr *)&sa, sizeof sa));
	R(getsockname(fd, (struct sockaddr *)&sa, &sl));
	R(getpeername(fd, (struct sockaddr *)&sa, &sl));
	R(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
	R(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &sl));
	R(read(fd, buf, sizeof buf));
	R(readv(fd, &iov, 1));
	R(recv(fd, buf, sizeof buf, 0));
	R(recvfrom(fd, buf, sizeof buf, 0, NULL, NULL));
	R(recvmsg(fd, &m, 0));
	R(write(fd, buf, sizeof buf));
	R(writev(fd, &iov, 1));
	R(send(fd, buf, sizeof buf, 0));
	R(sendto(fd, buf, sizeof buf, 0, NULL, 0));
	R(sendmsg(fd, &m, 0));
	R(sendfile(fd, 0, NULL, 1));
	R(shutdown(fd, SHUT_RDWR));
	R(fcntl(fd, F_GETFL));
	R(fcntl(fd, F_SETFL, O_NONBLOCK));
	R(fcntl(fd, F_GETFD));
	R(ioctl(fd, FIONBIO, &v));
	R(ioctl(fd, FIONREAD, &v));
	R(dup(fd));
	R(dup2(fd, 1000));
	R(dup3(fd, 1000, O_CLOEXEC));
	R(close(fd));
	ep = epoll_create1(0);
	R(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	R(epoll_ctl(fd, EPOLL_CTL_ADD, 0, &ev));
	R(epoll_wait(fd, &ev, 1, 0));
	close(ep);
	{
		struct pollfd p = { .fd = fd, .events = POLLIN };

		R(poll(&p, 1, 0));
		say("poll revents = %s", fmt_poll(p.revents));
	}
}

int main(void)
{
	struct rlimit rl;
	int closed, l, c, s, port, f;
	char buf[16];

	conf_init("t_badargs", "EBADF, ENOTSOCK and EFAULT");
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit");
	closed = dup(0);
	if (closed < 0)
		die("dup");
	/* Park the number on a high slot and close that, so nothing the
	 * process opens later (a shim's own fds included) takes it. */
	if (dup2(closed, 900) < 0)
		die("dup2");
	close(closed);
	close(900);

	section("EBADF");
	ebadf_all("-1", -1);
	ebadf_all("closed", 900);
	ebadf_all("RLIMIT_NOFILE", (int)(rl.rlim_cur > 1000000 ? 1000000 : rl.rlim_cur));

	section("ENOTSOCK on a regular file");
	f = open("/dev/null", O_RDWR);
	{
		struct sockaddr_in sa;
		socklen_t sl = sizeof sa;
		int v = 1;

		sa_srv(&sa, 1);
		R(bind(f, (struct sockaddr *)&sa, sizeof sa));
		R(connect(f, (struct sockaddr *)&sa, sizeof sa));
		R(accept(f, NULL, NULL));
		R(getsockname(f, (struct sockaddr *)&sa, &sl));
		R(setsockopt(f, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
		R(recv(f, buf, sizeof buf, 0));
		R(send(f, buf, sizeof buf, 0));
		R(shutdown(f, SHUT_RDWR));
		R(read(f, buf, sizeof buf));
		R(write(f, buf, sizeof buf));
	}
	close(f);

	section("EFAULT");
	l = tcp_listener(0, 16, &port);
	note_port(port, "L1");
	{
		int x = socket(AF_INET, SOCK_STREAM, 0);
		socklen_t sl = sizeof(struct sockaddr_in);

		R(bind(x, conf_badptr, sizeof(struct sockaddr_in)));
		R(connect(x, conf_badptr, sizeof(struct sockaddr_in)));
		R(getsockname(x, conf_badptr, &sl));
		R(getsockname(x, (struct sockaddr *)buf, conf_badptr));
		R(getpeername(l, conf_badptr, &sl));
		close(x);
	}
	c = tcp_client(port);
	wait_ev(l, POLLIN, 2000);
	{
		socklen_t sl = sizeof(struct sockaddr_in);

		/* The kernel has already taken the connection off the queue
		 * when the copy-out fails: it is lost, and the client sees
		 * it closed. */
		R(accept(l, conf_badptr, &sl));
		fcntl(l, F_SETFL, O_NONBLOCK);
		R(accept(l, NULL, NULL));
		fcntl(l, F_SETFL, 0);
		say("client revents = %s", fmt_poll(wait_ev(c, POLLIN | POLLRDHUP, 2000)));
		close(c);
	}
	c = tcp_client(port);
	wait_ev(l, POLLIN, 2000);
	R(accept(l, (struct sockaddr *)buf, conf_badptr));
	say("client revents = %s", fmt_poll(wait_ev(c, POLLIN | POLLRDHUP, 2000)));
	close(c);
	c = tcp_client(port);
	s = accept_wait(l);
	R(write(c, conf_badptr, 4));
	R(send(c, conf_badptr, 4, 0));
	{
		struct iovec iov = { conf_badptr, 4 };

		R(writev(c, &iov, 1));
		R(writev(c, conf_badptr, 1));
		R(sendmsg(c, conf_badptr, 0));
	}
	R(write(c, "data", 4));
	wait_ev(s, POLLIN, 2000);
	R(read(s, conf_badptr, 4));
	R(recv(s, conf_badptr, 4, 0));
	{
		struct iovec iov = { conf_badptr, 4 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

		R(readv(s, &iov, 1));
		R(recvmsg(s, &m, 0));
		R(recvmsg(s, conf_badptr, 0));
	}
	R(recv(s, buf, sizeof buf, MSG_DONTWAIT));
	{
		struct sockaddr_in sa;

		sa_srv(&sa, port);
		R(sendto(c, "x", 1, 0, conf_badptr, sizeof sa));
	}
	close(c);
	close(s);
	close(l);
	return conf_end();
}
