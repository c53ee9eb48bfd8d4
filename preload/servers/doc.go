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
