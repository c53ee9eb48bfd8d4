#!/bin/sh
# run.sh - the shim's tests (make -C preload/shim test).  Needs SO (the
# library) and OBJDIR (the built test programs).  No daemon is started: what
# is checked here is the framework — exports, passthrough, the kernel
# fallback and FSSTACK_FALLBACK=fail.
set -u
: "${SO:?}" "${OBJDIR:?}"
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/fss_shim_test.XXXXXX)
fails=0
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -f "$tmp/err" ] && sed 's/^/    /' "$tmp/err"; fails=$((fails + 1)); }

# The tools the checks below run. A missing one is a failure, not a check
# quietly skipped: scripts/install-deps.sh (make deps) installs them.
for tool in python3 curl nginx go; do
	command -v "$tool" > /dev/null || fail "tool $tool not found; install it (make deps runs scripts/install-deps.sh)"
done

# Lines the shim wrote on stderr.
shim_lines() { grep -c '^fsstack\[' "$1" || true; }

nodaemon="$tmp/no-daemon.sock"
pre() { env LD_PRELOAD="$SO" FSSTACK_SOCKET="$nodaemon" "$@"; }

# 1. exports: exactly the calls of fss_calls.def, nothing else
nm -D --defined-only "$SO" | awk '$2 ~ /^[TtWwiV]$/ { print $3 }' | sed 's/@.*//' | sort > "$tmp/exports"
if diff -u "$OBJDIR/exports.list" "$tmp/exports" > "$tmp/err"; then
	pass "exports match fss_calls.def ($(wc -l < "$tmp/exports") symbols)"
else
	fail "exports differ from fss_calls.def"
fi
# and no undefined symbol outside libc/libdl/libpthread (built with -z defs)
if ldd "$SO" > "$tmp/err" 2>&1 && ! grep -q 'not found' "$tmp/err"; then
	pass "library loads its dependencies"
else
	fail "ldd"
fi

# 2. unit test of the ownership table
if "$OBJDIR/t_fdtab" > "$tmp/out" 2> "$tmp/err"; then pass "t_fdtab"; else fail "t_fdtab"; fi

# 3. the programs work without the shim (baseline)
for t in t_echo t_passthrough; do
	if "$OBJDIR/$t" > "$tmp/out" 2> "$tmp/err"; then pass "$t (no shim)"; else fail "$t (no shim)"; fi
done

# 4. no daemon: kernel fallback, one warning line for the whole process tree
if pre "$OBJDIR/t_echo" > "$tmp/out" 2> "$tmp/err" &&
   [ "$(shim_lines "$tmp/err")" -eq 1 ] &&
   grep -q 'falling back to the kernel' "$tmp/err"; then
	pass "t_echo under the shim, no daemon: kernel fallback, one warning"
else
	fail "t_echo under the shim, no daemon"
fi

if pre "$OBJDIR/t_stress" et 4 8 100 > "$tmp/out" 2> "$tmp/err"; then
	pass "t_stress et under the shim, no daemon"
else
	fail "t_stress et under the shim, no daemon"
fi

# 5. FSSTACK_FALLBACK=fail: socket() fails with ENETDOWN, cleanly
pre env FSSTACK_FALLBACK=fail "$OBJDIR/t_echo" > "$tmp/out" 2> "$tmp/err"
rc=$?
if [ $rc -eq 2 ] && grep -q 'socket: Network is down' "$tmp/out" &&
   [ "$(shim_lines "$tmp/err")" -eq 1 ] && grep -q 'FSSTACK_FALLBACK=fail' "$tmp/err"; then
	pass "FSSTACK_FALLBACK=fail: socket() fails with ENETDOWN"
else
	echo "rc=$rc" >> "$tmp/err"; cat "$tmp/out" >> "$tmp/err"
	fail "FSSTACK_FALLBACK=fail"
fi

# 6. passthrough of files, pipes, unix sockets, UDP, IPv6 — also in fail mode
if pre "$OBJDIR/t_passthrough" > "$tmp/out" 2> "$tmp/err" &&
   [ "$(shim_lines "$tmp/err")" -eq 0 ]; then
	pass "t_passthrough under the shim (no TCP, so no warning)"
else
	fail "t_passthrough under the shim"
