package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/internal/gostats"
	"github.com/fsstack/fsstack/internal/loadgen"
	"github.com/fsstack/fsstack/internal/netlab"
	"github.com/fsstack/fsstack/stack"
)

// runner holds the live state of one Run.
type runner struct {
	opts  Options
	log   *slog.Logger
	lab   *netlab.Lab
	round string // " 2/3" in progress labels when there are several rounds

	mu       sync.Mutex
	children map[*exec.Cmd]*child
}

func (r *runner) progressf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.opts.ProgressTTY {
		fmt.Fprintf(r.opts.Progress, "\r\033[K%s", msg)
	} else {
		fmt.Fprintln(r.opts.Progress, msg)
	}
}

// progressDone ends a \r-updated line.
func (r *runner) progressDone() {
	if r.opts.ProgressTTY {
		fmt.Fprint(r.opts.Progress, "\r\033[K")
	}
}

// tuneClient lets the client namespace open many short connections: the
// whole unprivileged port range and TIME_WAIT reuse for outgoing
// connections (only the client's own namespace is changed).
//
// /proc/sys/net follows the network namespace of the thread that opens
// it, so the writes run inside netlab.Do.
func (r *runner) tuneClient(ctx context.Context) error {
	settings := []struct{ path, value string }{
		{"/proc/sys/net/ipv4/ip_local_port_range", "1024 65000"},
		{"/proc/sys/net/ipv4/tcp_tw_reuse", "1"},
	}
	return netlab.Do(r.lab.ClientNS, func() error {
		for _, s := range settings {
			if err := os.WriteFile(s.path, []byte(s.value+"\n"), 0o644); err != nil {
				return fmt.Errorf("tune client namespace: %w", err)
			}
		}
		return nil
	})
}

// child is a running child process with its event stream.
type child struct {
	cmd    *exec.Cmd
	events chan Event
	stderr *tailBuffer
	done   chan struct{} // closed when the process has exited and been waited for
	err    error         // exit status, valid after done
}

func (r *runner) start(ctx context.Context, ns string, args ...string) (*child, error) {
	return r.startCmd(ns, r.opts.Exe, args...)
}

// startCmd starts name with args in the network namespace ns as a child
// that dies with the lab (SIGKILL on the parent's death), reading JSON
// events from its stdout and keeping the tail of its stderr.
func (r *runner) startCmd(ns, name string, args ...string) (*child, error) {
	// Pin the side's processes if asked (taskset execs, so the pid stays).
	cpus := r.opts.ClientCPUs
	if ns == r.lab.ServerNS {
		cpus = r.opts.ServerCPUs
	}
	if cpus != "" {
		args = append([]string{"-c", cpus, name}, args...)
		name = "taskset"
	}
	cmd := r.lab.Cmd(ns, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, events: make(chan Event, 64), stderr: newTailBuffer(30), done: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("child stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s in %s: %w", filepath.Base(name), strings.Join(args, " "), ns, err)
	}
	r.mu.Lock()
	if r.children == nil {
		r.children = map[*exec.Cmd]*child{}
	}
	r.children[cmd] = c
	r.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var ev Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				r.log.Debug("lab child wrote a non-event line", "line", sc.Text())
				continue
			}
			select {
			case c.events <- ev:
			default:
				// Nobody is reading (64 events behind): drop rather
				// than block, so the child can always be reaped.
				r.log.Debug("lab child event dropped", "event", ev.Event)
			}
		}
		close(c.events)
		c.err = cmd.Wait()
		r.mu.Lock()
		delete(r.children, cmd)
		r.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// stop asks a child to finish (SIGTERM) and kills it after a grace period.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// exitDetail describes how a child ended, with the tail of its stderr.
func (c *child) exitDetail() string {
	<-c.done
	msg := "exited"
	if c.err != nil {
		msg = c.err.Error()
	}
	if t := c.stderr.String(); t != "" {
		msg += "; its last log lines:\n" + indent(t)
	}
	return msg
}

// killAll kills every child still running and waits (a little) until
// they are reaped, so that the lab's namespaces and files can go.
func (r *runner) killAll() {
	r.mu.Lock()
	var kids []*child
	for _, c := range r.children {
		kids = append(kids, c)
	}
	r.mu.Unlock()
	for _, c := range kids {
		c.cmd.Process.Kill()
	}
	timeout := time.After(5 * time.Second)
	for _, c := range kids {
		select {
		case <-c.done:
		case <-timeout:
			r.log.Warn("lab: a child process did not exit after SIGKILL", "pid", c.cmd.Process.Pid)
			return
		}
	}
}

