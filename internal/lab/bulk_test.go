package lab

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/loadgen"
)

func TestHandlerBulk(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for path, want := range map[string][]byte{BulkPath: BulkBody(), "/": Body, "/index.html": Body} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want) || resp.ContentLength != int64(len(want)) {
			t.Errorf("GET %s: status %d, %d bytes (Content-Length %d), %v; want %d bytes", path, resp.StatusCode, len(got), resp.ContentLength, err, len(want))
		}
	}
	if len(BulkBody()) != BulkSize {
		t.Errorf("BulkBody is %d bytes, want %d", len(BulkBody()), BulkSize)
	}
}

func TestWriteNginxBulk(t *testing.T) {
	dir := t.TempDir()
	if _, err := writeNginx(dir, "127.0.0.1:8080", 2); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "www", strings.TrimPrefix(BulkPath, "/")))
	if err != nil || !bytes.Equal(got, BulkBody()) {
		t.Errorf("nginx bulk file: %d bytes, %v; want BulkBody (%d bytes)", len(got), err, BulkSize)
	}
}

func bulkPhase(gbps float64, p99 time.Duration, cpuPerMiB float64) *Phase {
	return &Phase{Mode: loadgen.Bulk, ServerCPUPerMiB: cpuPerMiB,
		Result: &loadgen.Result{Mode: loadgen.Bulk, Gbps: gbps, RPS: gbps * 1e9 / 8 / BulkSize, P50: p99 / 2, P99: p99, Requests: 100}}
}

// bulkReport is TestReportTable's report with a bulk phase on both sides.
func bulkReport() *Report {
	rep := &Report{Server: ServerGo, Queues: 4, Conns: 64, BulkConns: 8, BulkBytes: BulkSize, Duration: "5s", Host: HostInfo{CPUs: 2, Kernel: "6.18"}}
	rep.Kernel = StackRun{Stack: "kernel",
		KeepAlive: &Phase{Mode: loadgen.KeepAlive, Result: res(100000, 0, time.Millisecond, 4*time.Millisecond)},
		Close:     &Phase{Mode: loadgen.Close, Result: res(20000, 20000, 2*time.Millisecond, 8*time.Millisecond)},
		Bulk:      bulkPhase(8, 20*time.Millisecond, 100)}
	rep.FSStack = StackRun{Stack: "fsstack",
		KeepAlive: &Phase{Mode: loadgen.KeepAlive, Result: res(150000, 0, 500*time.Microsecond, 2*time.Millisecond)},
		Close:     &Phase{Mode: loadgen.Close, Result: res(30000, 30000, time.Millisecond, 4*time.Millisecond)},
		Bulk:      bulkPhase(2, 80*time.Millisecond, 300)}
	rep.Ratios = ratios(rep)
	return rep
}

func TestReportTableBulk(t *testing.T) {
	rep := bulkReport()
	if rep.Ratios.BulkGbps != 0.25 || rep.Ratios.BulkP99 != 4 || rep.Ratios.BulkCPUPerMiB != 3 {
		t.Errorf("bulk ratios %+v", rep.Ratios)
	}
	var b bytes.Buffer
	rep.WriteTable(&b)
	out := norm(b.String())
	for _, want := range []string{
		"64 connections (bulk: 8, 1 MiB responses)",
		"bulk: body Gbit/s 8.00 2.00 0.25x",
		"bulk p99 (one whole response) 20.00ms 80.00ms 4.00x",
		"bulk: server CPU µs/MiB 100.0 300.0 3.00x",
		"errors (keep-alive/close/bulk) 0/0/0 0/0/0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	lines := strings.Join(rep.SummaryLines(), "\n")
	for _, want := range []string{
		"bulk: kernel 8.00 Gbit/s, fsstack 2.00 Gbit/s, fsstack/kernel 0.25x",
		"bulk p99: kernel 20,000 µs, fsstack 80,000 µs, fsstack/kernel 4.00x",
		"bulk server CPU: kernel 100 µs/MiB, fsstack 300 µs/MiB, fsstack/kernel 3.00x",
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("summary lacks %q:\n%s", want, lines)
		}
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"bulk_gbit_s":0.25`, `"bulk":{"mode":"bulk"`, `"server_cpu_us_per_mib":300`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("JSON lacks %s: %s", want, data)
		}
	}

	// Several rounds: the per-round line has the bulk ratios.
	rep.Rounds = []Round{{Kernel: rep.Kernel, FSStack: rep.FSStack}, {Kernel: rep.Kernel, FSStack: rep.Kernel}}
	b.Reset()
	rep.WriteTable(&b)
	if !strings.Contains(b.String(), "bulk Gbit/s 0.25x 1.00x") {
		t.Errorf("per-round line lacks the bulk ratios:\n%s", b.String())
	}
}

// TestReportBulkSkipped: redis has no bulk phase, and the report says so
// instead of showing zeros.
func TestReportBulkSkipped(t *testing.T) {
	rep := bulkReport()
	rep.Server, rep.BulkConns, rep.BulkBytes, rep.BulkSkipped = ServerRedis, 0, 0, bulkNotApplicable
	rep.Kernel.Bulk, rep.FSStack.Bulk = nil, nil
	rep.Ratios = ratios(rep)
	var b bytes.Buffer
	rep.WriteTable(&b)
	out := norm(b.String())
	for _, want := range []string{"bulk: body Gbit/s n/a n/a -", "bulk: n/a: redis-server: the bulk phase does not apply"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(out, "(bulk:") || strings.Contains(out, "0.00x") {
		t.Errorf("redis table shows bulk numbers:\n%s", b.String())
	}
	lines := rep.SummaryLines()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "bulk: n/a: redis-server") {
		t.Errorf("summary does not say that bulk does not apply: %q", lines)
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "bulk_gbit_s") || !strings.Contains(string(data), `"bulk_skipped":"redis-server`) {
		t.Errorf("redis JSON: %s", data)
	}
}

func TestMedianRunBulk(t *testing.T) {
	mk := func(gbps float64) StackRun {
		return StackRun{Stack: "x", Bulk: bulkPhase(gbps, time.Duration(gbps), 0)}
	}
	m := medianRun([]StackRun{mk(3), mk(1), mk(2)})
	if m.Bulk.Result.Gbps != 2 || m.Bulk.Result.P99 != 2 {
		t.Errorf("median bulk phase %+v", m.Bulk.Result)
	}
}

func TestWrkBytesRead(t *testing.T) {
	n, err := wrkBytesRead(wrkReport)
	mb := 10.11
	if err != nil || n != uint64(mb*(1<<20)) {
		t.Errorf("wrkBytesRead = %d, %v; want 10.11 MiB", n, err)
	}
	for in, want := range map[string]uint64{"512.00B": 512, "2.00KB": 2048, "1.50GB": 3 << 29} {
		got, err := wrkBytesRead("  9 requests in 1.00s, " + in + " read\n")
		if err != nil || got != want {
			t.Errorf("%s: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "  9 requests in 1.00s, lots read\n"} {
		if _, err := wrkBytesRead(bad); err == nil {
			t.Errorf("wrkBytesRead(%q) accepted it", bad)
		}
	}
}
