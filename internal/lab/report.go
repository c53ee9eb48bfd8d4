package lab

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fsstack/fsstack/internal/loadgen"
	"github.com/fsstack/fsstack/stack"
)

// thousands formats v rounded, with commas: 131024.7 -> "131,025".
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}

func fmtRatio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

// WriteTable prints the side-by-side comparison.
func (rep *Report) WriteTable(w io.Writer) {
	server := "built-in Go HTTP server (fsstack: embedded API)"
	switch rep.Server {
	case ServerNginx:
		server = "nginx (fsstack: LD_PRELOAD shim + fsstack up)"
	case ServerRedis:
		server = "redis-server (fsstack: LD_PRELOAD shim + fsstack up)"
	}
	loader := ""
	if rep.Loader == LoaderWrk || rep.Loader == LoaderRedis {
		loader = ", load from " + rep.Loader
	}
	if rep.ServerCPUs != "" {
		loader += ", server on CPUs " + rep.ServerCPUs
	}
	if rep.ClientCPUs != "" {
		loader += ", load on CPUs " + rep.ClientCPUs
	}
	bulk := ""
	if rep.BulkConns > 0 {
		bulk = fmt.Sprintf(" (bulk: %d, %s responses)", rep.BulkConns, fmtBytes(rep.BulkBytes))
	}
	fmt.Fprintf(w, "fsstack lab: %s, %d queues, %d connections%s%s, %s per phase, %d CPUs, Linux %s\n",
		server, rep.Queues, rep.Conns, bulk, loader, rep.Duration, rep.Host.CPUs, rep.Host.Kernel)
	if n := len(rep.Rounds); n > 1 {
		fmt.Fprintf(w, "medians of %d rounds (alternating which server goes first)\n", n)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-26s\tkernel\tfsstack\tfsstack/kernel\t\n", "")
	k, f := rep.Kernel, rep.FSStack
	type row struct {
		name string
		val  func(*StackRun) string
		r    float64
	}
	res := func(p *Phase) bool { return p != nil && p.Result != nil }
	// perPhase shows one figure of the keep-alive and close phases as
	// "keep-alive/close", with prec decimals, "-" where a phase has none.
	perPhase := func(fig func(*Phase) float64, prec int) func(*StackRun) string {
		return func(s *StackRun) string {
			f := func(p *Phase) string {
				if p == nil || fig(p) == 0 {
					return "-"
				}
				return strconv.FormatFloat(fig(p), 'f', prec, 64)
			}
			return f(s.KeepAlive) + "/" + f(s.Close)
		}
	}
	perPhaseLoss := func(fig func(*TCPLoss) string) func(*StackRun) string {
		return func(s *StackRun) string {
			f := func(p *Phase) string {
				if p == nil || p.Loss == nil {
					return "-"
				}
				return fig(p.Loss)
			}
			return f(s.KeepAlive) + "/" + f(s.Close) + "/" + f(s.Bulk)
		}
	}
	rows := []row{
		{"keep-alive requests/s", func(s *StackRun) string {
			if !res(s.KeepAlive) {
				return "-"
			}
			return thousands(s.KeepAlive.Result.RPS)
		}, rep.Ratios.KeepAliveRPS},
		{"keep-alive p50", func(s *StackRun) string {
			if !res(s.KeepAlive) {
				return "-"
			}
			return fmtDur(s.KeepAlive.Result.P50)
		}, rep.Ratios.KeepAliveP50},
		{"keep-alive p99", func(s *StackRun) string {
			if !res(s.KeepAlive) {
				return "-"
			}
			return fmtDur(s.KeepAlive.Result.P99)
		}, rep.Ratios.KeepAliveP99},
		{"close: new connections/s", func(s *StackRun) string {
			if !res(s.Close) {
				return "-"
			}
			return thousands(s.Close.Result.ConnRate)
		}, rep.Ratios.CloseConnRate},
		{"close p50", func(s *StackRun) string {
			if !res(s.Close) {
				return "-"
			}
			return fmtDur(s.Close.Result.P50)
		}, rep.Ratios.CloseP50},
		{"close p99", func(s *StackRun) string {
			if !res(s.Close) {
				return "-"
			}
			return fmtDur(s.Close.Result.P99)
		}, rep.Ratios.CloseP99},
		{"bulk: body Gbit/s", func(s *StackRun) string {
			if !res(s.Bulk) {
				return notRun(rep)
			}
			return strconv.FormatFloat(s.Bulk.Result.Gbps, 'f', 2, 64)
		}, rep.Ratios.BulkGbps},
		{"bulk p99 (one whole response)", func(s *StackRun) string {
			if !res(s.Bulk) {
				return notRun(rep)
			}
			return fmtDur(s.Bulk.Result.P99)
		}, rep.Ratios.BulkP99},
		{"server CPU µs/request (keep-alive/close)", perPhase(func(p *Phase) float64 { return p.ServerCPUPerReq }, 1), 0},
		{"bulk: server CPU µs/MiB", func(s *StackRun) string {
			if s.Bulk == nil || s.Bulk.ServerCPUPerMiB == 0 {
				return notRun(rep)
			}
			return strconv.FormatFloat(s.Bulk.ServerCPUPerMiB, 'f', 1, 64)
		}, rep.Ratios.BulkCPUPerMiB},
		{"keep-alive: machine CPU µs/request", func(s *StackRun) string {
			if s.KeepAlive == nil || s.KeepAlive.MachineCPUPerReq == 0 {
				return "-"
			}
			return strconv.FormatFloat(s.KeepAlive.MachineCPUPerReq, 'f', 1, 64)
		}, rep.Ratios.KeepAliveMachineCPU},
		{"close: machine CPU µs/connection", func(s *StackRun) string {
			if s.Close == nil || s.Close.MachineCPUPerReq == 0 {
				return "-"
			}
			return strconv.FormatFloat(s.Close.MachineCPUPerReq, 'f', 1, 64)
		}, rep.Ratios.CloseMachineCPU},
		{"bulk: machine CPU µs/MiB", func(s *StackRun) string {
			if s.Bulk == nil || s.Bulk.MachineCPUPerMiB == 0 {
				return notRun(rep)
			}
			return strconv.FormatFloat(s.Bulk.MachineCPUPerMiB, 'f', 1, 64)
		}, rep.Ratios.BulkMachineCPU},
		{"context switches/request, server side (keep-alive/close)", perPhase(func(p *Phase) float64 { return p.ServerSwitchesPerReq }, 2), 0},
		{"context switches/request, machine (keep-alive/close)", perPhase(func(p *Phase) float64 { return p.MachineSwitchesPerReq }, 2), 0},
		{"retransmits client+server (keep-alive/close/bulk)", perPhaseLoss(func(l *TCPLoss) string {
			return strconv.FormatInt(l.ClientRetrans, 10) + "+" + strconv.FormatInt(l.ServerRetrans, 10)
		}), 0},
		{"RTO timeouts client+server (keep-alive/close/bulk)", perPhaseLoss(func(l *TCPLoss) string {
			return strconv.FormatInt(l.ClientTimeouts, 10) + "+" + strconv.FormatInt(l.ServerTimeouts, 10)
		}), 0},
		{"fsstack Go GC CPU µs/request (keep-alive/close)", perPhase(func(p *Phase) float64 {
			if p.GC == nil {
				return 0
			}
			return p.GC.CPUPerReq
		}, 1), 0},
		{"fsstack Go heap allocated KiB/request (keep-alive/close)", perPhase(func(p *Phase) float64 {
			if p.GC == nil {
				return 0
			}
			return p.GC.AllocPerReq / 1024
		}, 2), 0},
		{"errors (keep-alive/close/bulk)", func(s *StackRun) string {
			n := func(p *Phase) string {
				if !res(p) {
					return "-"
				}
				return strconv.FormatUint(p.Result.Errors, 10)
			}
			return n(s.KeepAlive) + "/" + n(s.Close) + "/" + n(s.Bulk)
		}, 0},
		{"idle fsstack CPU (% of a core)", func(s *StackRun) string {
			if s.Stack != "fsstack" || s.IdleCPU == 0 && s.KeepAlive == nil {
				return "-"
			}
			return strconv.FormatFloat(s.IdleCPU, 'f', 3, 64) + "%"
		}, 0},
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r.name))
	}
	for _, r := range rows {
		// Names padded by hand: left-aligned in a right-aligned table.
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t\n", width, r.name, r.val(&k), r.val(&f), fmtRatio(r.r))
	}
	tw.Flush()
	fmt.Fprintln(w, "(fsstack/kernel: above 1 is better for rates, below 1 is better for latencies and CPU)")
	if rep.BulkSkipped != "" {
		fmt.Fprintf(w, "bulk: n/a: %s\n", rep.BulkSkipped)
	}

	if len(rep.Rounds) > 1 {
		var ka, cl, bu []string
		for _, rd := range rep.Rounds {
			one := &Report{Kernel: rd.Kernel, FSStack: rd.FSStack}
			r := ratios(one)
			ka = append(ka, fmtRatio(r.KeepAliveRPS))
			cl = append(cl, fmtRatio(r.CloseConnRate))
			bu = append(bu, fmtRatio(r.BulkGbps))
		}
		fmt.Fprintf(w, "\nper-round fsstack/kernel: keep-alive requests/s %s; close connections/s %s",
			strings.Join(ka, " "), strings.Join(cl, " "))
		if rep.BulkSkipped == "" {
			fmt.Fprintf(w, "; bulk Gbit/s %s", strings.Join(bu, " "))
		}
		fmt.Fprintln(w)
	}
	if f.Close != nil && len(f.Close.Shards) > 0 {
		fmt.Fprintf(w, "\nfsstack shard spread, close phase incl. warm-up (connections accepted per shard): %s\n", Spread(f.Close.Shards))
	}
	if f.KeepAlive != nil && len(f.KeepAlive.Shards) > 0 {
		fmt.Fprintf(w, "fsstack shard spread, keep-alive phase incl. warm-up (packets received per shard): %s\n", SpreadRx(f.KeepAlive.Shards))
	}
	for _, p := range []*Phase{f.KeepAlive, f.Close, f.Bulk} {
		if p != nil && len(p.Shards) > 0 {
			fmt.Fprintf(w, "fsstack %s phase: %s\n", p.Mode, Handoffs(p.Shards))
		}
	}
	for _, s := range []StackRun{k, f} {
		for _, p := range []*Phase{s.KeepAlive, s.Close, s.Bulk} {
			if p != nil && p.Error != "" {
				fmt.Fprintf(w, "\n%s %s phase failed: %s\n", s.Stack, p.Mode, p.Error)
			} else if p != nil && p.Result != nil && p.Result.FirstError != "" {
				fmt.Fprintf(w, "\n%s %s: %d errors, first: %s\n", s.Stack, p.Mode, p.Result.Errors, p.Result.FirstError)
			}
		}
		if s.Error != "" {
			fmt.Fprintf(w, "\n%s: FAILED: %s\n", s.Stack, s.Error)
		}
	}
	if rep.CPUProfile != "" {
		fmt.Fprintf(w, "\nfsstack server CPU profile: %s (go tool pprof -top %s)\n", rep.CPUProfile, rep.CPUProfile)
	}
	if rep.Kept {
		fmt.Fprintf(w, "\nkept namespaces: %s (remove with 'ip netns del NAME')\n", strings.Join(rep.Namespaces, " "))
	}
}

