package lab

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/internal/loadgen"
	"github.com/fsstack/fsstack/internal/netlab"
	"github.com/fsstack/fsstack/stack"
)

// Ports of the two servers in the server namespace.
const (
	FSStackPort = 80
	KernelPort  = 8080
)

// Options configures a lab run. Zero fields take the documented defaults.
type Options struct {
	// Exe is the fsstack binary whose hidden lab-serve and lab-load
	// subcommands run the children. If empty, os.Executable().
	Exe string
	// Queues is the number of veth queues and fsstack shards. If 0, 4.
	Queues int
	// Conns is the number of concurrent load connections. If 0, 64.
	Conns int
	// Duration is the measured time of each of the four phases. If 0, 5s.
	Duration time.Duration
	// Warmup is the unmeasured load before each phase. If 0, 500ms;
	// negative: none.
	Warmup time.Duration
	// XDPMode is passed to fsstack ("", "native" or "generic").
	XDPMode string
	// CPUProfile, if set, is where the fsstack server writes a CPU profile
	// covering its two phases.
	CPUProfile string
	// Rounds is how many times both servers are measured, alternating
	// which goes first; the report gives each figure's median. If 0, 1.
	Rounds int
	// Keep leaves the namespaces in place after the run (for inspection);
	// the servers are stopped all the same.
	Keep bool
	// Progress receives human progress lines ("\r"-updated when
	// ProgressTTY). If nil, io.Discard.
	Progress    io.Writer
	ProgressTTY bool
	// Logger receives debug details (child stderr). If nil, slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("find own executable for the lab's child processes: %w", err)
		}
		o.Exe = exe
	}
	if o.Queues == 0 {
		o.Queues = 4
	}
	if o.Conns == 0 {
		o.Conns = 64
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 500 * time.Millisecond
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Queues < 1 || o.Conns < 1 || o.Rounds < 1 || o.Duration < 0 {
		return o, fmt.Errorf("lab: queues, conns and rounds must be at least 1 (got %d, %d, %d)", o.Queues, o.Conns, o.Rounds)
	}
	return o, nil
}