// server is a running server under measurement.
type server struct {
	died     <-chan struct{} // closed when it exits
	stop     func()          // stops it (and everything it needs)
	detail   func() string   // how it exited, with its last log lines
	queues   int             // fsstack shards, if it says
	stackPID int             // the process running fsstack's shards (0: none, the kernel's stack)
}

// starter starts a server and returns once it accepts connections.
type starter func(ctx context.Context) (*server, error)

// goServer starts the built-in Go server (lab-serve) with args.
func (r *runner) goServer(name string, args []string) starter {
	return func(ctx context.Context) (*server, error) {
		srv, err := r.start(ctx, r.lab.ServerNS, append([]string{"lab-serve"}, args...)...)
		if err != nil {
			return nil, err
		}
		ready := time.NewTimer(30 * time.Second)
		defer ready.Stop()
		var queues int
		select {
		case ev, ok := <-srv.events:
			switch {
			case !ok:
				err = fmt.Errorf("%s server exited before it was ready: %s", name, srv.exitDetail())
			case ev.Event == "error":
				err = fmt.Errorf("%s server: %s", name, ev.Error)
			case ev.Event != "ready":
				err = fmt.Errorf("%s server: unexpected event %q", name, ev.Event)
			}
			queues = ev.Queues
		case <-ready.C:
			err = fmt.Errorf("%s server not ready after 30s", name)
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			srv.stop(5 * time.Second)
			return nil, err
		}
		// Drain later events; notice when it dies.
		died := make(chan struct{})
		go func() {
			for range srv.events {
			}
			<-srv.done
			close(died)
		}()
		pid := 0
		if queues > 0 && srv.cmd.Process != nil {
			pid = srv.cmd.Process.Pid // lab-serve --stack fsstack runs the shards in-process
		}
		return &server{died: died, stop: func() { srv.stop(5 * time.Second) }, detail: srv.exitDetail, queues: queues, stackPID: pid}, nil
	}
}

// tcpLoss reads the kernel's retransmission counters of the client's
// namespace and, for the kernel's own server (no fsstack control socket
// ctl), of the server's; fsstack's come from its shards instead.
func (r *runner) tcpLoss(ctl string) (TCPLoss, error) {
	var l TCPLoss
	var err error
	l.ClientRetrans, l.ClientTimeouts, err = tcpLoss(r.lab, r.lab.ClientNS)
	if err != nil || ctl != "" {
		return l, err
	}
	l.ServerRetrans, l.ServerTimeouts, err = tcpLoss(r.lab, r.lab.ServerNS)
	return l, err
}

