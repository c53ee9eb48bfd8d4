/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_portperm: the kernel's port rules between users, each case as root and
 * as an unprivileged user (euid 65534: the program switches its effective
 * uid with seteuid, which also clears and restores its effective
 * capabilities). Ports below net.ipv4.ip_unprivileged_port_start need
 * CAP_NET_BIND_SERVICE of the caller at bind time (EACCES, after
 * EADDRNOTAVAIL), not at listen; SO_REUSEPORT groups are per socket owner,
 * the uid that created the socket (EADDRINUSE for another user, also after
 * the creator changed its uid); 0.0.0.0 overlaps every specific address
 * (EADDRINUSE both ways); SO_REUSEADDR never shares with a listener.
 *
 * Run as anything but root, it says so and checks nothing.
 */
#include "conf.h"

#include <sys/wait.h>

#define NOBODY 65534

static const char *who = "root";

static void become(uid_t uid)
{
	if (seteuid(uid) < 0)
		die("seteuid(%u)", (unsigned)uid);
	who = uid ? "nobody" : "root";
	say("-- now %s", who);
}

static int sock_opts(int reuseaddr, int reuseport)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	if (reuseaddr && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		die("SO_REUSEADDR");
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
		die("SO_REUSEPORT");
	return fd;
}

static struct sockaddr_in sa_any(int port)
{
	struct sockaddr_in sa;

	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	sa.sin_port = htons((uint16_t)port);
	return sa;
}

static int bound_port(int fd)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;

	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		die("getsockname");
	return ntohs(sa.sin_port);
}

/* bind_srv binds fd to SRV:port (0: any) and reports it under label. */
static long bind_srv(const char *label, int fd, int port)
{
	struct sockaddr_in sa;
	char l[160];

	sa_srv(&sa, port);
	snprintf(l, sizeof l, "%s: %s", who, label);
	return rep(l, bind(fd, (struct sockaddr *)&sa, sizeof sa));
}

static long bind_any(const char *label, int fd, int port)
{
	struct sockaddr_in sa = sa_any(port);
	char l[160];

	snprintf(l, sizeof l, "%s: %s", who, label);
	return rep(l, bind(fd, (struct sockaddr *)&sa, sizeof sa));
}

static long do_listen(const char *label, int fd)
{
	char l[160];

	snprintf(l, sizeof l, "%s: %s", who, label);
	return rep(l, listen(fd, 8));
}

/* priv_port finds a port below start that root can bind on SRV (another
 * program may hold some), binds fd to it and returns it. */
static int priv_port(int fd, int start, int from)
{
	struct sockaddr_in sa;

	for (int p = from; p > 0 && p < start; p++) {
		sa_srv(&sa, p);
		if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
			return p;
	}
	die("no free port below %d", start);
}

/* connect_once connects to SRV:port, accepts on l and closes both ends. */
static void connect_once(const char *label, int l, int port)
{
	struct sockaddr_in sa;
	char lb[160];
	int c = socket(AF_INET, SOCK_STREAM, 0);

	if (c < 0)
		die("socket");
	client_bind(c);
	sa_srv(&sa, port);
	snprintf(lb, sizeof lb, "%s: %s", who, label);
	if (rep(lb, connect(c, (struct sockaddr *)&sa, sizeof sa)) == 0)
		close(accept_wait(l));
	close(c);
}

/* fork_child: root makes a SO_REUSEPORT listener and two unbound sockets,
 * forks, and the child drops to nobody for good (setresuid) before using
 * them: a socket keeps its creator as owner (it joins root's group), but
 * the privilege check is the caller's (EACCES). */
static void fork_child(int priv3)
{
	struct sockaddr_in sa;
	int l, rs, ps, fp, st;
	pid_t pid;

	l = sock_opts(0, 1);
	sa_srv(&sa, 0);
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 8) < 0)
		die("reuseport listener");
	fp = bound_port(l);
	note_port(fp, "FP");
	rs = sock_opts(0, 1);
	ps = sock_opts(0, 0);
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		if (setresuid(NOBODY, NOBODY, NOBODY) < 0)
			die("setresuid");
		who = "child as nobody";
		bind_srv("bind(SRV:FP) on a SO_REUSEPORT socket root created", rs, fp);
		do_listen("listen on it", rs);
		bind_srv("bind(SRV:PRIV3) on a socket root created", ps, priv3);
		int fd = sock_opts(0, 1);
		bind_srv("bind(SRV:FP) with a SO_REUSEPORT socket of its own", fd, fp);
		fflush(stdout);
		_exit(0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("child");
	say("child exited 0");
	close(l);
	close(rs);
	close(ps);
}

