package lab

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/loadgen"
	"github.com/fsstack/fsstack/stack"
)

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999.4: "999", 999.6: "1,000", 131024.7: "131,025", 1234567: "1,234,567"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestDiffShards(t *testing.T) {
	before := []stack.ShardStats{{Shard: 0, RxPackets: 10, Accepted: 1, Open: 5}, {Shard: 1, RxPackets: 20}}
	after := []stack.ShardStats{{Shard: 0, RxPackets: 15, Accepted: 4, Open: 2}, {Shard: 1, RxPackets: 26}, {Shard: 2, RxPackets: 3}}
	d := diffShards(before, after)
	if d[0].RxPackets != 5 || d[0].Accepted != 3 || d[0].Open != 2 || d[1].RxPackets != 6 || d[2].RxPackets != 3 {
		t.Errorf("diff = %+v", d)
	}
	if diffShards(before, nil) != nil {
		t.Error("no after: want nil")
	}
}

func TestSpread(t *testing.T) {
	s := Spread([]stack.ShardStats{{Shard: 0, Accepted: 300}, {Shard: 1, Accepted: 100}})
	if s != "0:300 (75%)  1:100 (25%)  max/mean 1.50" {
		t.Errorf("spread %q", s)
	}
	if s := Spread([]stack.ShardStats{{Shard: 0}}); s != "0:0 (0%)" {
		t.Errorf("empty spread %q", s)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := newTailBuffer(2)
	tb.Write([]byte("a\nb\nc"))
	tb.Write([]byte("d\ne"))
	if got := tb.String(); got != "b\ncd\ne" {
		t.Errorf("tail %q", got)
	}
}

func res(rps, conn float64, p50, p99 time.Duration) *loadgen.Result {
	return &loadgen.Result{RPS: rps, ConnRate: conn, P50: p50, P99: p99, Requests: 100}
}

func TestReportTable(t *testing.T) {
	rep := &Report{Queues: 4, Conns: 64, Duration: "5s", Host: HostInfo{CPUs: 2, Kernel: "6.18"}}
	rep.Kernel = StackRun{Stack: "kernel",
		KeepAlive: &Phase{Mode: loadgen.KeepAlive, Result: res(100000, 0, time.Millisecond, 4*time.Millisecond)},
		Close:     &Phase{Mode: loadgen.Close, Result: res(20000, 20000, 2*time.Millisecond, 8*time.Millisecond)}}
	rep.FSStack = StackRun{Stack: "fsstack",
		KeepAlive: &Phase{Mode: loadgen.KeepAlive, Result: res(150000, 0, 500*time.Microsecond, 2*time.Millisecond)},
		Close: &Phase{Mode: loadgen.Close, Result: res(30000, 30000, time.Millisecond, 4*time.Millisecond),
			Shards: []stack.ShardStats{{Shard: 0, Accepted: 1}, {Shard: 1, Accepted: 1}},
			GC:     &GCCost{CPUPerReq: 8.25, AllocPerReq: 9 << 10}}}
	rep.Ratios = ratios(rep)
	if rep.Ratios.KeepAliveRPS != 1.5 || rep.Ratios.CloseConnRate != 1.5 || rep.Ratios.CloseP99 != 0.5 {
		t.Errorf("ratios %+v", rep.Ratios)
	}
	var b bytes.Buffer
	rep.WriteTable(&b)
	out := norm(b.String())
	for _, want := range []string{"keep-alive requests/s 100,000 150,000 1.50x", "close: new connections/s", "0:1 (50%)", "2 CPUs",
		"fsstack Go GC CPU µs/request (keep-alive/close) -/- -/8.2", "fsstack Go heap allocated KiB/request (keep-alive/close) -/- -/9.00"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	lines := rep.SummaryLines()
	if len(lines) != 4 || lines[0] != "keep-alive: kernel 100,000 req/s, fsstack 150,000 req/s, fsstack/kernel 1.50x" {
		t.Errorf("summary %q", lines)
	}

	// fsstack failed: kernel numbers stay, the error is shown, no ratios.
	rep.FSStack = StackRun{Stack: "fsstack", Error: "fsstack server: start fsstack on x: not supported"}
	rep.Ratios = ratios(rep)
	b.Reset()
	rep.WriteTable(&b)
	out = norm(b.String())
	if rep.Ratios != (Ratios{}) || !strings.Contains(out, "keep-alive requests/s 100,000 - -") ||
		!strings.Contains(out, "fsstack: FAILED: fsstack server: start fsstack on x: not supported") {
		t.Errorf("failed fsstack table:\n%s", out)
	}
}

// norm collapses runs of white space, so tests do not depend on padding.
func norm(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestMedianRun(t *testing.T) {
	mk := func(rps, conn float64, err string) StackRun {
		s := StackRun{Stack: "x", KeepAlive: &Phase{Result: res(rps, 0, time.Duration(rps), 0)}, Close: &Phase{Result: res(0, conn, 0, 0)}}
		if err != "" {
			s = StackRun{Stack: "x", Error: err, KeepAlive: &Phase{Error: err}}
		}
		return s
	}
	m := medianRun([]StackRun{mk(300, 10, ""), mk(100, 30, ""), mk(200, 20, "")})
	if m.KeepAlive.Result.RPS != 200 || m.KeepAlive.Result.P50 != 200 || m.Close.Result.ConnRate != 20 || m.Error != "" {
		t.Errorf("median: ka %v close %v err %q", m.KeepAlive.Result.RPS, m.Close.Result.ConnRate, m.Error)
	}
	m = medianRun([]StackRun{mk(0, 0, "boom"), mk(100, 30, "")})
	if m.KeepAlive.Result.RPS != 100 || m.Error != "boom" {
		t.Errorf("with a failed round: %+v", m)
	}
	m = medianRun([]StackRun{mk(0, 0, "boom")})
	if m.Error != "boom" || ok(m.KeepAlive) {
		t.Errorf("all failed: %+v", m)
	}
}

func TestCountCPUs(t *testing.T) {
	for list, want := range map[string]int{"": 0, "0": 1, "0-1": 2, "0,2-3": 3, "1,1": 2} {
		if got, err := countCPUs(list); err != nil || got != want {
			t.Errorf("countCPUs(%q) = %d, %v; want %d", list, got, err, want)
		}
	}
	for _, bad := range []string{"a", "1-0", "-1", "0,", "0-x"} {
		if _, err := countCPUs(bad); err == nil {
			t.Errorf("countCPUs(%q) accepted", bad)
		}
	}
}

func TestHandoffs(t *testing.T) {
	got := Handoffs([]stack.ShardStats{{RxPackets: 900, Handoffs: 9}, {RxPackets: 100, Handoffs: 1, RxDropped: 2}})
	if got != "10 of 1,000 received packets handed to another shard (1.0%), 2 dropped" {
		t.Errorf("Handoffs = %q", got)
	}
}
