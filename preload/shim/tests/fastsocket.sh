#!/bin/sh
# fastsocket.sh - /dev/fastsocket under the shim (fastsocket.c), with
# t_fastsocket, a program written against Fastsocket's ioctl ABI.  Needs SO
# and OBJDIR like run.sh.  The daemon is tests/shimd (the shim protocol on
# the kernel's TCP stack; SHIMD_FASTSOCKET passes fastsocket.ko parameters
# as `fsstack up --fastsocket` does).  The same program on the real stack
# (`fsstack up` on AF_XDP in a netns) is preload/servers' TestFastsocket.
set -u
: "${SO:?}" "${OBJDIR:?}"
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/fss_fsock_test.XXXXXX)
fails=0
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; [ -f "$tmp/err" ] && sed 's/^/    /' "$tmp/err"; fails=$((fails + 1)); }

# curl serves the checks below; a missing one is a failure, not a skip.
command -v curl > /dev/null || fail "tool curl not found; install it (make deps runs scripts/install-deps.sh)"
t="$OBJDIR/t_fastsocket"

# 1. no daemon: open("/dev/fastsocket") is the kernel's ENOENT, in both
# fallback modes, and without the shim
if "$t" absent > "$tmp/out" 2> "$tmp/err" &&
   env LD_PRELOAD="$SO" FSSTACK_SOCKET="$tmp/none.sock" "$t" absent > "$tmp/out" 2> "$tmp/err" &&
   env LD_PRELOAD="$SO" FSSTACK_SOCKET="$tmp/none.sock" FSSTACK_FALLBACK=fail "$t" absent > "$tmp/out" 2> "$tmp/err" &&
   env LD_PRELOAD="$SO" FSSTACK_DISABLE=1 "$t" absent > "$tmp/out" 2> "$tmp/err"; then
	pass "no daemon: open(/dev/fastsocket) fails with ENOENT"
else
	fail "no daemon: open(/dev/fastsocket)"
fi

# 2. with a daemon
if [ ! -x "$OBJDIR/shimd" ] && ! (cd "$here/shimd" && go build -tags fsstack_shimd -o "$OBJDIR/shimd" . > "$tmp/err" 2>&1); then
	fail "tests/shimd does not build"
	exit 1
fi
start_daemon() {	# $1 socket path, $2 fastsocket parameters; sets dpid
	SHIMD_FASTSOCKET="$2" "$OBJDIR/shimd" "$1" > "$tmp/daemon.out" 2>> "$tmp/daemon.err" &
	dpid=$!
	pids="$pids $dpid"
	for i in $(seq 1 50); do [ -S "$1" ] && return 0; sleep 0.1; done
	return 1
}
att() { sock=$1; shift; env LD_PRELOAD="$SO" FSSTACK_SOCKET="$sock" FSSTACK_FALLBACK=fail "$@"; }

if ! start_daemon "$tmp/d.sock" ""; then
	cp "$tmp/daemon.err" "$tmp/err"; fail "daemon did not start"; exit 1
fi
if att "$tmp/d.sock" "$t" errors > "$tmp/out" 2> "$tmp/err"; then
	pass "bad ioctl arguments: EFAULT, EINVAL, EBADF, ENOTSOCK, ENOTTY as the kernel would; dup/fork of the channel"
else
	fail "t_fastsocket errors"
fi

if att "$tmp/d.sock" timeout 120 "$t" fuzz 20000 > "$tmp/out" 2> "$tmp/err"; then
	pass "20000 ioctls with random arguments and commands: no crash, only errors the kernel could give"
else
	fail "t_fastsocket fuzz"
fi

# the server: SOCKET/LISTEN via ioctl, 2 forked workers SPAWN and
# ACCEPT/read/write/CLOSE; clients from outside, without the shim.
# serve_check LABEL PRELOAD: LD_PRELOAD is PRELOAD.
serve_check() {
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	: > "$tmp/srv.out"
	env LD_PRELOAD="$2" FSSTACK_SOCKET="$tmp/d.sock" FSSTACK_FALLBACK=fail \
		"$t" serve 127.0.0.1 "$port" 2 > "$tmp/srv.out" 2> "$tmp/srv.err" &
	spid=$!
	pids="$pids $spid"
	for i in $(seq 1 50); do grep -q ready "$tmp/srv.out" 2>/dev/null && break; sleep 0.1; done
	: > "$tmp/bodies"
	for i in $(seq 1 20); do
		curl -sS -m 5 "http://127.0.0.1:$port/" >> "$tmp/bodies" 2>> "$tmp/err"
	done
	kill -TERM "$spid"
	wait "$spid"
	rc=$?
	n=$(grep -c '^fastsocket worker [01] cpu [0-9]*$' "$tmp/bodies")
	# the listener lives in the daemon, not in the server's process
	if [ "$n" -eq 20 ] && [ $rc -eq 0 ] && ! grep -q '^fsstack\[' "$tmp/srv.err"; then
		pass "$1: 20 clients from outside served ($(sort "$tmp/bodies" | uniq -c | tr -s ' ' | tr '\n' ';'))"
	else
		{ echo "served $n of 20, server exit $rc"; cat "$tmp/srv.out" "$tmp/srv.err"; } >> "$tmp/err"
		fail "$1"
	fi
}
if command -v curl > /dev/null; then
	serve_check "Fastsocket-ABI server (2 spawned workers) on the daemon" "$SO"
