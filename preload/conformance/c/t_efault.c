/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_efault: data buffers in unmapped (and, for reads, read-only) user pages
 * — read/recv/recvfrom/readv/recvmsg and write/send/sendto/writev/sendmsg —
 * fail with EFAULT and move nothing: received data stays queued, nothing
 * bad is sent; a buffer that starts mapped and runs into an unmapped page,
 * a bad iovec among good ones, an iovec array or msghdr in an unmapped page.
 * The process survives every one.
 *
 * fsconf:variant ipv6
 */
#include "conf.h"

#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>

static long pagesz;

/* Bytes queued for s now (after waiting for at least want to arrive, or
 * briefly if want is 0). */
static int queued(int s, int want)
{
	double deadline = now_ms() + (want ? 2000 : 100);
	int n = 0;

	for (;;) {
		if (ioctl(s, FIONREAD, &n) < 0)
			die("FIONREAD");
		if ((want && n >= want) || now_ms() > deadline)
			return n;
		usleep(5000);
	}
}

/* Reads everything queued on s and prints it. */
static void show_data(const char *label, int s)
{
	char buf[256];
	ssize_t n;

	n = recv(s, buf, sizeof buf - 1, MSG_DONTWAIT);
	if (n < 0) {
		say("%s: recv = -1 %s", label, errname(errno));
		return;
	}
	buf[n] = 0;
	say("%s: \"%s\"", label, buf);
}

int main(void)
{
	int l, port, c, s;
	char *map, *bad, *edge, *ro, good[64];

	conf_init("t_efault", "EFAULT for data buffers in unmapped pages");
	pagesz = sysconf(_SC_PAGESIZE);
	/* page 0: read-write, page 1: unmapped, page 2: read-only */
	map = mmap(NULL, (size_t)pagesz * 3, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		die("mmap");
	memset(map, 'm', (size_t)pagesz);
	if (munmap(map + pagesz, (size_t)pagesz) < 0 || mprotect(map + 2 * pagesz, (size_t)pagesz, PROT_READ) < 0)
		die("munmap/mprotect");
	bad = map + pagesz;
	edge = bad - 4;		/* 4 good bytes, then the unmapped page */
	ro = map + 2 * pagesz;
	tcp_pair(&l, &port, &c, &s);

	section("receiving into an unmapped page");
	R(write(c, "0123456789", 10));
	say("queued: %d", queued(s, 10));
	R(read(s, bad, 16));
	R(recv(s, bad, 16, 0));
	R(recv(s, bad, 16, MSG_PEEK));
	R(recvfrom(s, bad, 16, 0, NULL, NULL));
	{
		struct iovec iov[2] = { { good, 4 }, { bad, 16 } };
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };

		R(readv(s, iov + 1, 1));
		R(readv(s, iov, 2));
		R(recvmsg(s, &m, 0));
		R(readv(s, (struct iovec *)bad, 1));
		R(recvmsg(s, (struct msghdr *)bad, 0));
		m.msg_iov = (struct iovec *)bad;
		R(recvmsg(s, &m, 0));
	}
	R(read(s, edge, 16));
	R(read(s, ro, 16));
	say("still queued: %d", queued(s, 0));
	show_data("the data", s);

	section("receiving with nothing queued");
	{
		int fl = fcntl(s, F_GETFL);

		fcntl(s, F_SETFL, fl | O_NONBLOCK);
		R(read(s, bad, 16));
		R(recv(s, edge, 16, 0));
		fcntl(s, F_SETFL, fl);
	}

	section("sending from an unmapped page");
	R(write(c, bad, 16));
	R(send(c, bad, 16, 0));
	R(sendto(c, bad, 16, 0, NULL, 0));
	{
		struct iovec iov[2] = { { "good", 4 }, { bad, 16 } };
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };

		R(writev(c, iov + 1, 1));
		R(writev(c, iov, 2));
		R(sendmsg(c, &m, 0));
		R(writev(c, (struct iovec *)bad, 1));
		R(sendmsg(c, (struct msghdr *)bad, 0));
		m.msg_iov = (struct iovec *)bad;
		R(sendmsg(c, &m, 0));
	}
	R(write(c, edge, 16));
	say("queued at the peer: %d", queued(s, 0));
	R(write(c, "after", 5));
	say("queued at the peer: %d", queued(s, 5));
	show_data("the peer reads", s);

	section("the connection still works");
	R(write(s, "ok", 2));
	R(read_n(c, good, 2, 2000));
	R(memcmp(good, "ok", 2));

	close(c);
	close(s);
	close(l);
	return conf_end();
}
