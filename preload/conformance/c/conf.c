/* SPDX-License-Identifier: Apache-2.0 */
/* conf.c - see conf.h. */
#include "conf.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <sys/resource.h>

struct in_addr conf_srv_ip;
struct in_addr conf_peer_ip;
struct in6_addr conf_srv6_ip;
static int conf_bind_peer;
int conf_family = AF_INET;
volatile sig_atomic_t conf_sigcount[65];
void *volatile conf_badptr = (void *)(uintptr_t)8;

static const char *conf_name = "?";

static void parse_ip(const char *env, struct in_addr *out, int *set)
{
	const char *v = getenv(env);

	if (set)
		*set = 0;
	if (!v || !*v) {
		out->s_addr = htonl(INADDR_LOOPBACK);
		return;
	}
	if (inet_pton(AF_INET, v, out) != 1)
		die("%s=%s is not an IPv4 address", env, v);
	if (set)
		*set = 1;
}

/*
 * FSCONF_REQUIRE_MAPPED=<substring>: the runner sets it for shim runs; a
 * program whose /proc/self/maps does not contain it exits 3 before printing,
 * so an LD_PRELOAD that the dynamic loader ignored cannot pass as a match.
 */
static void require_mapped(void)
{
	const char *want = getenv("FSCONF_REQUIRE_MAPPED");
	char line[4096];
	FILE *f;
	int found = 0;

	if (!want || !*want)
		return;
	f = fopen("/proc/self/maps", "r");
	if (!f) {
		fprintf(stderr, "fsconf: open /proc/self/maps: %s\n", strerror(errno));
		exit(3);
	}
	while (fgets(line, sizeof line, f))
		if (strstr(line, want)) {
			found = 1;
			break;
		}
	fclose(f);
	if (!found) {
		fprintf(stderr, "fsconf: %s is not mapped into this process (LD_PRELOAD ignored?)\n", want);
		exit(3);
	}
}

void conf_init(const char *name, const char *what)
{
	conf_name = name;
	setvbuf(stdout, NULL, _IOLBF, 0);
	require_mapped();
	parse_ip("FSCONF_ADDR", &conf_srv_ip, NULL);
	parse_ip("FSCONF_PEER", &conf_peer_ip, &conf_bind_peer);
	{
		const char *v6 = getenv("FSCONF_ADDR6");
		const char *fam = getenv("FSCONF_FAMILY");

		conf_srv6_ip = in6addr_loopback;
		if (v6 && *v6 && inet_pton(AF_INET6, v6, &conf_srv6_ip) != 1)
			die("FSCONF_ADDR6=%s is not an IPv6 address", v6);
		/* FSCONF_FAMILY=6: the helpers below make AF_INET6 sockets on
		 * SRV6 (the programs' _ipv6 variants). */
		if (fam && strcmp(fam, "6") == 0)
			conf_family = AF_INET6;
		else if (fam && *fam && strcmp(fam, "4") != 0)
			die("FSCONF_FAMILY=%s is neither 4 nor 6", fam);
	}
	/* SIGPIPE is counted, not fatal, so that EPIPE cases can report
	 * whether it was raised (conf_sigcount[SIGPIPE]). */
	on_signal(SIGPIPE, 1);
	signal(SIGALRM, SIG_DFL);
	alarm(CONF_WATCHDOG_S);
	printf("# %s: %s\n", name, what);
}

int conf_end(void)
{
	printf("END %s\n", conf_name);
	fflush(stdout);
	return 0;
}

void section(const char *title)
{
	printf("## %s\n", title);
}

void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

void die(const char *fmt, ...)
{
	va_list ap;
	int e = errno;

	fflush(stdout);
	printf("FATAL %s: ", conf_name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" (errno %s)\n", errname(e));
	fflush(stdout);
	fprintf(stderr, "FATAL %s (see transcript)\n", conf_name);
	exit(1);
}

const char *errname(int e)
{
	static char buf[32];
	const char *n;

	if (e == 0)
		return "0";
	n = strerrorname_np(e);
	if (n)
		return n;
	snprintf(buf, sizeof buf, "E#%d", e);
	return buf;
}