// Phase is one load run against one server.
type Phase struct {
	Mode   loadgen.Mode    `json:"mode"`
	Result *loadgen.Result `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	// Shards is fsstack's per-shard counter increase over the phase.
	Shards []stack.ShardStats `json:"shards,omitempty"`
}

// StackRun is what one server did.
type StackRun struct {
	Stack  string `json:"stack"` // "kernel" or "fsstack"
	Addr   string `json:"addr"`
	Queues int    `json:"queues,omitempty"`
	// Error is set when the server could not start or failed; the phases
	// that ran before it are still reported.
	Error     string `json:"error,omitempty"`
	KeepAlive *Phase `json:"keepalive,omitempty"`
	Close     *Phase `json:"close,omitempty"`
}

// Report is the outcome of a lab run.
type Report struct {
	Started    time.Time `json:"started"`
	Host       HostInfo  `json:"host"`
	Queues     int       `json:"queues"`
	Conns      int       `json:"conns"`
	Duration   string    `json:"duration"`
	Kernel     StackRun  `json:"kernel"`
	FSStack    StackRun  `json:"fsstack"`
	Ratios     Ratios    `json:"ratios"` // fsstack/kernel, measured in this run; 0 where either side is missing
	CPUProfile string    `json:"cpu_profile,omitempty"`
	Rounds     []Round   `json:"rounds,omitempty"`     // each round, when more than one; Kernel and FSStack are their medians
	Namespaces []string  `json:"namespaces,omitempty"` // the lab's network namespaces
	Kept       bool      `json:"kept,omitempty"`       // Namespaces were left in place (Keep)
}

// Ratios are fsstack/kernel for each figure.
type Ratios struct {
	KeepAliveRPS  float64 `json:"keepalive_rps"`
	KeepAliveP50  float64 `json:"keepalive_p50"`
	KeepAliveP99  float64 `json:"keepalive_p99"`
	CloseConnRate float64 `json:"close_conn_rate"`
	CloseP50      float64 `json:"close_p50"`
	CloseP99      float64 `json:"close_p99"`
}

// HostInfo describes the machine, so results can be compared honestly.
type HostInfo struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
}

// ErrFSStackFailed is wrapped by Run's error when the fsstack side did not
// produce numbers; the Report still holds the kernel's.
var ErrFSStackFailed = errors.New("fsstack did not run")

// Run builds a netlab, measures the kernel server and then the fsstack
// server, removes everything and returns the report. When fsstack fails,
// Run returns the report with the kernel numbers and an error wrapping
// ErrFSStackFailed. Cancelling ctx stops the children and cleans up.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	rep = &Report{
		Started:  time.Now().UTC(),
		Host:     hostInfo(),
		Queues:   opts.Queues,
		Conns:    opts.Conns,
		Duration: opts.Duration.String(),
		Kernel:   StackRun{Stack: "kernel"},
		FSStack:  StackRun{Stack: "fsstack", Queues: opts.Queues},
	}
	r := &runner{opts: opts, log: opts.Logger}
	defer r.killAll()

	r.progressf("creating lab: two namespaces, veth with %d queues", opts.Queues)
	l, err := netlab.New(netlab.Options{Queues: opts.Queues, Name: "lab"})
	if err != nil {
		return nil, fmt.Errorf("create network lab (needs root): %w", err)
	}
	r.lab = l
	rep.Namespaces = []string{l.ServerNS, l.ClientNS}
	rep.Kept = opts.Keep
	if !opts.Keep {
		defer func() {
			if cerr := l.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("remove lab: %w", cerr))
			}
		}()
	}
	tmp, err := os.MkdirTemp("", "fsstack-lab-")
	if err != nil {
		return nil, fmt.Errorf("create lab temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := r.tuneClient(ctx); err != nil {
		return nil, err
	}

	kernelAddr := net.JoinHostPort(l.ServerAddr.String(), strconv.Itoa(KernelPort))
	kernelArgs := []string{"--stack", "kernel", "--listen", kernelAddr}
	fsAddr := net.JoinHostPort(l.ServerAddr.String(), strconv.Itoa(FSStackPort))
	ctl := filepath.Join(tmp, "fsstack.sock")
	fsArgs := []string{"--stack", "fsstack", "--iface", l.ServerIf, "--queues", strconv.Itoa(opts.Queues),
		"--listen", net.JoinHostPort("0.0.0.0", strconv.Itoa(FSStackPort)), "--control", ctl}
	if opts.XDPMode != "" {
		fsArgs = append(fsArgs, "--xdp-mode", opts.XDPMode)
	}
	var profile string
	if opts.CPUProfile != "" {
		if profile, err = filepath.Abs(opts.CPUProfile); err != nil {
			return rep, fmt.Errorf("CPU profile path: %w", err)
		}
	}

	// Rounds alternate the order (kernel first, then fsstack first, ...)
	// so that neither side always runs on a warmer or quieter machine.
	var ferr error
	for i := range opts.Rounds {
		rd := Round{
			Kernel:  StackRun{Stack: "kernel", Addr: kernelAddr},
			FSStack: StackRun{Stack: "fsstack", Addr: fsAddr, Queues: opts.Queues},
		}
		if opts.Rounds > 1 {
			r.round = fmt.Sprintf(" %d/%d", i+1, opts.Rounds)
		}
		order := []string{"kernel", "fsstack"}
		if i%2 == 1 {
			order = []string{"fsstack", "kernel"}
		}
		for _, which := range order {
			if which == "kernel" {
				if err := r.measure(ctx, &rd.Kernel, kernelArgs, ""); err != nil {
					rd.Kernel.Error = err.Error()
				}
			} else {
				args := fsArgs
				if profile != "" && i == 0 {
					args = append(args[:len(args):len(args)], "--cpuprofile", profile)
				}
				if ferr = r.measure(ctx, &rd.FSStack, args, ctl); ferr != nil {
					rd.FSStack.Error = ferr.Error()
				}
			}
			if ctx.Err() != nil {
				rep.Rounds = append(rep.Rounds, rd)
				return rep, ctx.Err()
			}
		}
		rep.Rounds = append(rep.Rounds, rd)
		if ferr != nil {
			break // fsstack does not start: more rounds would not help
		}
	}
	var kernels, fss []StackRun
	for _, rd := range rep.Rounds {
		kernels = append(kernels, rd.Kernel)
		fss = append(fss, rd.FSStack)
	}
	rep.Kernel, rep.FSStack = medianRun(kernels), medianRun(fss)
	if ferr == nil && profile != "" {
		rep.CPUProfile = profile
	}
	if len(rep.Rounds) == 1 {
		rep.Rounds = nil // the medians are the round
	}
	rep.Ratios = ratios(rep)
	switch {
	case ferr != nil:
		return rep, fmt.Errorf("%w: %v", ErrFSStackFailed, ferr)
	case rep.Kernel.Error != "":
		return rep, fmt.Errorf("kernel server: %s", rep.Kernel.Error)
	}
	return rep, nil
}

// Round is one measurement of both servers.
type Round struct {
	Kernel  StackRun `json:"kernel"`
	FSStack StackRun `json:"fsstack"`
}

// medianRun combines the runs of one server over several rounds: each
// phase is the round with the median figure (requests/s for keep-alive,
// connections/s for close), whole, so its latencies belong to it. Error
// is the first round's error, if any.
func medianRun(runs []StackRun) StackRun {
	if len(runs) == 1 {
		return runs[0]
	}
	out := runs[0]
	out.KeepAlive = medianPhase(runs, func(s StackRun) *Phase { return s.KeepAlive }, func(r *loadgen.Result) float64 { return r.RPS })
	out.Close = medianPhase(runs, func(s StackRun) *Phase { return s.Close }, func(r *loadgen.Result) float64 { return r.ConnRate })
	for _, r := range runs {
		if r.Error != "" {
			out.Error = r.Error
			break
		}
	}
	return out
}

func medianPhase(runs []StackRun, phase func(StackRun) *Phase, key func(*loadgen.Result) float64) *Phase {
	var good []*Phase
	var first *Phase
	for _, r := range runs {
		p := phase(r)
		if first == nil {
			first = p
		}
		if ok(p) {
			good = append(good, p)
		}
	}
	if len(good) == 0 {
		return first
	}
	slices.SortFunc(good, func(a, b *Phase) int { return cmp.Compare(key(a.Result), key(b.Result)) })
	return good[len(good)/2]
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

func ratios(rep *Report) Ratios {
	var r Ratios
	k, f := rep.Kernel, rep.FSStack
	if ok(k.KeepAlive) && ok(f.KeepAlive) {
		kr, fr := k.KeepAlive.Result, f.KeepAlive.Result
		r.KeepAliveRPS = ratio(fr.RPS, kr.RPS)
		r.KeepAliveP50 = ratio(float64(fr.P50), float64(kr.P50))
		r.KeepAliveP99 = ratio(float64(fr.P99), float64(kr.P99))
	}
	if ok(k.Close) && ok(f.Close) {
		kr, fr := k.Close.Result, f.Close.Result
		r.CloseConnRate = ratio(fr.ConnRate, kr.ConnRate)
		r.CloseP50 = ratio(float64(fr.P50), float64(kr.P50))
		r.CloseP99 = ratio(float64(fr.P99), float64(kr.P99))
	}
	return r
}

func ok(p *Phase) bool { return p != nil && p.Result != nil && p.Error == "" }

func hostInfo() HostInfo {
	var u syscall.Utsname
	h := HostInfo{CPUs: numCPU()}
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		h.Kernel = b.String()
	}
	return h
}

// runner holds the live state of one Run.
type runner struct {
	opts  Options
	log   *slog.Logger
	lab   *netlab.Lab
	round string // " 2/3" in progress labels when there are several rounds

	mu       sync.Mutex
	children map[*exec.Cmd]struct{}
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
	cmd := r.lab.Cmd(ns, r.opts.Exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, events: make(chan Event, 64), stderr: newTailBuffer(30), done: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("child stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s in %s: %w", filepath.Base(r.opts.Exe), args[0], ns, err)
	}
	r.mu.Lock()
	if r.children == nil {
		r.children = map[*exec.Cmd]struct{}{}
	}
	r.children[cmd] = struct{}{}
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
			c.events <- ev
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

func (r *runner) killAll() {
	r.mu.Lock()
	var cmds []*exec.Cmd
	for c := range r.children {
		cmds = append(cmds, c)
	}
	r.mu.Unlock()
	for _, c := range cmds {
		c.Process.Kill()
	}
}

// measure starts a server with args in the server namespace, runs the
// keep-alive and close phases against it, and stops it.
func (r *runner) measure(ctx context.Context, sr *StackRun, serveArgs []string, ctl string) error {
	r.progressf("[%s%s] starting server", sr.Stack, r.round)
	srv, err := r.start(ctx, r.lab.ServerNS, append([]string{"lab-serve"}, serveArgs...)...)
	if err != nil {
		return err
	}
	defer srv.stop(5 * time.Second)

	ready := time.NewTimer(30 * time.Second)
	defer ready.Stop()
	select {
	case ev, ok := <-srv.events:
		switch {
		case !ok:
			return fmt.Errorf("%s server exited before it was ready: %s", sr.Stack, srv.exitDetail())
		case ev.Event == "error":
			return fmt.Errorf("%s server: %s", sr.Stack, ev.Error)
		case ev.Event != "ready":
			return fmt.Errorf("%s server: unexpected event %q", sr.Stack, ev.Event)
		}
		if ev.Queues > 0 {
			sr.Queues = ev.Queues
		}
	case <-ready.C:
		return fmt.Errorf("%s server not ready after 30s", sr.Stack)
	case <-ctx.Done():
		return ctx.Err()
	}
	// Drain later server events; notice if it dies.
	died := make(chan struct{})
	go func() {
		for range srv.events {
		}
		close(died)
	}()

	for _, mode := range []loadgen.Mode{loadgen.KeepAlive, loadgen.Close} {
		ph := &Phase{Mode: mode}
		if mode == loadgen.KeepAlive {
			sr.KeepAlive = ph
		} else {
			sr.Close = ph
		}
		before := r.shardStats(ctx, ctl)
		res, err := r.load(ctx, sr.Stack, sr.Addr, mode, died)
		if err != nil {
			ph.Error = err.Error()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case <-died:
				return fmt.Errorf("%s server died during the %s phase: %s", sr.Stack, mode, srv.exitDetail())
			default:
			}
			continue
		}
		ph.Result = res
		if ctl != "" {
			ph.Shards = diffShards(before, r.shardStats(ctx, ctl))
		}
		if res.Requests == 0 {
			ph.Error = "no request succeeded"
			if res.FirstError != "" {
				ph.Error += " (first error: " + res.FirstError + ")"
			}
		}
	}
	if !ok(sr.KeepAlive) && !ok(sr.Close) {
		return fmt.Errorf("%s server answered no request: keep-alive: %s; close: %s", sr.Stack, sr.KeepAlive.Error, sr.Close.Error)
	}
	return nil
}

// load runs one lab-load child in the client namespace and relays its
// progress.
func (r *runner) load(ctx context.Context, name, addr string, mode loadgen.Mode, serverDied <-chan struct{}) (*loadgen.Result, error) {
	ld, err := r.start(ctx, r.lab.ClientNS, "lab-load", "--addr", addr, "--mode", string(mode),
		"--conns", strconv.Itoa(r.opts.Conns), "--duration", r.opts.Duration.String(), "--warmup", r.opts.Warmup.String())
	if err != nil {
		return nil, err
	}
	defer ld.stop(2 * time.Second)
	total := r.opts.Warmup + r.opts.Duration
	label := fmt.Sprintf("[%s %s%s]", name, mode, r.round)
	r.progressf("%s starting %d connections for %v", label, r.opts.Conns, total)
	for {
		select {
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
				r.progressf("%s %4.1fs/%v %s: %s req/s, %d errors", label, p.Elapsed.Seconds(), total, state, thousands(p.Rate), p.Errors)
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

func (r *runner) shardStats(ctx context.Context, ctl string) []stack.ShardStats {
	if ctl == "" {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var reply struct {
		Shards []stack.ShardStats `json:"shards"`
	}
	if err := control.Do(cctx, ctl, "stats", nil, &reply); err != nil {
		r.log.Warn("lab: fsstack shard stats", "err", err)
		return nil
	}
	return reply.Shards
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
