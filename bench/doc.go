// Package bench holds fsstack's end-to-end benchmarks. BenchmarkLab runs
// the same lab as `fsstack lab` (internal/lab): one HTTP server on the
// kernel stack and then on fsstack, in a network namespace, loaded over a
// multi-queue veth from another in three phases of -duration each
// (keep-alive requests/s, Connection: close new connections/s, bulk body
// Gbit/s of 1 MiB responses on -bulk-conns connections), and reports each
// figure with the fsstack/kernel ratio measured in the same run
// (ratio-keepalive-req/s, ratio-close-conn/s, ratio-bulk-Gbit/s, ...).
//
//	make bench
//	# or: go test ./bench -run '^$' -bench Lab -benchtime 1x -timeout 15m \
//	#       -args -fsstack bin/fsstack -queues 4 -duration 5s -server go,nginx,redis
//
// It writes bench/results.json (every report, and the ratio of each phase
// per server), bench/results.svg (a bar chart of those ratios, drawn by
// internal/lab, with a line at 1.0x) and a CPU profile of the fsstack
// server (bench/fsstack-server.cpu.pprof, with `go tool pprof -top` beside it),
// needs root, and fails (rather than report made-up numbers) when fsstack
// cannot be measured. It measures three servers, each a sub-benchmark
// (-server go,nginx,redis by default): the built-in Go server (fsstack
// through the embedded API), Debian's nginx and Debian's redis-server
// (fsstack through `fsstack up` and the LD_PRELOAD shim). redis-server is
// loaded by redis-benchmark: SET and GET with keep-alive connections, and
// with a new connection per request (-k 0) in the close phase; each
// test's ops/s and ratio is reported (ratio-set-ops/s,
// ratio-newconn-get-ops/s, ...). It has no bulk phase: the report and the
// chart say so, and no bulk ratio is reported for it. -rounds N alternates the order N times and reports
// medians. Profiles are bench/fsstack-server-SERVER.cpu.pprof. fsstack's
// Go process (the daemon, or the Go server with the stack embedded)
// reports its garbage collection per request in the keep-alive and close
// phases: heap allocated (fsstack-close-alloc-KiB/req, nearly the same
// from run to run, so it shows allocation work that rates on a shared
// machine hide) and the collector's CPU (fsstack-close-gc-µs/req).
//
// `make bench` then runs the reliability suite's SYN flood
// (TestNginxSYNFlood in preload/servers, also part of `make test`) with
// FSSTACK_RELIABILITY_JSON set, and it writes bench/reliability.json: the
// flood's rate, length and SYNs sent, the legitimate requests served and
// failed, and the daemon's resident set fresh, idle, at the peak and a
// second apart after the flood, with how long it took to come back.
package bench