long rep(const char *label, long ret)
{
	int e = errno;

	if (ret == -1)
		printf("%s = -1 %s\n", label, errname(e));
	else
		printf("%s = %ld\n", label, ret);
	errno = e;
	return ret;
}

int rep_fd(const char *label, int ret)
{
	int e = errno;

	if (ret == -1)
		printf("%s = -1 %s\n", label, errname(e));
	else if (ret >= 0)
		printf("%s = fd\n", label);
	else
		printf("%s = %d (not an fd)\n", label, ret);
	errno = e;
	return ret;
}

/* ---- addresses ---------------------------------------------------------- */

void sa_srv(struct sockaddr_in *sa, int port)
{
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_addr = conf_srv_ip;
	sa->sin_port = htons((uint16_t)port);
}

void sa_srv6(struct sockaddr_in6 *sa, int port)
{
	memset(sa, 0, sizeof *sa);
	sa->sin6_family = AF_INET6;
	sa->sin6_addr = conf_srv6_ip;
	sa->sin6_port = htons((uint16_t)port);
}

static struct {
	int port;
	const char *name;
} named_ports[16];

void note_port(int port, const char *name)
{
	for (size_t i = 0; i < sizeof named_ports / sizeof named_ports[0]; i++)
		if (named_ports[i].port == 0 || named_ports[i].port == port) {
			named_ports[i].port = port;
			named_ports[i].name = name;
			return;
		}
	die("note_port: table full");
}

const char *fmt_sa(const struct sockaddr *sa, socklen_t len)
{
	static char buf[4][64];
	static int which;
	char *b = buf[which++ % 4];
	const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
	const char *ip, *port = "port";
	int p;

	if (len < sizeof(sa_family_t)) {
		snprintf(b, 64, "(len %u)", (unsigned)len);
		return b;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		const struct in6_addr *a = &in6->sin6_addr;
		char role[32];

		if (IN6_IS_ADDR_UNSPECIFIED(a))
			ip = "ANY6";
		else if (IN6_ARE_ADDR_EQUAL(a, &conf_srv6_ip))
			ip = "SRV6";
		else if (IN6_IS_ADDR_LOOPBACK(a))
			ip = "LO6";
		else if (IN6_IS_ADDR_V4MAPPED(a)) {
			uint32_t v4;

			memcpy(&v4, &a->s6_addr[12], 4);
			snprintf(role, sizeof role, "%s(mapped)",
				 v4 == htonl(INADDR_ANY) ? "ANY" : v4 == conf_srv_ip.s_addr ? "SRV" :
				 v4 == conf_peer_ip.s_addr ? "PEER" : "OTHER");
			ip = role;
		} else
			ip = "OTHER6";
		p = ntohs(in6->sin6_port);
		if (p == 0)
			port = "0";
		for (size_t i = 0; p && i < sizeof named_ports / sizeof named_ports[0]; i++)
			if (named_ports[i].port == p)
				port = named_ports[i].name;
		snprintf(b, 64, "[%s]:%s%s", ip, port, in6->sin6_flowinfo || in6->sin6_scope_id ? " (flow/scope set)" : "");
		return b;
	}
	if (sa->sa_family != AF_INET || len < sizeof *in) {
		snprintf(b, 64, "(family %d len %u)", sa->sa_family, (unsigned)len);
		return b;
	}
	if (in->sin_addr.s_addr == htonl(INADDR_ANY))
		ip = "ANY";
	else if (in->sin_addr.s_addr == conf_srv_ip.s_addr)
		ip = "SRV";
	else if (in->sin_addr.s_addr == conf_peer_ip.s_addr)
		ip = "PEER";
	else
		ip = "OTHER";
	p = ntohs(in->sin_port);
	if (p == 0)
		port = "0";
	for (size_t i = 0; p && i < sizeof named_ports / sizeof named_ports[0]; i++)
		if (named_ports[i].port == p)
			port = named_ports[i].name;
	snprintf(b, 64, "%s:%s", ip, port);
	return b;
}

/* ---- sockets ------------------------------------------------------------ */

void client_bind(int fd)
{
	struct sockaddr_in sa;

	/* FSCONF_PEER is an IPv4 address: IPv6 clients are not bound. */
	if (!conf_bind_peer || conf_family != AF_INET)
		return;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr = conf_peer_ip;
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("client bind to FSCONF_PEER");
}

