// Package conformance is the differential conformance suite of the
// LD_PRELOAD shim (libfsstack.so): small C programs that exercise each BSD
// socket call the shim intercepts and each epoll, poll and select case, run
// once on the kernel and once under the shim, whose transcripts must match.
//
// The programs live in c/ (t_*.c, with the helpers in conf.c). Each prints
// one line per call — the call's text, its result normalised where it is
// inherently variable (fds print as "fd", ephemeral ports as "port",
// addresses by role), and errno by name — and ends with "END <name>".
// Waits are bounded and timings are reported in coarse buckets
// ("about-timeout", "idle"), so a transcript is the same on every run of the
// same stack.
//
// The runner is conformance_test.go (no cgo): it compiles the programs with
// gcc, runs each twice on the kernel and requires identical transcripts
// (and, on loopback, the checked-in kernel transcripts in testdata/kernel),
// then, when FSSTACK_SHIM names libfsstack.so, runs each under LD_PRELOAD
// with FSSTACK_FALLBACK=fail against the daemon at FSSTACK_SOCKET (or, if
// that is not set, one it runs in-process on the kernel's TCP stack, as
// preload/shimd does: no AF_XDP needed) and diffs against the kernel, and
// once more with FSSTACK_DISABLE=1 to check the interposition layer alone.
// Without FSSTACK_SHIM the shim half reports SKIP with the reason; the
// top-level make test sets it. See README.md and the Makefile for the usual
// invocations.
//
// Addresses: servers bind FSCONF_ADDR (default 127.0.0.1); when FSCONF_PEER
// is set, client sockets bind it before connecting, so the same programs can
// run across a pair of test namespaces.
package conformance