else
	echo "SKIP the Fastsocket-ABI server: curl not installed"
fi

# 3. stacked with tests/libfsocket_double.so, a stand-in for Fastsocket's
# libfsocket.so: its wrappers turn socket, listen, accept, close and
# shutdown into these ioctls.  In either LD_PRELOAD order every call is
# served once: no endless recursion (a crash at the first close), no
# second close.  Without the device its constructor exits 255.
dbl="$OBJDIR/libfsocket_double.so"
env LD_PRELOAD="$dbl:$SO" FSSTACK_SOCKET="$tmp/none.sock" /bin/true 2> "$tmp/err"
rc=$?
if [ $rc -eq 255 ] && grep -q 'cannot open /dev/fastsocket' "$tmp/err"; then
	pass "libfsocket double without a daemon: exits 255 (no /dev/fastsocket), as the original"
else
	echo "exit $rc" >> "$tmp/err"
	fail "libfsocket double without a daemon"
fi
echo hello > "$tmp/file"
for order in "$dbl:$SO" "$SO:$dbl"; do
	label="LD_PRELOAD=$(echo "$order" | sed 's#[^:]*/##g')"
	dbl_run() {
		env LD_PRELOAD="$order" FSSTACK_SOCKET="$tmp/d.sock" FSSTACK_FALLBACK=fail \
			FSOCK_DOUBLE_STATS="$tmp/stats" timeout 120 "$@"
	}
	rm -f "$tmp/stats"
	if dbl_run /bin/true 2> "$tmp/err" &&
	   [ "$(dbl_run cat "$tmp/file" 2>> "$tmp/err")" = hello ] &&
	   dbl_run "$t" errors > "$tmp/out" 2>> "$tmp/err" &&
	   dbl_run "$t" fuzz 2000 > "$tmp/out" 2>> "$tmp/err" &&
	   awk '$10 > 0 { n++ } END { exit n > 0 ? 0 : 1 }' "$tmp/stats"; then
		pass "$label: true, cat, the bad-argument cases and 2000 random ioctls (the double issued: $(awk '{ s += $4; c += $10 } END { print s " SOCKET, " c " CLOSE" }' "$tmp/stats"))"
	else
		cat "$tmp/stats" >> "$tmp/err" 2> /dev/null
		fail "$label: programs under the libfsocket double and the shim"
	fi
	if command -v curl > /dev/null; then
		serve_check "$label: the Fastsocket-ABI server" "$order"
	fi
done

# enable_listen_spawn=0 and =1, as published by the daemon
if start_daemon "$tmp/d0.sock" "enable_listen_spawn=0" &&
   att "$tmp/d0.sock" "$t" spawn-off > "$tmp/out" 2> "$tmp/err"; then
	pass "enable_listen_spawn=0: SPAWN_LISTEN and SPAWN_ALL_LISTEN fail with EPERM"
else
	fail "enable_listen_spawn=0"
fi
if start_daemon "$tmp/d1.sock" "modprobe fastsocket enable_listen_spawn=1" &&
   att "$tmp/d1.sock" "$t" spawn-app > "$tmp/out" 2> "$tmp/err"; then
	pass "enable_listen_spawn=1: SPAWN_LISTEN needs the application's own affinity"
else
	fail "enable_listen_spawn=1"
fi
# a bad parameter string stops the daemon with a message naming it
if SHIMD_FASTSOCKET="enable_turbo=1" "$OBJDIR/shimd" "$tmp/bad.sock" > /dev/null 2> "$tmp/err"; then
	fail "shimd accepted enable_turbo=1"
elif grep -q 'unknown parameter "enable_turbo"' "$tmp/err"; then
	pass "unknown fastsocket parameter refused by name"
else
	fail "unknown fastsocket parameter"
fi

if [ $fails -ne 0 ]; then
	echo "fastsocket tests: $fails failed"
	exit 1
fi
echo "fastsocket tests: all passed"