/* sa_srv_family fills ss with the server address of the programs' family
 * (SRV:port, or SRV6:port for an _ipv6 variant) and returns its length. */
static socklen_t sa_srv_family(struct sockaddr_storage *ss, int port)
{
	memset(ss, 0, sizeof *ss);
	if (conf_family == AF_INET6) {
		sa_srv6((struct sockaddr_in6 *)ss, port);
		return sizeof(struct sockaddr_in6);
	}
	sa_srv((struct sockaddr_in *)ss, port);
	return sizeof(struct sockaddr_in);
}

static int sa_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

int tcp_listener(int flags, int backlog, int *port)
{
	struct sockaddr_storage sa;
	socklen_t salen = sa_srv_family(&sa, 0), len = sizeof sa;
	int one = 1;
	int fd = socket(conf_family, SOCK_STREAM | flags, 0);

	if (fd < 0)
		die("listener socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		die("listener SO_REUSEADDR");
	if (bind(fd, (struct sockaddr *)&sa, salen) < 0)
		die("listener bind");
	if (listen(fd, backlog) < 0)
		die("listen");
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		die("listener getsockname");
	if (port)
		*port = sa_port(&sa);
	return fd;
}

int tcp_client(int port)
{
	struct sockaddr_storage sa;
	socklen_t salen = sa_srv_family(&sa, port);
	int fd = socket(conf_family, SOCK_STREAM, 0);

	if (fd < 0)
		die("client socket");
	client_bind(fd);
	if (connect(fd, (struct sockaddr *)&sa, salen) < 0)
		die("client connect");
	return fd;
}

int tcp_client_nb(int port)
{
	struct sockaddr_storage sa;
	socklen_t salen = sa_srv_family(&sa, port);
	int fd = socket(conf_family, SOCK_STREAM | SOCK_NONBLOCK, 0);

	if (fd < 0)
		die("client socket");
	client_bind(fd);
	if (connect(fd, (struct sockaddr *)&sa, salen) < 0 && errno != EINPROGRESS)
		die("client connect (non-blocking)");
	return fd;
}

int accept_wait(int lfd)
{
	double deadline = now_ms() + 2000;
	int fd;

	for (;;) {
		/* Poll first, so a blocking listener cannot block us past
		 * the deadline. */
		if (wait_ev(lfd, POLLIN, 100) & POLLIN) {
			fd = accept(lfd, NULL, NULL);
			if (fd >= 0)
				return fd;
			if (errno != EAGAIN && errno != EINTR)
				die("accept");
		}
		if (now_ms() > deadline)
			die("accept: nothing to accept after 2 s");
	}
}

void tcp_pair(int *lfd, int *port, int *c, int *s)
{
	int p, l = tcp_listener(0, 16, &p);

	*c = tcp_client(p);
	*s = accept_wait(l);
	if (port)
		*port = p;
	if (lfd)
		*lfd = l;
	else
		close(l);
}

int wait_ev(int fd, short events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	double deadline = now_ms() + ms;
	int n;

	for (;;) {
		int left = (int)(deadline - now_ms());

		n = poll(&p, 1, left < 0 ? 0 : left);
		if (n >= 0)
			return n ? p.revents : 0;
		if (errno != EINTR)
			die("poll");
	}
}

static void flags_str(char *b, size_t n, int mask, const int *bits, const char *const *names, size_t count)
{
	size_t used = 0;

	b[0] = 0;
	for (size_t i = 0; i < count; i++)
		if (mask & bits[i]) {
			used += (size_t)snprintf(b + used, n - used, "%s%s", used ? "|" : "", names[i]);
			mask &= ~bits[i];
		}
	if (mask)
		used += (size_t)snprintf(b + used, n - used, "%s0x%x", used ? "|" : "", (unsigned)mask);
	if (!used)
		snprintf(b, n, "0");
}

const char *fmt_poll(int revents)
{
	static char buf[4][128];
	static int which;
	static const int bits[] = { POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL,
				    POLLRDNORM, POLLRDBAND, POLLWRNORM, POLLWRBAND, POLLRDHUP };
	static const char *const names[] = { "IN", "PRI", "OUT", "ERR", "HUP", "NVAL",
					     "RDNORM", "RDBAND", "WRNORM", "WRBAND", "RDHUP" };
	char *b = buf[which++ % 4];

	flags_str(b, 128, revents, bits, names, sizeof bits / sizeof bits[0]);
	return b;
}

const char *fmt_epoll(uint32_t events)
{
	static char buf[4][128];
	static int which;
	static const int bits[] = { (int)EPOLLIN, (int)EPOLLPRI, (int)EPOLLOUT, (int)EPOLLERR, (int)EPOLLHUP,
				    (int)EPOLLRDNORM, (int)EPOLLRDBAND, (int)EPOLLWRNORM, (int)EPOLLWRBAND, (int)EPOLLRDHUP };
	static const char *const names[] = { "IN", "PRI", "OUT", "ERR", "HUP",
					     "RDNORM", "RDBAND", "WRNORM", "WRBAND", "RDHUP" };
	char *b = buf[which++ % 4];

	flags_str(b, 128, (int)events, bits, names, sizeof bits / sizeof bits[0]);
	return b;
}

void write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			wait_ev(fd, POLLOUT, 1000);
			continue;
		}
		if (w <= 0)
			die("write_all");
		p += w;
		n -= (size_t)w;
	}
}