fi
if pre env FSSTACK_FALLBACK=fail "$OBJDIR/t_passthrough" expect-tcp-fail > "$tmp/out" 2> "$tmp/err" &&
   [ "$(shim_lines "$tmp/err")" -eq 1 ]; then
	pass "t_passthrough under FSSTACK_FALLBACK=fail"
else
	fail "t_passthrough under FSSTACK_FALLBACK=fail"
fi

# 7. programs that never open a TCP socket say nothing
if out=$(pre sh -c 'echo hi | cat; ls / > /dev/null' 2> "$tmp/err") && [ "$out" = hi ] &&
   [ ! -s "$tmp/err" ]; then
	pass "sh/cat/ls under the shim: silent"
else
	fail "sh/cat/ls under the shim"
fi

# 8. FSSTACK_DISABLE=1: no attach attempt, no warning
if pre env FSSTACK_DISABLE=1 "$OBJDIR/t_echo" > "$tmp/out" 2> "$tmp/err" && [ ! -s "$tmp/err" ]; then
	pass "FSSTACK_DISABLE=1: silent kernel"
else
	fail "FSSTACK_DISABLE=1"
fi

# 9. a daemon that refuses the attach: the reply's status is reported
if command -v python3 > /dev/null; then
	for mode in version garbage seg-layout seg-magic; do
		sock="$tmp/refuse-$mode.sock"
		python3 "$here/refuse_daemon.py" "$sock" "$mode" > "$tmp/refuse.out" 2>&1 &
		pids="$pids $!"
		for i in 1 2 3 4 5 6 7 8 9 10; do [ -S "$sock" ] && break; sleep 0.2; done
		case $mode in version) want='Protocol not supported' ;; *) want='Protocol error' ;; esac
		if env LD_PRELOAD="$SO" FSSTACK_SOCKET="$sock" "$OBJDIR/t_echo" > "$tmp/out" 2> "$tmp/err" &&
		   [ "$(shim_lines "$tmp/err")" -eq 1 ] && grep -q "$want" "$tmp/err"; then
			pass "daemon refuses ($mode): '$want', kernel fallback"
		else
			fail "daemon refuses ($mode)"
		fi
	done
fi

# 10. unmodified programs: curl against python's http.server, both under the shim
if command -v python3 > /dev/null && command -v curl > /dev/null; then
	mkdir -p "$tmp/www"
	head -c 100000 /dev/urandom > "$tmp/www/blob"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	(cd "$tmp/www" && exec env LD_PRELOAD="$SO" FSSTACK_SOCKET="$nodaemon" \
		python3 -m http.server --bind 127.0.0.1 "$port" > "$tmp/httpd.out" 2> "$tmp/httpd.err") &
	pids="$pids $!"
	ok=0
	for i in $(seq 1 50); do
		if curl -s -m 5 -o /dev/null "http://127.0.0.1:$port/" 2> /dev/null; then ok=1; break; fi
		sleep 0.1
	done
	if [ $ok -eq 1 ] &&
	   pre curl -sS -m 20 -o "$tmp/got" "http://127.0.0.1:$port/blob" 2> "$tmp/err" &&
	   cmp -s "$tmp/got" "$tmp/www/blob" && [ "$(shim_lines "$tmp/err")" -eq 1 ] &&
	   [ "$(shim_lines "$tmp/httpd.err")" -eq 1 ]; then
		pass "curl -> python http.server, both under the shim, no daemon"
	else
		cat "$tmp/httpd.err" >> "$tmp/err"
		fail "curl -> python http.server under the shim"
	fi
	if pre env FSSTACK_FALLBACK=fail curl -sS -m 5 -o /dev/null "http://127.0.0.1:$port/blob" 2> "$tmp/err"; then
		fail "curl under FSSTACK_FALLBACK=fail should fail"
	elif grep -q 'FSSTACK_FALLBACK=fail' "$tmp/err"; then
		pass "curl under FSSTACK_FALLBACK=fail fails cleanly: $(grep -v '^fsstack\[' "$tmp/err" | head -1)"
	else
		fail "curl under FSSTACK_FALLBACK=fail"
	fi
fi

# 11. with a daemon: the attached path.  The daemon is $FSSTACK_TEST_DAEMON
# (a command taking the socket path) or tests/shimd, the shim protocol served
# from the kernel's TCP stack (preload/daemon with daemon.KernelBackend).
# FSSTACK_FALLBACK=fail makes any silent fallback to the kernel an error.
daemon_cmd=${FSSTACK_TEST_DAEMON:-}
if [ -z "$daemon_cmd" ] && command -v go > /dev/null &&
   (cd "$here/shimd" && go build -tags fsstack_shimd -o "$OBJDIR/shimd" . > "$tmp/gobuild" 2>&1); then
	daemon_cmd="$OBJDIR/shimd"