int main(void)
{
	struct sockaddr_in sa;
	FILE *f;
	int start = 1024, priv, priv2, priv3, rp, rb, ra, np, ws, w;
	int pl, pb, pre, rp1, rp2, rpre, rbs, ras, nl1, nl2, wsl, wl, fd;

	conf_init("t_portperm", "privileged ports, SO_REUSEPORT per user, wildcard vs specific, as root and as nobody");
	if (geteuid() != 0) {
		say("not root: nothing checked");
		return conf_end();
	}
	f = fopen("/proc/sys/net/ipv4/ip_unprivileged_port_start", "r");
	if (!f || fscanf(f, "%d", &start) != 1)
		die("read ip_unprivileged_port_start");
	fclose(f);
	say("ip_unprivileged_port_start above 600: %s", start > 600 ? "yes" : "no");

	/* Everything root sets up before the first switch. */
	pl = sock_opts(0, 0);
	priv = priv_port(pl, start, 600);
	note_port(priv, "PRIV");
	pb = sock_opts(0, 0);
	priv2 = priv_port(pb, start, priv + 1);
	note_port(priv2, "PRIV2");
	pre = sock_opts(0, 0);
	fd = sock_opts(0, 0);
	priv3 = priv_port(fd, start, priv2 + 1);
	note_port(priv3, "PRIV3");
	close(fd);

	rp1 = sock_opts(0, 1);
	sa_srv(&sa, 0);
	if (bind(rp1, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(rp1, 8) < 0)
		die("reuseport listener");
	rp = bound_port(rp1);
	note_port(rp, "RP");
	rpre = sock_opts(0, 1);
	rbs = sock_opts(0, 1);
	if (bind(rbs, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("reuseport bind");
	rb = bound_port(rbs);
	note_port(rb, "RB");
	ras = sock_opts(1, 1);
	if (bind(ras, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("reuseaddr+reuseport bind");
	ra = bound_port(ras);
	note_port(ra, "RA");

	section("privileged ports as root");
	say("root: bind(SRV:PRIV) = 0, bind(SRV:PRIV2) = 0, bind(SRV:PRIV3) = 0 and closed (found free)");
	do_listen("listen(SRV:PRIV)", pl);
	connect_once("connect(SRV:PRIV)", pl, priv);
	fd = sock_opts(0, 0);
	bind_any("bind(ANY:PRIV) beside SRV:PRIV", fd, priv);
	close(fd);

	section("privileged ports as nobody");
	become(NOBODY);
	fd = sock_opts(0, 0);
	bind_srv("bind(SRV:PRIV3), a free port", fd, priv3);
	bind_any("bind(ANY:PRIV3)", fd, priv3);
	bind_srv("bind(SRV:PRIV)", fd, priv);
	bind_any("bind(ANY:PRIV)", fd, priv);
	bind_srv("bind(SRV:0) after the refusals", fd, 0);
	close(fd);
	fd = sock_opts(0, 0);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)priv);
	sa.sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1, not local */
	R(bind(fd, (struct sockaddr *)&sa, sizeof sa));
	close(fd);
	fd = sock_opts(1, 1);
	bind_srv("bind(SRV:PRIV2) with SO_REUSEADDR|SO_REUSEPORT", fd, priv2);
	close(fd);
	bind_srv("bind(SRV:PRIV) on a socket root created", pre, priv);
	do_listen("listen on SRV:PRIV2, bound by root", pb);
	connect_once("connect(SRV:PRIV2)", pb, priv2);
	fd = sock_opts(0, 0);
	do_listen("listen on an unbound socket", fd);
	close(fd);
	become(0);
	bind_srv("bind(SRV:PRIV) again, PRIV held", pre, priv);
	close(pre);

	section("SO_REUSEPORT groups");
	rp2 = sock_opts(0, 1);
	bind_srv("bind(SRV:RP) beside root's listener", rp2, rp);
	do_listen("listen(SRV:RP)", rp2);
	become(NOBODY);
	fd = sock_opts(0, 1);
	bind_srv("bind(SRV:RP) with SO_REUSEPORT beside root's listeners", fd, rp);
	close(fd);
	fd = sock_opts(1, 1);
	bind_srv("bind(SRV:RP) with SO_REUSEADDR|SO_REUSEPORT", fd, rp);
	close(fd);
	fd = sock_opts(0, 1);
	bind_any("bind(ANY:RP) with SO_REUSEPORT", fd, rp);
	close(fd);
	bind_srv("bind(SRV:RP) on a SO_REUSEPORT socket root created", rpre, rp);
	do_listen("listen on it", rpre);
	fd = sock_opts(0, 1);
	bind_srv("bind(SRV:RB) beside root's bound SO_REUSEPORT socket", fd, rb);
	close(fd);
	fd = sock_opts(1, 1);
	bind_srv("bind(SRV:RA) beside root's bound SO_REUSEADDR|SO_REUSEPORT socket", fd, ra);
	do_listen("listen(SRV:RA) first", fd);
	become(0);
	do_listen("listen(SRV:RA) beside nobody's listener", ras);
	become(NOBODY);
	close(fd);
	nl1 = sock_opts(0, 1);
	bind_srv("bind(SRV:0) with SO_REUSEPORT", nl1, 0);
	np = bound_port(nl1);
	note_port(np, "NP");
	do_listen("listen(SRV:NP)", nl1);
	nl2 = sock_opts(0, 1);
	bind_srv("bind(SRV:NP) beside nobody's listener", nl2, np);
	do_listen("listen(SRV:NP)", nl2);
	become(0);
	fd = sock_opts(0, 1);
	bind_srv("bind(SRV:NP) with SO_REUSEPORT beside nobody's listeners", fd, np);
	close(fd);
	fd = sock_opts(0, 1);
	bind_any("bind(ANY:NP) with SO_REUSEPORT", fd, np);
	close(fd);
	close(rp1);
	close(rp2);
	close(rpre);
	close(rbs);
	close(ras);
	close(nl1);
	close(nl2);

	section("a child that dropped to nobody, with sockets root created");
	fork_child(priv3);

	section("0.0.0.0 and a specific address");
	wsl = sock_opts(1, 0);
	bind_srv("bind(SRV:0) with SO_REUSEADDR", wsl, 0);
	ws = bound_port(wsl);
	note_port(ws, "WS");
	do_listen("listen(SRV:WS)", wsl);
	fd = sock_opts(1, 0);
	bind_any("bind(ANY:WS) with SO_REUSEADDR", fd, ws);
	close(fd);
	become(NOBODY);
	fd = sock_opts(0, 0);
	bind_any("bind(ANY:WS)", fd, ws);
	close(fd);
	fd = sock_opts(1, 0);
	bind_any("bind(ANY:WS) with SO_REUSEADDR", fd, ws);
	close(fd);
	fd = sock_opts(1, 1);
	bind_any("bind(ANY:WS) with SO_REUSEADDR|SO_REUSEPORT", fd, ws);
	close(fd);
	become(0);
	close(wsl);
	wl = sock_opts(1, 0);
	bind_any("bind(ANY:0) with SO_REUSEADDR", wl, 0);
	w = bound_port(wl);
	note_port(w, "W");
	do_listen("listen(ANY:W)", wl);
	become(NOBODY);
	fd = sock_opts(1, 0);
	bind_srv("bind(SRV:W) with SO_REUSEADDR", fd, w);
	close(fd);
	fd = sock_opts(1, 1);
	bind_srv("bind(SRV:W) with SO_REUSEADDR|SO_REUSEPORT", fd, w);
	close(fd);
	become(0);
	close(wl);
	close(pl);
	close(pb);
	return conf_end();
}