size_t read_n(int fd, void *buf, size_t n, int ms)
{
	char *p = buf;
	size_t got = 0;
	double deadline = now_ms() + ms;

	while (got < n) {
		ssize_t r;
		int left = (int)(deadline - now_ms());

		if (left <= 0)
			break;
		if (!(wait_ev(fd, POLLIN, left) & (POLLIN | POLLHUP | POLLERR)))
			break;
		r = recv(fd, p + got, n - got, MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r < 0)
			die("read_n");
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return got;
}

/*
 * fill_sndbuf's idea of "stays full".  Loopback moves bytes in the sender's
 * own system call, so on the kernel the buffer is full at the first EAGAIN
 * -- except that a delayed window update (about 40 ms) and the answer to the
 * first zero-window probe (about 200 ms) each open a little room later.
 * Under the shim the buffer is a FIFO drained by the daemon into its backend
 * socket: room appears whenever the daemon gets to run, which on a loaded
 * machine can be long after the EAGAIN.  So the buffer is full when no
 * byte fits for FILL_QUIET_MS (past the kernel's probe) and over at least
 * FILL_QUIET_CALLS consecutive waits, each followed by a getsockopt, which
 * under the shim is answered by the daemon: quiet time in which the daemon
 * did not run does not make the buffer full.  Room ends a wait at once
 * (POLLOUT), so filling goes at the stack's pace, not a poll interval's.
 * FILL_LIMIT_MS bounds the whole fill, well within the watchdog.
 */
#define FILL_WAIT_MS 50
#define FILL_QUIET_MS 400
#define FILL_QUIET_CALLS 4
#define FILL_LIMIT_MS 4000

long fill_sndbuf(int fd)
{
	static char chunk[65536];
	int fl = fcntl(fd, F_GETFL);
	long total = 0;
	int calls = 0;
	double start = now_ms(), last = start;

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	for (;;) {
		int added = 0, v;
		socklen_t vl = sizeof v;

		/* Big writes until EAGAIN, then single bytes until EAGAIN: the
		 * last segment can have room for a few bytes after a big write
		 * was refused, and a probe of one byte would find it. */
		for (size_t size = sizeof chunk; size; size = size == 1 ? 0 : 1)
			for (int i = 0; i < 65536; i++) {
				ssize_t n = send(fd, chunk, size, MSG_NOSIGNAL);

				if (n > 0) {
					total += n;
					added = 1;
					continue;
				}
				if (n < 0 && errno == EAGAIN)
					break;
				fcntl(fd, F_SETFL, fl);
				return -1;
			}
		if (added) {
			last = now_ms();
			calls = 0;
		} else if (calls >= FILL_QUIET_CALLS && now_ms() - last >= FILL_QUIET_MS) {
			break;
		}
		if (now_ms() - start >= FILL_LIMIT_MS)
			break;
		/* Wait for room; POLLOUT without room (the kernel's and the
		 * shim's thresholds differ from a one-byte send's) must not
		 * spin. */
		if (wait_ev(fd, POLLOUT, FILL_WAIT_MS) && !added)
			usleep(FILL_WAIT_MS * 1000);
		if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &vl) == 0)
			calls++;
	}
	fcntl(fd, F_SETFL, fl);
	return total;
}