fi
start_daemon() {	# $1 socket path; sets dpid
	$daemon_cmd "$1" > "$tmp/daemon.out" 2>> "$tmp/daemon.err" &
	dpid=$!
	pids="$pids $dpid"
	for i in $(seq 1 50); do [ -S "$1" ] && return 0; sleep 0.1; done
	return 1
}
if [ -z "$daemon_cmd" ]; then
	echo "SKIP daemon-backed tests: no FSSTACK_TEST_DAEMON and tests/shimd does not build:"
	sed 's/^/    /' "$tmp/gobuild" 2>/dev/null | head -5
else
	dsock="$tmp/daemon.sock"
	if ! start_daemon "$dsock"; then
		cp "$tmp/daemon.err" "$tmp/err"; fail "daemon did not start"
	else
		att() { env LD_PRELOAD="$SO" FSSTACK_SOCKET="$dsock" FSSTACK_FALLBACK=fail "$@"; }
		if att "$OBJDIR/t_echo" > "$tmp/out" 2> "$tmp/err" && [ "$(shim_lines "$tmp/err")" -eq 0 ]; then
			pass "t_echo on the daemon (fork, epoll ET, select, sendfile, dup2, shutdown)"
		else
			fail "t_echo on the daemon"
		fi
		if att "$OBJDIR/t_passthrough" attach-first > "$tmp/out" 2> "$tmp/err" &&
		   [ "$(shim_lines "$tmp/err")" -eq 0 ]; then
			pass "t_passthrough with fsstack sockets open"
		else
			fail "t_passthrough with fsstack sockets open"
		fi
		if command -v python3 > /dev/null && command -v curl > /dev/null; then
			mkdir -p "$tmp/www2"
			head -c 1048576 /dev/urandom > "$tmp/www2/blob"
			port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
			(cd "$tmp/www2" && exec env LD_PRELOAD="$SO" FSSTACK_SOCKET="$dsock" FSSTACK_FALLBACK=fail \
				python3 -m http.server --bind 127.0.0.1 "$port" > "$tmp/httpd2.out" 2> "$tmp/httpd2.err") &
			pids="$pids $!"
			ok=0
			for i in $(seq 1 50); do
				if att curl -s -m 5 -o /dev/null "http://127.0.0.1:$port/" 2> /dev/null; then ok=1; break; fi
				sleep 0.1
			done
			if [ $ok -eq 1 ] && att curl -sS -m 20 -o "$tmp/got2" "http://127.0.0.1:$port/blob" 2> "$tmp/err" &&
			   cmp -s "$tmp/got2" "$tmp/www2/blob" && ! grep -q '^fsstack\[' "$tmp/httpd2.err"; then
				pass "curl -> python http.server on the daemon, 1 MiB intact"
			else
				cat "$tmp/httpd2.err" >> "$tmp/err"
				fail "curl -> python http.server on the daemon"
			fi
		fi
		# nested epoll: the helper thread only while a set is nested,
		# re-created in a fork child; the guarded copies' fault handler
		# passes the application's own faults on
		if att "$OBJDIR/t_nest" > "$tmp/out" 2> "$tmp/err" &&
		   att "$OBJDIR/t_nest" apphandler >> "$tmp/out" 2>> "$tmp/err"; then
			pass "t_nest on the daemon (helper thread, fork, fault handler chaining)"
		else
			fail "t_nest on the daemon"
		fi
		# handover to the kernel (sock.c): on this daemon, which serves
		# loopback, the sockets stay fsstack sockets; on one that owns and
		# reaches only 192.0.2.0/24 (SHIMD_REACH, as fsstack up owns only
		# its interface), a connect to a kernel server on 127.0.0.1 and a
		# bind to 127.0.0.1 turn them into kernel sockets
		if att timeout 60 "$OBJDIR/t_handover" daemon > "$tmp/out" 2> "$tmp/err"; then
			pass "$(head -1 "$tmp/out") (loopback served by the daemon)"
		else
			fail "t_handover daemon"
		fi
		if [ "$daemon_cmd" = "$OBJDIR/shimd" ]; then
			hsock="$tmp/handover.sock"
			daemon_cmd="env SHIMD_REACH=192.0.2.0/24 $OBJDIR/shimd"
			start_daemon "$hsock"
			daemon_cmd="$OBJDIR/shimd"
			if env LD_PRELOAD="$SO" FSSTACK_SOCKET="$hsock" FSSTACK_FALLBACK=fail \
				timeout 60 "$OBJDIR/t_handover" kernel > "$tmp/out" 2> "$tmp/err"; then
				pass "$(head -1 "$tmp/out") (connect/bind/listen on 127.0.0.1 handed to the kernel, epoll items follow)"
			else
				fail "t_handover kernel"
			fi
			kill $dpid 2> /dev/null
			# a listener on 0.0.0.0 on a daemon that does not reach
			# loopback: its placeholder listens on 127.0.0.1 too and
			# accept merges both queues (FSS_CMPL_LISTEN_LOOPBACK);
			# 127.0.0.2 stands for the stack's address (SHIMD_ANY)
			asock="$tmp/anyloop.sock"
			daemon_cmd="env SHIMD_REACH=127.0.0.2/32 SHIMD_ANY=127.0.0.2 $OBJDIR/shimd"
			start_daemon "$asock"
			daemon_cmd="$OBJDIR/shimd"
			if env LD_PRELOAD="$SO" FSSTACK_SOCKET="$asock" FSSTACK_FALLBACK=fail \
				timeout 60 "$OBJDIR/t_anyloop" 127.0.0.2 > "$tmp/out" 2> "$tmp/err"; then
				pass "$(head -1 "$tmp/out") (0.0.0.0 listener reached via 127.0.0.1 by kernel clients: blocking, EAGAIN, epoll LT/ET/ONESHOT, poll, select)"
			else
				fail "t_anyloop"
			fi
			kill $dpid 2> /dev/null
		fi
		# a signal handled outside the shim's sleeping syscall (during
		# accept's ACCEPT round trip, or looping after a wake-up that
		# was not for the waiter) must still end the call with EINTR;
		# a lost one leaves the call blocked after its handler ran
		if att timeout 120 "$OBJDIR/t_sigrace" 200 > "$tmp/out" 2> "$tmp/err"; then
			pass "t_sigrace on the daemon (EINTR however the signal lands)"
		else
			fail "t_sigrace on the daemon (a handled signal lost; 124 = hang): $?"
		fi
		# the same for a signal that comes while epoll_wait spins
		# before it sleeps (FSSTACK_SPIN_US)
		if att env FSSTACK_SPIN_US=200000 timeout 60 "$OBJDIR/t_sigrace" 20 spin > "$tmp/out" 2> "$tmp/err"; then
			pass "t_sigrace spin on the daemon (EINTR for a signal during the spin)"
		else
			fail "t_sigrace spin on the daemon (a handled signal lost; 124 = hang): $?"
		fi
		for m in lt et; do
			if att "$OBJDIR/t_stress" $m 4 8 100 > "$tmp/out" 2> "$tmp/err"; then
				pass "$(head -1 "$tmp/out") on the daemon"
			else
				fail "t_stress $m on the daemon"
			fi
		done
		# 800 CLOSEs posted back to back: the completion ring fills,
		# the daemon waits for room on it (FSS_DSLEEP_CMPL); a shim that
		# drains it without ringing the doorbell hangs in close().
		# 4000 connects: a shim that pairs a slot's state with events
		# of another publish takes a connect for refused (it did, one
		# run in three, until the events word carried the state).
		if att timeout 30 "$OBJDIR/t_closeburst" 400 10 > "$tmp/out" 2> "$tmp/err"; then
			pass "$(head -1 "$tmp/out") on the daemon (close bursts)"
		else
			fail "t_closeburst on the daemon (close bursts; 124 = hang): $?"
		fi
		# nginx, unmodified: master + 2 workers forked after the listen,
		# sendfile and tcp_nopush (TCP_CORK), a 64-byte and a 1 MiB file
		if command -v nginx > /dev/null && command -v curl > /dev/null; then
			ng="$tmp/nginx"
			mkdir -p "$ng/www" "$ng/tmp"
			head -c 64 /dev/urandom > "$ng/www/small"
			head -c 1048576 /dev/urandom > "$ng/www/big"
			port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
			cat > "$ng/nginx.conf" <<NGX
