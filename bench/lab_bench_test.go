package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/lab"
)

var (
	flagBin      = flag.String("fsstack", "", "fsstack binary for the lab's child processes (default: build ./cmd/fsstack)")
	flagResults  = flag.String("results", "results.json", "where to write the report (relative to bench/)")
	flagSVG      = flag.String("svg", "results.svg", "where to draw the fsstack/kernel ratios of every phase and server as an SVG bar chart (relative to bench/; empty: none)")
	flagProfile  = flag.String("server-cpuprofile", "fsstack-server.cpu.pprof", "CPU profile of the fsstack server under load, -SERVER added before the extension (empty: none)")
	flagQueues   = flag.Int("queues", 4, "veth queues and fsstack shards")
	flagConns    = flag.Int("conns", 64, "concurrent load connections of the keep-alive and close phases")
	flagBulk     = flag.Int("bulk-conns", lab.DefaultBulkConns, "concurrent keep-alive connections of the bulk phase (1 MiB responses)")
	flagRounds   = flag.Int("rounds", 1, "rounds of both servers, alternating order; figures are medians")
	flagDuration = flag.Duration("duration", 5*time.Second, "measured time of each of the three phases (keep-alive, close, bulk)")
	flagServer   = flag.String("server", "go,nginx,redis", "servers, comma-separated: go (built-in HTTP server, embedded API), nginx and redis (redis-server, loaded by redis-benchmark), both under the LD_PRELOAD shim on fsstack")
	flagLoader   = flag.String("loader", "loadgen", "load generator of the HTTP servers: loadgen (built-in) or wrk (redis: always redis-benchmark)")
	flagSrvCPUs  = flag.String("server-cpus", "", "pin the servers and fsstack to these CPUs (taskset list)")
	flagCliCPUs  = flag.String("client-cpus", "", "pin the load generator to these CPUs (taskset list)")
	flagLib      = flag.String("lib", "", "libfsstack.so for -server nginx (default: next to the fsstack binary)")
	flagXDPMode  = flag.String("xdp-mode", "", "fsstack XDP attach mode: native, generic or empty (native, then generic)")
)

// fsstackBinary returns the binary to run the lab's children with,
// building one when -fsstack is not given.
func fsstackBinary(b *testing.B) string {
	if *flagBin != "" {
		abs, err := filepath.Abs(*flagBin)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			b.Fatalf("fsstack binary: %v (build it with 'make')", err)
		}
		return abs
	}
	bin := filepath.Join(b.TempDir(), "fsstack")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/fsstack").CombinedOutput()
	if err != nil {
		b.Fatalf("build fsstack: %v\n%s", err, out)
	}
	return bin
}

// BenchmarkLab measures keep-alive requests/s, Connection: close new
// connections/s and bulk body Gbit/s (1 MiB responses), with p50/p99
// latency and server CPU, on the kernel and on fsstack, once per server in
// -server (the lab takes 6 x (duration + warm-up) plus set-up per round,
// whatever b.N is; redis-server has no bulk phase). Each server is a
// sub-benchmark; all of them go into one results file and one chart,
// written even when one fails.
func BenchmarkLab(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("BenchmarkLab needs root to create network namespaces (run 'sudo make bench')")
	}
	bin := fsstackBinary(b)
	version := "unknown"
	if out, err := exec.Command(bin, "version").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	all := results{OK: true}
	defer func() {
		if err := writeResults(*flagResults, all); err != nil {
			b.Error(err)
		}
		abs, _ := filepath.Abs(*flagResults)
		fmt.Println("bench: results written to", abs)
		if *flagSVG == "" {
			return
		}
		if err := writeChart(*flagSVG, version, all); err != nil {
			b.Error(err)
		}
		abs, _ = filepath.Abs(*flagSVG)
		fmt.Println("bench: chart of the ratios written to", abs)
	}()
	for _, server := range strings.Split(*flagServer, ",") {
		b.Run(server, func(b *testing.B) {
			r := runLab(ctx, b, bin, version, server)
			all.Runs = append(all.Runs, r)
			all.OK = all.OK && r.OK
		})
		if ctx.Err() != nil {
			return
		}
	}
}