void show_flags(const char *label, int fd)
{
	int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);

	if (fl < 0 || fdf < 0) {
		printf("%s: flags -1 %s\n", label, errname(errno));
		return;
	}
	printf("%s: nonblock=%d cloexec=%d\n", label, !!(fl & O_NONBLOCK), !!(fdf & FD_CLOEXEC));
}

/* ---- time --------------------------------------------------------------- */

static double ts_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double now_ms(void)
{
	return ts_ms(CLOCK_MONOTONIC);
}

double cpu_ms(void)
{
	return ts_ms(CLOCK_PROCESS_CPUTIME_ID);
}

const char *bucket(double elapsed, int timeout)
{
	/* Strict on the early side (no correct wait ends before its time),
	 * lenient on the late side: the suite shares two cores with whatever
	 * else runs, and a wake-up preempted for a second is not the stack's
	 * fault.  A missed wake-up shows anyway: in the call's result (a
	 * timeout instead of an event), as a hang the watchdog ends, or as
	 * "busy" CPU for a stack that polls instead of sleeping. */
	if (timeout == 0)
		return elapsed < 1000 ? "immediate" : "late";
	if (elapsed < 0.8 * timeout)
		return "early";
	if (elapsed > timeout + 5000)
		return "late";
	return "about-timeout";
}

const char *spin(double cpu, double elapsed)
{
	/* A blocked wait uses almost no CPU; a spinning one uses about all of
	 * the wall time.  Half is far from both. */
	return cpu < 0.5 * elapsed + 5 ? "idle" : "busy";
}

/* ---- signals ------------------------------------------------------------ */

static void count_signal(int sig)
{
	if (sig > 0 && sig < 65)
		conf_sigcount[sig]++;
}

void on_signal(int sig, int restart)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = count_signal;
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL) < 0)
		die("sigaction");
}

void signal_after(int sig, int ms)
{
	struct sigevent sev;
	struct itimerspec its;
	timer_t t;

	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = sig;
	if (timer_create(CLOCK_MONOTONIC, &sev, &t) < 0)
		die("timer_create");
	memset(&its, 0, sizeof its);
	its.it_value.tv_sec = ms / 1000;
	its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
	if (timer_settime(t, 0, &its, NULL) < 0)
		die("timer_settime");
}

/* ---- epoll -------------------------------------------------------------- */

int ep_add(int ep, int fd, uint32_t events, const char *name)
{
	struct epoll_event ev = { .events = events, .data.ptr = (void *)name };

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int ep_mod(int ep, int fd, uint32_t events, const char *name)
{
	struct epoll_event ev = { .events = events, .data.ptr = (void *)name };

	return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static int ev_cmp(const void *a, const void *b)
{
	const struct epoll_event *x = a, *y = b;

	return strcmp((const char *)x->data.ptr, (const char *)y->data.ptr);
}

static void ep_print(const char *label, int n, struct epoll_event *evs)
{
	if (n < 0) {
		printf("%s = -1 %s\n", label, errname(errno));
		return;
	}
	qsort(evs, (size_t)n, sizeof evs[0], ev_cmp);
	printf("%s = %d", label, n);
	for (int i = 0; i < n; i++)
		printf(" %s:%s", (const char *)evs[i].data.ptr, fmt_epoll(evs[i].events));
	putchar('\n');
}

int ep_show(const char *label, int ep, int timeout)
{
	struct epoll_event evs[16];
	int n = epoll_wait(ep, evs, 16, timeout);

	ep_print(label, n, evs);
	return n;
}

int ep_settle(const char *label, int ep, int want, int ms)
{
	struct epoll_event evs[16];
	double deadline = now_ms() + ms;
	int n;

	for (;;) {
		n = epoll_wait(ep, evs, 16, 50);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || n >= want || now_ms() > deadline)
			break;
		usleep(5000);
	}
	ep_print(label, n, evs);
	return n;
}