worker_processes 2;
daemon off;
master_process on;
user root;
pid $ng/nginx.pid;
error_log $ng/error.log info;
events { worker_connections 256; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_timeout 5;
  client_body_temp_path $ng/tmp/b; proxy_temp_path $ng/tmp/p; fastcgi_temp_path $ng/tmp/f;
  uwsgi_temp_path $ng/tmp/u; scgi_temp_path $ng/tmp/s;
  server { listen 127.0.0.1:$port; root $ng/www; }
}
NGX
			start_daemon "$tmp/nginx.sock"
			ndpid=$dpid
			(exec env LD_PRELOAD="$SO" FSSTACK_SOCKET="$tmp/nginx.sock" FSSTACK_FALLBACK=fail \
				nginx -c "$ng/nginx.conf" -p "$ng" > "$ng/out" 2>&1) &
			npid=$!		# the master itself: SIGTERM stops it and its workers
			pids="$pids $npid"
			ok=0
			for i in $(seq 1 50); do
				if curl -s -m 5 -o /dev/null "http://127.0.0.1:$port/small" 2> /dev/null; then ok=1; break; fi
				sleep 0.1
			done
			good=1
			for i in 1 2 3 4 5 6 7 8; do
				for f in small big; do
					curl -sS -m 20 -o "$ng/got" "http://127.0.0.1:$port/$f" 2>> "$tmp/err" &&
						cmp -s "$ng/got" "$ng/www/$f" || good=0
				done
			done
			if [ $ok -eq 1 ] && [ $good -eq 1 ] && ! grep -q '\[alert\]\|\[crit\]\|\[emerg\]' "$ng/error.log"; then
				pass "nginx (master + 2 workers, sendfile, tcp_nopush) on the daemon: 64 B and 1 MiB intact"
			else
				cat "$ng/error.log" "$ng/out" >> "$tmp/err" 2>/dev/null
				fail "nginx on the daemon"
			fi
			# its daemon dies: each worker learns it once, then idles
			cpu() { for p in $(ps -o pid= --ppid "$npid"); do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }
			kill "$ndpid"
			sleep 1
			c0=$(cpu); sleep 1; c1=$(cpu)
			alerts=$(grep -c '\[alert\]' "$ng/error.log")
			if [ $((c1 - c0)) -le 10 ] && [ "$alerts" -le 4 ] && kill -0 "$npid" 2>/dev/null; then
				pass "nginx's daemon killed: workers idle ($((c1 - c0)) ticks/s), $alerts alert line(s), master alive"
			else
				echo "cpu ticks in 1 s: $((c1 - c0)), alerts: $alerts" > "$tmp/err"
				fail "nginx's daemon killed"
			fi
			# SIGTERM: nginx closes its listeners and must exit even with its
			# daemon gone; a master still alive after 5 s is a hang
			kill "$npid" 2>/dev/null
			for i in $(seq 1 50); do kill -0 "$npid" 2>/dev/null || break; sleep 0.1; done
			if kill -0 "$npid" 2>/dev/null; then
				kill -9 "$npid" 2>/dev/null
				echo "nginx master did not exit on SIGTERM" > "$tmp/err"
				fail "nginx exits on SIGTERM after its daemon died"
			else
				pass "nginx exits on SIGTERM after its daemon died"
			fi
			wait "$npid" 2>/dev/null
		else
			echo "SKIP nginx on the daemon: nginx or curl not installed"
		fi
		# the daemon dies under a blocked read: errors, no hang
		gsock="$tmp/gone.sock"
		if start_daemon "$gsock"; then
			gpid=$dpid
			env LD_PRELOAD="$SO" FSSTACK_SOCKET="$gsock" FSSTACK_FALLBACK=fail \
				"$OBJDIR/t_daemon_gone" > "$tmp/gone.out" 2> "$tmp/err" &
			tpid=$!
			for i in $(seq 1 50); do grep -q ready "$tmp/gone.out" 2>/dev/null && break; sleep 0.1; done
			sleep 0.2
			kill "$gpid" 2>/dev/null
			if wait "$tpid"; then
				pass "daemon killed under a blocked read: $(grep 'read after' "$tmp/err")"
			else
				fail "daemon killed under a blocked read"
			fi
		else
			fail "second daemon did not start"
		fi
	fi
fi

if [ $fails -ne 0 ]; then
	echo "shim tests: $fails failed"
	exit 1
fi
echo "shim tests: all passed"