// notRun is the table's cell for a bulk figure that is missing: "n/a"
// where the phase does not apply, else "-".
func notRun(rep *Report) string {
	if rep.BulkSkipped != "" {
		return "n/a"
	}
	return "-"
}

// fmtBytes formats a size in binary units: 1048576 -> "1 MiB".
func fmtBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// Spread formats per-shard accepted connections as counts and shares.
func Spread(shards []stack.ShardStats) string {
	return spread(shards, func(s stack.ShardStats) uint64 { return s.Accepted })
}

// SpreadRx formats per-shard received packets as counts and shares.
func SpreadRx(shards []stack.ShardStats) string {
	return spread(shards, func(s stack.ShardStats) uint64 { return s.RxPackets })
}

func spread(shards []stack.ShardStats, val func(stack.ShardStats) uint64) string {
	var total, maxv uint64
	for _, s := range shards {
		total += val(s)
		maxv = max(maxv, val(s))
	}
	var parts []string
	for _, s := range shards {
		share := 0.0
		if total > 0 {
			share = 100 * float64(val(s)) / float64(total)
		}
		parts = append(parts, fmt.Sprintf("%d:%s (%.0f%%)", s.Shard, thousands(float64(val(s))), share))
	}
	out := strings.Join(parts, "  ")
	if total > 0 && len(shards) > 0 {
		mean := float64(total) / float64(len(shards))
		out += fmt.Sprintf("  max/mean %.2f", float64(maxv)/mean)
	}
	return out
}