// runLab runs the lab for one server, prints its table and summary and
// reports its metrics; it fails the benchmark when fsstack cannot be
// measured.
func runLab(ctx context.Context, b *testing.B, bin, version, server string) run {
	profile := ""
	if *flagProfile != "" {
		ext := filepath.Ext(*flagProfile)
		profile = strings.TrimSuffix(*flagProfile, ext) + "-" + server + ext
	}
	b.ResetTimer()
	rep, err := lab.Run(ctx, lab.Options{
		Exe: bin, Server: server, Loader: *flagLoader, ShimLib: *flagLib,
		ServerCPUs: *flagSrvCPUs, ClientCPUs: *flagCliCPUs, Queues: *flagQueues, Conns: *flagConns, BulkConns: *flagBulk,
		Rounds: *flagRounds, Duration: *flagDuration, XDPMode: *flagXDPMode,
		CPUProfile: profile, Progress: os.Stderr, Version: version,
	})
	b.StopTimer()
	r := run{Server: server, OK: err == nil, Report: rep}
	if err != nil {
		r.Error = err.Error()
	}
	if rep == nil {
		b.Fatalf("lab (%s): %v", server, err)
		return r
	}
	r.Summary = rep.SummaryLines()
	fmt.Println()
	rep.WriteTable(os.Stdout)
	fmt.Println()
	for _, l := range r.Summary {
		fmt.Printf("bench: %s: %s\n", server, l)
	}
	if rep.CPUProfile != "" {
		fmt.Printf("bench: %s: fsstack server CPU profile: %s\n", server, rep.CPUProfile)
		printProfileTop(bin, rep.CPUProfile)
	}
	if err != nil {
		b.Fatalf("FAILED (%s): %v", server, err)
		return r
	}
	if k := rep.Kernel.KeepAlive; k != nil && k.Result != nil {
		b.ReportMetric(k.Result.RPS, "kernel-keepalive-req/s")
	}
	if f := rep.FSStack.KeepAlive; f != nil && f.Result != nil {
		b.ReportMetric(f.Result.RPS, "fsstack-keepalive-req/s")
	}
	if k := rep.Kernel.Close; k != nil && k.Result != nil {
		b.ReportMetric(k.Result.ConnRate, "kernel-close-conn/s")
	}
	if f := rep.FSStack.Close; f != nil && f.Result != nil {
		b.ReportMetric(f.Result.ConnRate, "fsstack-close-conn/s")
		b.ReportMetric(float64(f.Result.P99.Microseconds()), "fsstack-close-p99-µs")
	}
	if k := rep.Kernel.Bulk; k != nil && k.Result != nil {
		b.ReportMetric(k.Result.Gbps, "kernel-bulk-Gbit/s")
	}
	if f := rep.FSStack.Bulk; f != nil && f.Result != nil {
		b.ReportMetric(f.Result.Gbps, "fsstack-bulk-Gbit/s")
	}
	if f := rep.FSStack.Bulk; f != nil && f.ServerCPUPerMiB > 0 {
		b.ReportMetric(f.ServerCPUPerMiB, "fsstack-bulk-cpu-µs/MiB")
	}
	// Machine CPU (both sides, softirq included) per request, per
	// connection and per MiB, fsstack/kernel: below 1 is better.
	for name, v := range map[string]float64{
		"keepalive-machine-cpu-ratio": rep.Ratios.KeepAliveMachineCPU,
		"close-machine-cpu-ratio":     rep.Ratios.CloseMachineCPU,
		"bulk-machine-cpu-ratio":      rep.Ratios.BulkMachineCPU,
	} {
		if v > 0 {
			b.ReportMetric(v, name)
		}
	}
	if rep.FSStack.IdleCPU > 0 {
		b.ReportMetric(rep.FSStack.IdleCPU, "fsstack-idle-cpu-%")
	}
	// fsstack's garbage collection: heap bytes allocated per request
	// (steady between runs, unlike rates) and the collector's CPU.
	for name, p := range map[string]*lab.Phase{"keepalive": rep.FSStack.KeepAlive, "close": rep.FSStack.Close} {
		if p != nil && p.GC != nil {
			b.ReportMetric(p.GC.AllocPerReq/1024, "fsstack-"+name+"-alloc-KiB/req")
			b.ReportMetric(p.GC.CPUPerReq, "fsstack-"+name+"-gc-µs/req")
		}
	}
	// Multi-test loads (redis-benchmark): each test's ops/s and ratio.
	for _, pair := range [][2]*lab.Phase{{rep.Kernel.KeepAlive, rep.FSStack.KeepAlive}, {rep.Kernel.Close, rep.FSStack.Close}} {
		for side, p := range map[string]*lab.Phase{"kernel": pair[0], "fsstack": pair[1]} {
			if p == nil || p.Result == nil {
				continue
			}
			for _, t := range p.Result.Tests {
				b.ReportMetric(t.RPS, side+"-"+lab.TestKey(p.Mode, t.Name)+"-ops/s")
			}
		}
	}
	for key, r := range rep.TestRatios {
		b.ReportMetric(r, "ratio-"+key+"-ops/s")
	}
	b.ReportMetric(rep.Ratios.KeepAliveRPS, "ratio-keepalive-req/s")
	b.ReportMetric(rep.Ratios.CloseConnRate, "ratio-close-conn/s")
	if rep.BulkSkipped == "" { // redis-server: no bulk phase, no made-up ratio
		b.ReportMetric(rep.Ratios.BulkGbps, "ratio-bulk-Gbit/s")
		b.ReportMetric(rep.Ratios.BulkCPUPerMiB, "ratio-bulk-cpu/MiB")
	}
	b.ReportMetric(0, "ns/op") // one lab run, not an operation: hide the default
	return r
}

