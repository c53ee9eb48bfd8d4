package lab

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fsstack/fsstack/internal/loadgen"
)

// ServerRedis is Debian's redis-server, unmodified: on the kernel's stack
// as it is, on fsstack under the shim with `fsstack up` (Options.Server).
// Its load is always redis-benchmark (LoaderRedis): SET and GET with
// keep-alive connections, then SET and GET with a new connection per
// request (redis-benchmark -k 0) for the close phase.
const ServerRedis = "redis"

// LoaderRedis is redis-benchmark (Debian's redis-tools), the load of
// ServerRedis.
const LoaderRedis = "redis-benchmark"

// redisTests are the redis-benchmark tests of each phase.
const redisTests = "set,get"

// redisValueSize is the value size of SET (redis-benchmark -d), the size
// of the HTTP servers' body.
const redisValueSize = 64

// redisServer starts redis-server in the server namespace listening on
// addr; with daemonArgs set, on fsstack under the shim (see startProgram).
func (r *runner) redisServer(name, dir, addr, ctl string, daemonArgs []string) starter {
	return func(ctx context.Context) (*server, error) {
		redis, err := exec.LookPath("redis-server")
		if err != nil {
			return nil, fmt.Errorf("redis-server not found: install it with scripts/install-deps.sh (Debian package redis-server): %w", err)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("redis directory: %w", err)
		}
		logf := filepath.Join(dir, "redis.log")
		prog := program{
			label: "redis-server",
			path:  redis,
			// No persistence: the benchmark measures the network path.
			args: []string{"--bind", host, "--port", port, "--save", "", "--appendonly", "no",
				"--protected-mode", "no", "--daemonize", "no", "--dir", dir, "--logfile", logf},
			stop: func(c *child) { c.stop(5 * time.Second) },
			log:  logf,
		}
		return r.startProgram(ctx, name, addr, ctl, daemonArgs, prog)
	}
}

// runRedisBenchmark runs redis-benchmark's SET and GET tests against addr
// (mode Close: a new connection per request, -k 0) and sums them up in
// one loadgen.Result, each test in Result.Tests. redis-benchmark counts
// requests, not time: a first run (the warm-up, discarded) measures the
// rate, and the measured run asks for about duration's worth.
func runRedisBenchmark(ctx context.Context, addr string, mode loadgen.Mode, conns int, duration time.Duration) (*loadgen.Result, error) {
	path, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark not found: install it with scripts/install-deps.sh (Debian package redis-tools): %w", err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	run := func(n int) ([]loadgen.TestResult, error) {
		args := []string{"-h", host, "-p", port, "-c", strconv.Itoa(conns), "-n", strconv.Itoa(n),
			"-t", redisTests, "-d", strconv.Itoa(redisValueSize), "--csv"}
		if mode == loadgen.Close {
			args = append(args, "-k", "0")
		}
		cmd := exec.CommandContext(ctx, path, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr // -k 0 warns about tcp_tw_reuse there
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		tests, err := parseRedisBenchmark(string(out))
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark report: %w\n%s", err, out)
		}
		return tests, nil
	}
	warm := 20000
	if mode == loadgen.Close {
		warm = 2000
	}
	tests, err := run(warm)
	if err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	rate := math.Inf(1)
	for _, t := range tests {
		rate = min(rate, t.RPS)
	}
	n := max(1000, int(rate*duration.Seconds()))
	if tests, err = run(n); err != nil {
		return nil, err
	}
	res := &loadgen.Result{Addr: addr, Mode: mode, Conns: conns, Tests: tests}
	var secs float64
	for _, t := range tests {
		res.Requests += uint64(n)
		secs += float64(n) / t.RPS
		res.P50 = max(res.P50, t.P50)
		res.P99 = max(res.P99, t.P99)
	}
	res.Duration = time.Duration(secs * float64(time.Second))
	res.RPS = float64(res.Requests) / secs
	if mode == loadgen.Close {
		res.ConnRate, res.Connections = res.RPS, res.Requests
	}
	return res, nil
}

// parseRedisBenchmark reads redis-benchmark --csv: a header line, then
// "TEST","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
// "p95_latency_ms","p99_latency_ms","max_latency_ms" per test.
func parseRedisBenchmark(out string) ([]loadgen.TestResult, error) {
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) < 2 || len(recs[0]) < 7 || recs[0][0] != "test" || recs[0][1] != "rps" || recs[0][4] != "p50_latency_ms" || recs[0][6] != "p99_latency_ms" {
		return nil, errors.New("no CSV header test,rps,...,p50_latency_ms,p95_latency_ms,p99_latency_ms")
	}
	ms := func(s string) (time.Duration, error) {
		v, err := strconv.ParseFloat(s, 64)
		return time.Duration(v * float64(time.Millisecond)), err
	}
	var tests []loadgen.TestResult
	for _, rec := range recs[1:] {
		if len(rec) < 7 {
			return nil, fmt.Errorf("short line %q", strings.Join(rec, ","))
		}
		rps, err := strconv.ParseFloat(rec[1], 64)
		if err != nil || rps <= 0 {
			return nil, fmt.Errorf("test %s: rps %q", rec[0], rec[1])
		}
		p50, err1 := ms(rec[4])
		p99, err2 := ms(rec[6])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("test %s: %w", rec[0], err)
		}
		tests = append(tests, loadgen.TestResult{Name: strings.ToLower(rec[0]), RPS: rps, P50: p50, P99: p99})
	}
	return tests, nil
}