// measure starts a server, runs the keep-alive, close and bulk phases
// against it (bulk not for ServerRedis: Report.BulkSkipped), and stops
// it. ctl, if set, is the fsstack control socket for per-shard counters.
func (r *runner) measure(ctx context.Context, sr *StackRun, start starter, ctl string) error {
	r.progressf("[%s%s] starting server", sr.Stack, r.round)
	srv, err := start(ctx)
	if err != nil {
		return err
	}
	defer srv.stop()
	if srv.queues > 0 {
		sr.Queues = srv.queues
	}
	died := srv.died
	if srv.stackPID > 0 {
		r.progressf("[%s%s] measuring idle CPU for %v", sr.Stack, r.round, idleWindow)
		if pct, err := idleCPU(ctx, srv.stackPID, idleWindow); err == nil {
			sr.IdleCPU = pct
		} else if ctx.Err() != nil {
			return ctx.Err()
		} else {
			r.log.Warn("lab: idle CPU", "err", err)
		}
	}

	modes := []loadgen.Mode{loadgen.KeepAlive, loadgen.Close, loadgen.Bulk}
	if r.opts.Server == ServerRedis {
		modes = modes[:2]
	}
	for _, mode := range modes {
		if !r.opts.runs(mode) {
			continue
		}
		ph := &Phase{Mode: mode}
		switch mode {
		case loadgen.KeepAlive:
			sr.KeepAlive = ph
		case loadgen.Close:
			sr.Close = ph
		default:
			sr.Bulk = ph
		}
		before, rt0 := r.shardStats(ctx, ctl)
		loss0, lossErr := r.tcpLoss(ctl)
		cpu0, sw0, cpuErr := nsCPU(r.lab.ServerNS)
		mcpu0, mcpuErr := machineCPU()
		msw0, mswErr := machineSwitches()
		t0 := time.Now()
		res, err := r.load(ctx, sr.Stack, sr.Addr, mode, died)
		if msw1, err1 := machineSwitches(); mswErr == nil && err1 == nil && res != nil && res.RPS > 0 {
			ph.MachineSwitchesPerReq = float64(msw1-msw0) / time.Since(t0).Seconds() / res.RPS
		}
		if mcpu1, err1 := machineCPU(); mcpuErr == nil && err1 == nil && res != nil && res.RPS > 0 {
			cores := (mcpu1 - mcpu0).Seconds() / time.Since(t0).Seconds()
			ph.MachineCPUPerReq = cores / res.RPS * 1e6
			if mode == loadgen.Bulk && res.Gbps > 0 {
				ph.MachineCPUPerMiB = cores / (res.Gbps * 1e9 / 8 / (1 << 20)) * 1e6
			}
		}
		if cpu1, sw1, err1 := nsCPU(r.lab.ServerNS); cpuErr == nil && err1 == nil && res != nil && res.RPS > 0 {
			ph.ServerCores = (cpu1 - cpu0).Seconds() / time.Since(t0).Seconds()
			ph.ServerSwitchesPerReq = float64(sw1-sw0) / time.Since(t0).Seconds() / res.RPS
			ph.ServerCPUPerReq = ph.ServerCores / res.RPS * 1e6
			if mode == loadgen.Bulk && res.Gbps > 0 {
				mibPerSec := res.Gbps * 1e9 / 8 / (1 << 20)
				ph.ServerCPUPerMiB = ph.ServerCores / mibPerSec * 1e6
			}
		}
		if err != nil {
			ph.Error = err.Error()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case <-died:
				return fmt.Errorf("%s server died during the %s phase: %s", sr.Stack, mode, srv.detail())
			default:
			}
			continue
		}
		ph.Result = res
		if ctl != "" {
			after, rt1 := r.shardStats(ctx, ctl)
			ph.Shards = diffShards(before, after)
			if rt0 != nil && rt1 != nil && res.RPS > 0 {
				// Per request over the same window as the CPU figures.
				reqs := res.RPS * time.Since(t0).Seconds()
				ph.GC = &GCCost{
					CPUPerReq:     (rt1.GCCPUSeconds - rt0.GCCPUSeconds) / reqs * 1e6,
					AllocPerReq:   float64(rt1.AllocBytes-rt0.AllocBytes) / reqs,
					Cycles:        rt1.GCCycles - rt0.GCCycles,
					HeapLiveBytes: rt1.HeapLiveBytes,
				}
			}
		}
		loss1, err1 := r.tcpLoss(ctl)
		if err := errors.Join(lossErr, err1); err != nil {
			r.log.Warn("lab: TCP retransmission counters", "err", err)
		} else {
			ph.Loss = &TCPLoss{ClientRetrans: loss1.ClientRetrans - loss0.ClientRetrans, ClientTimeouts: loss1.ClientTimeouts - loss0.ClientTimeouts,
				ServerRetrans: loss1.ServerRetrans - loss0.ServerRetrans, ServerTimeouts: loss1.ServerTimeouts - loss0.ServerTimeouts}
			if ctl != "" {
				// fsstack's connections are its shards', not the kernel's.
				for _, sh := range ph.Shards {
					ph.Loss.ServerRetrans += int64(sh.Retransmits)
					ph.Loss.ServerTimeouts += int64(sh.Timeouts)
				}
			}
		}
		if res.Requests == 0 {
			ph.Error = fmt.Sprintf("no request succeeded in %v: %d errors, %d in flight at the end",
				res.Duration.Round(time.Millisecond), res.Errors, res.Late)
			if res.FirstError != "" {
				ph.Error += " (first error: " + res.FirstError + ")"
			}
		}
	}
	// A phase without numbers fails the server: a report must never
	// show a ratio for one figure while the other quietly failed.
	var failed []string
	for _, p := range []*Phase{sr.KeepAlive, sr.Close, sr.Bulk} {
		if p != nil && p.Error != "" {
			failed = append(failed, fmt.Sprintf("%s phase: %s", p.Mode, p.Error))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s server: %s", sr.Stack, strings.Join(failed, "; "))
	}
	return nil
}