// SummaryLines returns one line per figure with the fsstack/kernel ratio,
// for logs and CI.
func (rep *Report) SummaryLines() []string {
	var out []string
	addf := func(name string, k, f *Phase, get func(*Phase) float64, format func(float64) string, unit string, r float64) {
		kv, fv := "-", "-"
		if ok(k) {
			kv = format(get(k))
		}
		if ok(f) {
			fv = format(get(f))
		}
		out = append(out, fmt.Sprintf("%s: kernel %s %s, fsstack %s %s, fsstack/kernel %s", name, kv, unit, fv, unit, fmtRatio(r)))
	}
	add := func(name string, k, f *Phase, get func(*Phase) float64, unit string, r float64) {
		addf(name, k, f, get, thousands, unit, r)
	}
	k, f := rep.Kernel, rep.FSStack
	add("keep-alive", k.KeepAlive, f.KeepAlive, func(p *Phase) float64 { return p.Result.RPS }, "req/s", rep.Ratios.KeepAliveRPS)
	add("keep-alive p99", k.KeepAlive, f.KeepAlive, func(p *Phase) float64 { return float64(p.Result.P99.Microseconds()) }, "µs", rep.Ratios.KeepAliveP99)
	add("close", k.Close, f.Close, func(p *Phase) float64 { return p.Result.ConnRate }, "conn/s", rep.Ratios.CloseConnRate)
	add("close p99", k.Close, f.Close, func(p *Phase) float64 { return float64(p.Result.P99.Microseconds()) }, "µs", rep.Ratios.CloseP99)
	if k.Bulk != nil || f.Bulk != nil {
		gbps := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
		addf("bulk", k.Bulk, f.Bulk, func(p *Phase) float64 { return p.Result.Gbps }, gbps, "Gbit/s", rep.Ratios.BulkGbps)
		add("bulk p99", k.Bulk, f.Bulk, func(p *Phase) float64 { return float64(p.Result.P99.Microseconds()) }, "µs", rep.Ratios.BulkP99)
	}
	for _, ph := range [][2]*Phase{{k.KeepAlive, f.KeepAlive}, {k.Close, f.Close}} {
		for _, t := range testNames(ph[0], ph[1]) {
			get := func(p *Phase) float64 {
				for _, x := range p.Result.Tests {
					if x.Name == t {
						return x.RPS
					}
				}
				return 0
			}
			mode := loadgen.KeepAlive
			if ph[0] != nil {
				mode = ph[0].Mode
			} else if ph[1] != nil {
				mode = ph[1].Mode
			}
			label := t + " (keep-alive)"
			if mode == loadgen.Close {
				label = t + " (new connection per request)"
			}
			add(label, ph[0], ph[1], get, "ops/s", rep.TestRatios[TestKey(mode, t)])
		}
	}
	cpu := func(p *Phase) float64 { return p.ServerCPUPerReq }
	if ok(k.KeepAlive) && ok(f.KeepAlive) && cpu(k.KeepAlive) > 0 && cpu(f.KeepAlive) > 0 {
		add("keep-alive server CPU", k.KeepAlive, f.KeepAlive, cpu, "µs/req", ratio(cpu(f.KeepAlive), cpu(k.KeepAlive)))
	}
	if ok(k.Close) && ok(f.Close) && cpu(k.Close) > 0 && cpu(f.Close) > 0 {
		add("close server CPU", k.Close, f.Close, cpu, "µs/req", ratio(cpu(f.Close), cpu(k.Close)))
	}
	if ok(k.Bulk) && ok(f.Bulk) && rep.Ratios.BulkCPUPerMiB > 0 {
		add("bulk server CPU", k.Bulk, f.Bulk, func(p *Phase) float64 { return p.ServerCPUPerMiB }, "µs/MiB", rep.Ratios.BulkCPUPerMiB)
	}
	if n := len(rep.Rounds); n > 1 {
		for i := range out {
			out[i] += fmt.Sprintf(" (median of %d rounds)", n)
		}
	}
	if rep.BulkSkipped != "" {
		out = append(out, "bulk: n/a: "+rep.BulkSkipped)
	}
	if f.IdleCPU > 0 {
		out = append(out, fmt.Sprintf("idle: the process running fsstack used %.3f%% of one core while idle (aim: under 1%%)", f.IdleCPU))
	}
	return out
}

// testNames lists the tests of either phase's result, in order.
func testNames(a, b *Phase) []string {
	var names []string
	for _, p := range []*Phase{a, b} {
		if !ok(p) {
			continue
		}
		for _, t := range p.Result.Tests {
			if !slices.Contains(names, t.Name) {
				names = append(names, t.Name)
			}
		}
	}
	return names
}

// Handoffs summarizes segments passed between shards (a segment that
// arrived on another shard's queue) against the packets received.
func Handoffs(shards []stack.ShardStats) string {
	var rx, ho, drops uint64
	for _, s := range shards {
		rx += s.RxPackets
		ho += s.Handoffs
		drops += s.RxDropped + s.TxDropped
	}
	share := 0.0
	if rx > 0 {
		share = 100 * float64(ho) / float64(rx)
	}
	return fmt.Sprintf("%s of %s received packets handed to another shard (%.1f%%), %s dropped",
		thousands(float64(ho)), thousands(float64(rx)), share, thousands(float64(drops)))
}
