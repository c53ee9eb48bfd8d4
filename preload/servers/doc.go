// Package servers tests real servers from Debian's packages (nginx,
// redis-server, memcached, haproxy, lighttpd), unmodified, under the LD_PRELOAD shim
// (libfsstack.so), checked from the peer namespace of a netlab (issue 3,
// item 5). It has no code of its own outside its tests.
//
// Each server runs in two modes:
//
//   - fallback: under the shim with no daemon (FSSTACK_FALLBACK=kernel). The
//     shim must be transparent: the server works on the kernel's stack and
//     the shim prints exactly one line saying the daemon is unreachable.
//   - fsstack: with `fsstack up` serving the lab's server interface in the
//     server namespace; the server's sockets live on fsstack, and the
//     daemon's stats must show the shards accepted the connections.
//
// TestFastsocket does the same for a program written against
// fastsocket.ko's /dev/fastsocket ioctl ABI (preload/shim/tests/t_fastsocket.c):
// served through the shards with a daemon, ENOENT on the device without.
//
// TestFastsocketLibrary runs nginx and that program as a site using
// Fastsocket's user library would: libfsocket_double.so (the project's
// stand-in for libfsocket.so, preload/shim/tests/libfsocket_double.c) in
// LD_PRELOAD, started by `fsstack run` against `fsstack up`, with the double
// on top of the shim and the shim on top of the double; curl and 2,000
// short connections, no failure, no crash, no nginx alert.
//
// TestHAProxy runs haproxy in master-worker mode (nbthread 2, option
// splice-*) in front of nginx on port 8080 of the same address, both under
// the shim: with a daemon, haproxy's accepts and its connects to nginx go
// through fsstack (a connection to the stack's own address loops inside
// one shard; nginx has no kernel listener, so a kernel connect would be
// refused). It checks the bodies by sha256, keep-alive and close, wrk, and
// a reload (SIGUSR2) and a soft stop (SIGUSR1) with slow downloads in
// flight. What the run showed about haproxy on fsstack:
//
//   - splice: haproxy's socket <-> pipe splices run on the shim's splice
//     (conformance t_splice); before it, every spliced body failed with
//     ENOTCONN from the placeholder.
//   - reload: the re-executed master asks the old worker for its listening
//     fds over the master's socketpair (-x sockpair@N); what arrives are
//     placeholders the new image does not know as fsstack sockets, so
//     haproxy finds no match and binds anew with SO_REUSEPORT, which the
//     stack's Binder allows; the old worker finishes its connections.
//   - soft stop: a listening port stays steered while connections on it
//     live (the stack's draining ports); before, the kernel reset every
//     download haproxy was finishing after it closed its listener.
//   - a backend on 127.0.0.1 (a kernel server on loopback) was not
//     reachable under the shim: every AF_INET stream socket was an fsstack
//     socket from socket() on, the stack has no loopback route, so the
//     connect failed (EHOSTUNREACH after the stack's neighbour wait) and
//     haproxy answered 503. Now the daemon answers such a connect (and a
//     bind to 127.0.0.1) with a handover and the shim makes the socket a
//     kernel socket (preload/shim/README.md, "Handover to the kernel"):
//     TestHAProxyLoopbackBackend runs haproxy under the shim in front of a
//     kernel nginx on 127.0.0.1:8080, with a second frontend on
//     127.0.0.1:81 reached by a kernel curl in the server namespace.
//     Still refused: a kernel client's connect to 127.0.0.1 when the
//     server's listener is on 0.0.0.0 (it lives on fsstack only; BUG in
//     the shim's README).
//
// TestLighttpd runs lighttpd (one process, the epoll and the poll event
// handlers): 64 B and 1 MiB files by sha256 on new and keep-alive
// connections, Connection: close, wrk with 200 connections.
//
// A further test kills the daemon (SIGKILL) while curl loops against nginx
// under the shim: the calls must fail with errors within their timeouts,
// nginx must not crash or hang, and once the XDP link is gone a kernel
// listener on the same port must serve again.
//
// The fsstack-mode tests skip, with the reason, only when the daemon's
// control socket does not speak the shim's attach protocol (it answers the
// attach hello with JSON). Everything else that goes wrong is a failure.
//
// The tests need root (network namespaces) and the packages that
// scripts/install-deps.sh installs. They build bin/fsstack and
// libfsstack.so once per run into a temporary directory, from the
// repository that contains the working directory:
//
//	go test ./preload/servers/            # as root
//	go test -v -run 'Nginx/fsstack' ./preload/servers/
package servers