// load runs one lab-load child in the client namespace and relays its
// progress. The bulk phase fetches BulkPath on BulkConns connections.
func (r *runner) load(ctx context.Context, name, addr string, mode loadgen.Mode, serverDied <-chan struct{}) (*loadgen.Result, error) {
	conns, path, want := r.opts.Conns, "/", 0
	if mode == loadgen.Bulk {
		conns, path, want = r.opts.BulkConns, BulkPath, BulkSize
	}
	ld, err := r.start(ctx, r.lab.ClientNS, "lab-load", "--addr", addr, "--mode", string(mode),
		"--conns", strconv.Itoa(conns), "--duration", r.opts.Duration.String(), "--warmup", r.opts.Warmup.String(),
		"--tool", r.opts.Loader, "--path", path, "--want-body", strconv.Itoa(want))
	if err != nil {
		return nil, err
	}
	defer ld.stop(2 * time.Second)
	total := r.opts.Warmup + r.opts.Duration
	label := fmt.Sprintf("[%s %s%s]", name, mode, r.round)
	r.progressf("%s starting %d connections for %v", label, conns, total)
	// The load generator bounds itself (duration, per-request timeouts);
	// this watchdog only catches a child that hangs anyway.
	watchdog := time.NewTimer(total + 30*time.Second)
	defer watchdog.Stop()
	for {
		select {
		case <-watchdog.C:
			r.progressDone()
			return nil, fmt.Errorf("load generator gave no result %v after its run should have ended; killed it", 30*time.Second)
		case ev, more := <-ld.events:
			if !more {
				r.progressDone()
				return nil, fmt.Errorf("load generator ended without a result: %s", ld.exitDetail())
			}
			switch ev.Event {
			case "progress":
				p := ev.Progress
				state := "measuring"
				if p.Warmup {
					state = "warming up"
				}
				if mode == loadgen.Bulk {
					r.progressf("%s %4.1fs/%v %s: %.2f Gbit/s, %d errors", label, p.Elapsed.Seconds(), total, state, p.Gbps, p.Errors)
				} else {
					r.progressf("%s %4.1fs/%v %s: %s req/s, %d errors", label, p.Elapsed.Seconds(), total, state, thousands(p.Rate), p.Errors)
				}
			case "result":
				r.progressDone()
				r.progressf("%s done: %s", label, ev.Result.Describe())
				return ev.Result, nil
			case "error":
				r.progressDone()
				return nil, fmt.Errorf("load generator: %s", ev.Error)
			}
		case <-serverDied:
			r.progressDone()
			return nil, errors.New("server exited during the run")
		case <-ctx.Done():
			r.progressDone()
			return nil, ctx.Err()
		}
	}
}

// shardStats asks fsstack (the daemon or the lab's Go server) at ctl for
// its shard counters and its Go runtime's collection counters (nil if it
// sends none).
func (r *runner) shardStats(ctx context.Context, ctl string) ([]stack.ShardStats, *gostats.Runtime) {
	if ctl == "" {
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var reply struct {
		Shards  []stack.ShardStats `json:"shards"`
		Runtime *gostats.Runtime   `json:"runtime"`
	}
	if err := control.Do(cctx, ctl, "stats", nil, &reply); err != nil {
		r.log.Warn("lab: fsstack shard stats", "err", err)
		return nil, nil
	}
	return reply.Shards, reply.Runtime
}

// diffShards returns after-before for the counters (uint64 fields) of
// each shard; gauges (signed fields such as Open) are taken from after.
func diffShards(before, after []stack.ShardStats) []stack.ShardStats {
	if after == nil {
		return nil
	}
	out := make([]stack.ShardStats, len(after))
	for i, a := range after {
		out[i] = a
		if i >= len(before) || before[i].Shard != a.Shard {
			continue
		}
		d, b := reflect.ValueOf(&out[i]).Elem(), reflect.ValueOf(before[i])
		for f := range d.NumField() {
			if fv := d.Field(f); fv.Kind() == reflect.Uint64 && fv.CanSet() {
				fv.SetUint(fv.Uint() - b.Field(f).Uint())
			}
		}
	}
	return out
}

// tailBuffer keeps the last n lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	n     int
	lines []string
	part  []byte
}

func newTailBuffer(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := strings.IndexByte(string(t.part), '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(t.part[:i]))
		t.part = t.part[i+1:]
		if len(t.lines) > t.n {
			t.lines = t.lines[len(t.lines)-t.n:]
		}
	}
	if len(t.part) > 4096 {
		t.part = t.part[:4096]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.part) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(t.part))
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// idleWindow is how long the lab watches an idle fsstack server's CPU.
const idleWindow = 2 * time.Second

// idleCPU returns the CPU time pid used during window, in percent of one
// core, while nothing loads it. It sums the nanosecond run times of all
// the process's threads (/proc/PID/task/*/schedstat), so a few wake-ups a
// second still show.
func idleCPU(ctx context.Context, pid int, window time.Duration) (float64, error) {
	read := func() (time.Duration, error) {
		dir := fmt.Sprintf("/proc/%d/task", pid)
		tasks, err := os.ReadDir(dir)
		if err != nil {
			return 0, err
		}
		var total time.Duration
		for _, t := range tasks {
			b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
			if err != nil {
				continue // the thread exited
			}
			f := strings.Fields(string(b))
			if len(f) == 0 {
				continue
			}
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s/%s/schedstat: %w", dir, t.Name(), err)
			}
			total += time.Duration(ns)
		}
		return total, nil
	}
	a, err := read()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(window):
	}
	b, err := read()
	if err != nil {
		return 0, err
	}
	return 100 * float64(max(b-a, 0)) / float64(time.Since(start)), nil
}