// results is bench/results.json: every server's lab report and verdict,
// and the fsstack/kernel ratio of each phase per server.
type results struct {
	OK     bool                `json:"ok"`
	Ratios map[string]ratioSet `json:"ratios,omitempty"` // by server
	Runs   []run               `json:"runs"`
}

// ratioSet is the headline fsstack/kernel figure of each phase of one
// server (0: not measured); BulkSkipped says why a server has no bulk
// phase.
type ratioSet struct {
	KeepAliveRPS  float64 `json:"keepalive_rps"`
	CloseConnRate float64 `json:"close_conn_rate"`
	BulkGbps      float64 `json:"bulk_gbit_s,omitempty"`
	BulkSkipped   string  `json:"bulk_skipped,omitempty"`
}

type run struct {
	Server  string      `json:"server"`
	OK      bool        `json:"ok"`
	Error   string      `json:"error,omitempty"`
	Summary []string    `json:"summary"`
	Report  *lab.Report `json:"report"`
}

func writeResults(path string, r results) error {
	for _, run := range r.Runs {
		if run.Report == nil {
			continue
		}
		if r.Ratios == nil {
			r.Ratios = map[string]ratioSet{}
		}
		rt := run.Report.Ratios
		r.Ratios[run.Server] = ratioSet{KeepAliveRPS: rt.KeepAliveRPS, CloseConnRate: rt.CloseConnRate, BulkGbps: rt.BulkGbps, BulkSkipped: run.Report.BulkSkipped}
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// writeChart draws the ratios of every run (lab.WriteRatioSVG) into
// path; a server that produced no report is drawn as not measured.
func writeChart(path, version string, r results) error {
	var reps []*lab.Report
	for _, run := range r.Runs {
		rep := run.Report
		if rep == nil {
			rep = &lab.Report{Server: run.Server, FSStack: lab.StackRun{Error: run.Error}}
		}
		reps = append(reps, rep)
	}
	var buf bytes.Buffer
	title := fmt.Sprintf("make bench: fsstack %s, %s", version, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	if err := lab.WriteRatioSVG(&buf, title, lab.ChartBars(reps)); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}

// printProfileTop writes `go tool pprof -top` of the server profile next
// to it (PROFILE.top.txt) and prints its head. Best effort: a missing go
// tool only loses the summary, not the profile.
func printProfileTop(bin, profile string) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=40", bin, profile).Output()
	if err != nil {
		fmt.Println("bench: go tool pprof -top failed:", err)
		return
	}
	top := strings.TrimSuffix(profile, filepath.Ext(profile)) + ".top.txt"
	if err := os.WriteFile(top, out, 0o644); err == nil {
		fmt.Println("bench: profile summary:", top)
	}
	lines := strings.Split(string(out), "\n")
	for _, l := range lines[:min(len(lines), 18)] {
		fmt.Println("bench: pprof:", l)
	}
}
