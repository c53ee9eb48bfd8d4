package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

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
	// Server is the server measured: ServerGo (the default), ServerNginx
	// or ServerRedis.
	Server string
	// Loader is the load generator: LoaderBuiltin (the default) or
	// LoaderWrk; ServerRedis always uses LoaderRedis.
	Loader string
	// ShimLib is libfsstack.so for ServerNginx. If empty, libfsstack.so
	// next to Exe, then $FSSTACK_LIB.
	ShimLib string
	// Workers is nginx's worker_processes. If 0, one per CPU (of
	// ServerCPUs if set).
	Workers int
	// ServerCPUs and ClientCPUs, if set, pin the server side (servers,
	// fsstack) and the load generator to these CPUs (a taskset list such
	// as "0" or "0-1"), e.g. to compare one core with two.
	ServerCPUs, ClientCPUs string
	// Queues is the number of veth queues and fsstack shards. If 0, 4.
	Queues int
	// Conns is the number of concurrent load connections of the
	// keep-alive and close phases. If 0, 64.
	Conns int
	// BulkConns is the number of concurrent keep-alive connections of
	// the bulk phase, each fetching BulkSize-byte responses. If 0, 8: a
	// few streams, enough to fill the link on both stacks without the
	// phase turning into a test of 64 competing flows.
	BulkConns int
	// Duration is the measured time of each of the three phases
	// (keep-alive, close, bulk) of each server. If 0, 5s.
	Duration time.Duration
	// Warmup is the unmeasured load before each phase. If 0, 500ms;
	// negative: none.
	Warmup time.Duration
	// XDPMode is passed to fsstack ("", "native" or "generic").
	XDPMode string
	// CPUProfile, if set, is where the fsstack server writes a CPU profile
	// covering its phases (of the first round).
	CPUProfile string
	// Phases are the phases to run (ParsePhases), always in the order
	// keep-alive, close, bulk; nil runs all of them (bulk not for
	// ServerRedis). With CPUProfile, one phase gives a profile of that
	// load alone.
	Phases []loadgen.Mode
	// Rounds is how many times both servers are measured, alternating
	// which goes first; the report gives each figure's median. If 0, 1.
	Rounds int
	// Keep leaves the namespaces in place after the run (for inspection);
	// the servers are stopped all the same.
	Keep bool
	// Version is the fsstack version recorded in the report.
	Version string
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
	if o.BulkConns == 0 {
		o.BulkConns = DefaultBulkConns
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.Server == "" {
		o.Server = ServerGo
	}
	if o.Server != ServerGo && o.Server != ServerNginx && o.Server != ServerRedis {
		return o, fmt.Errorf("lab: unknown server %q (use %s, %s or %s)", o.Server, ServerGo, ServerNginx, ServerRedis)
	}
	if o.Loader == "" {
		o.Loader = LoaderBuiltin
	}
	if o.Server == ServerRedis {
		o.Loader = LoaderRedis // the HTTP load generators do not speak redis
	}
	if o.Loader != LoaderBuiltin && o.Loader != LoaderWrk && (o.Loader != LoaderRedis || o.Server != ServerRedis) {
		return o, fmt.Errorf("lab: unknown load generator %q (use %s or %s)", o.Loader, LoaderBuiltin, LoaderWrk)
	}
	for _, l := range []string{o.ServerCPUs, o.ClientCPUs} {
		if _, err := countCPUs(l); err != nil {
			return o, fmt.Errorf("lab: %w", err)
		}
	}
	for _, m := range o.Phases {
		switch {
		case m != loadgen.KeepAlive && m != loadgen.Close && m != loadgen.Bulk:
			return o, fmt.Errorf("lab: unknown phase %q (use keepalive, close or bulk)", m)
		case m == loadgen.Bulk && o.Server == ServerRedis:
			return o, fmt.Errorf("lab: redis-server has no bulk phase; choose among keepalive and close")
		}
	}
	if o.Workers == 0 {
		o.Workers = runtime.NumCPU()
		if n, _ := countCPUs(o.ServerCPUs); n > 0 {
			o.Workers = n
		}
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
	if o.Queues < 1 || o.Conns < 1 || o.BulkConns < 1 || o.Rounds < 1 || o.Duration < 0 {
		return o, fmt.Errorf("lab: queues, conns, bulk conns and rounds must be at least 1 (got %d, %d, %d, %d)", o.Queues, o.Conns, o.BulkConns, o.Rounds)
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
	// ServerCores is the CPU the server side (every process in the
	// server namespace: the server and, for fsstack, its daemon) used
	// over the phase (warm-up included), in cores; ServerCPUPerReq is
	// that divided by the measured rate, in µs per request. The kernel's
	// own network work is counted where the kernel counts it (mostly in
	// whichever process runs when it happens), so compare with care.
	ServerCores     float64 `json:"server_cores,omitempty"`
	ServerCPUPerReq float64 `json:"server_cpu_us_per_req,omitempty"`
	// ServerCPUPerMiB is ServerCores divided by the body bytes read per
	// second, in µs per MiB (1 MiB = 2^20 bytes); bulk phase only.
	ServerCPUPerMiB float64 `json:"server_cpu_us_per_mib,omitempty"`
	// MachineCPUPerReq and MachineCPUPerMiB are the same for the whole
	// machine's busy time (both sides, the load generator and the
	// kernel's softirq work included; see machineCPU): the fair figure
	// of what a request costs, on a machine that runs nothing else.
	MachineCPUPerReq float64 `json:"machine_cpu_us_per_req,omitempty"`
	MachineCPUPerMiB float64 `json:"machine_cpu_us_per_mib,omitempty"`
	// ServerSwitchesPerReq is how many times per request the server
	// side's threads were switched in (schedstat: each wake-up or
	// preemption a context switch), MachineSwitchesPerReq the same for
	// the whole machine (/proc/stat ctxt). Wake-ups between the server,
	// its daemon and the stack are what a request costs beyond its
	// instructions; unlike CPU time these counts barely move between
	// runs.
	ServerSwitchesPerReq  float64 `json:"server_switches_per_req,omitempty"`
	MachineSwitchesPerReq float64 `json:"machine_switches_per_req,omitempty"`
	// Loss is what both sides retransmitted over the phase (warm-up
	// included); nil when the counters could not be read.
	Loss *TCPLoss `json:"loss,omitempty"`
	// GC is what fsstack's Go process (the daemon, or the Go server with
	// the stack embedded) spent on garbage collection over the phase;
	// nil for the kernel's run.
	GC *GCCost `json:"gc,omitempty"`
}

// GCCost is a Go process's garbage collection over a phase (warm-up
// included), per request as the CPU figures are. CPUPerReq is the Go
// runtime's own estimate of its collector's CPU (runtime/metrics; an
// overestimate, comparable between runs rather than with the kernel's CPU
// accounting); AllocPerReq the heap bytes allocated, which is what the
// collector's work grows with.
type GCCost struct {
	CPUPerReq     float64 `json:"cpu_us_per_req"`
	AllocPerReq   float64 `json:"alloc_bytes_per_req"`
	Cycles        uint64  `json:"cycles"`
	HeapLiveBytes uint64  `json:"heap_live_bytes"` // after the phase's last collection
}

// TCPLoss counts retransmissions over a phase: segments sent again, and
// retransmission timeouts (each one a connection that waited at least
// 200 ms: a frame lost somewhere, or its ACK). The client's figures are
// its kernel's; the server's are the kernel's for the kernel's run and
// fsstack's shards' for fsstack's. On veth nothing is lost on the wire,
// so any timeout is a frame some stack dropped.
type TCPLoss struct {
	ClientRetrans  int64 `json:"client_retransmits"`
	ClientTimeouts int64 `json:"client_rto_timeouts"`
	ServerRetrans  int64 `json:"server_retransmits"`
	ServerTimeouts int64 `json:"server_rto_timeouts"`
}

// StackRun is what one server did.
type StackRun struct {
	Stack  string `json:"stack"` // "kernel" or "fsstack"
	Addr   string `json:"addr"`
	Queues int    `json:"queues,omitempty"`
	// Error is set when the server could not start or failed; the phases
	// that ran before it are still reported.
	Error string `json:"error,omitempty"`
	// IdleCPU is the CPU the process running fsstack used while idle,
	// in percent of one core (0 for the kernel's stack).
	IdleCPU   float64 `json:"idle_cpu_pct,omitempty"`
	KeepAlive *Phase  `json:"keepalive,omitempty"`
	Close     *Phase  `json:"close,omitempty"`
	Bulk      *Phase  `json:"bulk,omitempty"` // nil where it does not apply (Report.BulkSkipped)
}

// Report is the outcome of a lab run.
type Report struct {
	Started    time.Time `json:"started"`
	Version    string    `json:"version,omitempty"`
	Server     string    `json:"server"` // "go" or "nginx"
	Loader     string    `json:"loader"` // "loadgen" or "wrk"
	ServerCPUs string    `json:"server_cpus,omitempty"`
	ClientCPUs string    `json:"client_cpus,omitempty"`
	Host       HostInfo  `json:"host"`
	Queues     int       `json:"queues"`
	Conns      int       `json:"conns"`
	BulkConns  int       `json:"bulk_conns,omitempty"`
	BulkBytes  int       `json:"bulk_response_bytes,omitempty"` // body of each bulk response (BulkSize)
	// BulkSkipped says why the bulk phase was not run (ServerRedis).
	BulkSkipped string   `json:"bulk_skipped,omitempty"`
	Duration    string   `json:"duration"` // of each phase
	Kernel      StackRun `json:"kernel"`
	FSStack     StackRun `json:"fsstack"`
	Ratios      Ratios   `json:"ratios"` // fsstack/kernel, measured in this run; 0 where either side is missing
	// TestRatios are fsstack/kernel for each test of a multi-test load
	// (redis-benchmark's set and get), by TestKey.
	TestRatios map[string]float64 `json:"test_ratios,omitempty"`
	CPUProfile string             `json:"cpu_profile,omitempty"`
	Rounds     []Round            `json:"rounds,omitempty"`     // each round, when more than one; Kernel and FSStack are their medians
	Namespaces []string           `json:"namespaces,omitempty"` // the lab's network namespaces
	Kept       bool               `json:"kept,omitempty"`       // Namespaces were left in place (Keep)
}

// Ratios are fsstack/kernel for each figure. The bulk figures are left
// out of JSON where the bulk phase did not run.
type Ratios struct {
	KeepAliveRPS  float64 `json:"keepalive_rps"`
	KeepAliveP50  float64 `json:"keepalive_p50"`
	KeepAliveP99  float64 `json:"keepalive_p99"`
	CloseConnRate float64 `json:"close_conn_rate"`
	CloseP50      float64 `json:"close_p50"`
	CloseP99      float64 `json:"close_p99"`
	BulkGbps      float64 `json:"bulk_gbit_s,omitempty"`      // body throughput
	BulkP99       float64 `json:"bulk_p99,omitempty"`         // time to read one whole response
	BulkCPUPerMiB float64 `json:"bulk_cpu_per_mib,omitempty"` // server CPU per MiB sent: below 1 is better
	// Machine CPU (both sides) per request, per connection and per MiB:
	// below 1 is better.
	KeepAliveMachineCPU float64 `json:"keepalive_machine_cpu,omitempty"`
	CloseMachineCPU     float64 `json:"close_machine_cpu,omitempty"`
	BulkMachineCPU      float64 `json:"bulk_machine_cpu,omitempty"`
}

// DefaultBulkConns is Options.BulkConns when 0.
const DefaultBulkConns = 8

// bulkNotApplicable is Report.BulkSkipped for ServerRedis.
const bulkNotApplicable = "redis-server: the bulk phase does not apply (it is a large HTTP response; redis-benchmark's tests here are 64-byte SET and GET)"

// TestKey names a test of a multi-test load in Ratios.Tests: the test
// ("set") with keep-alive connections, "newconn-" and the test with a new
// connection per request (the close phase).
func TestKey(mode loadgen.Mode, test string) string {
	if mode == loadgen.Close {
		return "newconn-" + test
	}
	return test
}

// HostInfo describes the machine, so results can be compared honestly.
type HostInfo struct {
	Kernel     string `json:"kernel"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Hostname   string `json:"hostname,omitempty"`
}

// ErrCleanup is wrapped by Run's error when the lab's namespaces could
// not all be removed (the message names what is left).
var ErrCleanup = errors.New("lab: remove the lab's namespaces (check 'ip netns list')")

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
		Started:    time.Now().UTC(),
		Version:    opts.Version,
		Server:     opts.Server,
		Loader:     opts.Loader,
		ServerCPUs: opts.ServerCPUs,
		ClientCPUs: opts.ClientCPUs,
		Host:       hostInfo(),
		Queues:     opts.Queues,
		Conns:      opts.Conns,
		BulkConns:  opts.BulkConns,
		BulkBytes:  BulkSize,
		Duration:   opts.Duration.String(),
		Kernel:     StackRun{Stack: "kernel"},
		FSStack:    StackRun{Stack: "fsstack", Queues: opts.Queues},
	}
	if opts.Server == ServerRedis {
		rep.BulkConns, rep.BulkBytes, rep.BulkSkipped = 0, 0, bulkNotApplicable
	}
	r := &runner{opts: opts, log: opts.Logger}

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
				err = errors.Join(err, fmt.Errorf("%w: %w", ErrCleanup, cerr))
			}
		}()
	}
	tmp, err := os.MkdirTemp("", "fsstack-lab-")
	if err != nil {
		return nil, fmt.Errorf("create lab temp dir: %w", err)
	}
	// Deferred last, so it runs first: no child may outlive the lab's
	// files and namespaces.
	defer func() {
		r.killAll()
		os.RemoveAll(tmp)
	}()
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

	kernelServer := r.goServer("kernel", kernelArgs)
	fsServer := func(profile string) starter {
		args := fsArgs
		if profile != "" {
			args = append(args[:len(args):len(args)], "--cpuprofile", profile)
		}
		return r.goServer("fsstack", args)
	}
	if opts.Server == ServerNginx || opts.Server == ServerRedis {
		program := r.nginxServer
		if opts.Server == ServerRedis {
			program = r.redisServer
		}
		kernelServer = program("kernel", filepath.Join(tmp, opts.Server+"-kernel"), kernelAddr, "", nil)
		fsServer = func(profile string) starter {
			args := []string{"--iface", l.ServerIf, "--queues", strconv.Itoa(opts.Queues), "--socket", ctl, "--log-level", "warn"}
			if opts.XDPMode != "" {
				args = append(args, "--xdp-mode", opts.XDPMode)
			}
			if profile != "" {
				args = append(args, "--cpuprofile", profile)
			}
			return program("fsstack", filepath.Join(tmp, opts.Server+"-fsstack"), fsAddr, ctl, args)
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
				if err := r.measure(ctx, &rd.Kernel, kernelServer, ""); err != nil {
					rd.Kernel.Error = err.Error()
				}
			} else {
				p := ""
				if i == 0 {
					p = profile
				}
				if ferr = r.measure(ctx, &rd.FSStack, fsServer(p), ctl); ferr != nil {
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
	rep.TestRatios = testRatios(rep)
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
// connections/s for close, Gbit/s for bulk), whole, so its latencies
// belong to it. Error is the first round's error, if any.
func medianRun(runs []StackRun) StackRun {
	if len(runs) == 1 {
		return runs[0]
	}
	out := runs[0]
	out.KeepAlive = medianPhase(runs, func(s StackRun) *Phase { return s.KeepAlive }, func(r *loadgen.Result) float64 { return r.RPS })
	out.Close = medianPhase(runs, func(s StackRun) *Phase { return s.Close }, func(r *loadgen.Result) float64 { return r.ConnRate })
	out.Bulk = medianPhase(runs, func(s StackRun) *Phase { return s.Bulk }, func(r *loadgen.Result) float64 { return r.Gbps })
	for _, r := range runs {
		if r.Error != "" {
			out.Error = r.Error
			break
		}
	}
	// The highest idle CPU of the rounds: the claim is an upper bound.
	for _, r := range runs {
		out.IdleCPU = max(out.IdleCPU, r.IdleCPU)
	}
	return out
}

// ParsePhases reads a comma-separated list of phases ("keepalive,close",
// "bulk"; "keep-alive" and "ka" name keep-alive too) for Options.Phases.
func ParsePhases(s string) ([]loadgen.Mode, error) {
	var out []loadgen.Mode
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		m, err := loadgen.ParseMode(f)
		if err != nil {
			return nil, fmt.Errorf("phase %q: use keepalive, close or bulk", f)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no phase in %q: use keepalive, close or bulk, comma-separated", s)
	}
	return out, nil
}

// runs reports whether the lab runs phase m.
func (o Options) runs(m loadgen.Mode) bool {
	return len(o.Phases) == 0 || slices.Contains(o.Phases, m)
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
		r.KeepAliveMachineCPU = ratio(f.KeepAlive.MachineCPUPerReq, k.KeepAlive.MachineCPUPerReq)
	}
	if ok(k.Close) && ok(f.Close) {
		kr, fr := k.Close.Result, f.Close.Result
		r.CloseConnRate = ratio(fr.ConnRate, kr.ConnRate)
		r.CloseP50 = ratio(float64(fr.P50), float64(kr.P50))
		r.CloseP99 = ratio(float64(fr.P99), float64(kr.P99))
		r.CloseMachineCPU = ratio(f.Close.MachineCPUPerReq, k.Close.MachineCPUPerReq)
	}
	if ok(k.Bulk) && ok(f.Bulk) {
		kr, fr := k.Bulk.Result, f.Bulk.Result
		r.BulkGbps = ratio(fr.Gbps, kr.Gbps)
		r.BulkP99 = ratio(float64(fr.P99), float64(kr.P99))
		r.BulkCPUPerMiB = ratio(f.Bulk.ServerCPUPerMiB, k.Bulk.ServerCPUPerMiB)
		r.BulkMachineCPU = ratio(f.Bulk.MachineCPUPerMiB, k.Bulk.MachineCPUPerMiB)
	}
	return r
}

// testRatios are fsstack/kernel for each test of a multi-test load
// (redis-benchmark), by TestKey; nil for single-test loads.
func testRatios(rep *Report) map[string]float64 {
	var out map[string]float64
	k, f := rep.Kernel, rep.FSStack
	for _, ph := range [][2]*Phase{{k.KeepAlive, f.KeepAlive}, {k.Close, f.Close}} {
		if !ok(ph[0]) || !ok(ph[1]) {
			continue
		}
		for _, kt := range ph[0].Result.Tests {
			for _, ft := range ph[1].Result.Tests {
				if ft.Name == kt.Name {
					if out == nil {
						out = map[string]float64{}
					}
					out[TestKey(ph[0].Mode, kt.Name)] = ratio(ft.RPS, kt.RPS)
				}
			}
		}
	}
	return out
}

func ok(p *Phase) bool { return p != nil && p.Result != nil && p.Error == "" }

func hostInfo() HostInfo {
	var u syscall.Utsname
	h := HostInfo{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version()}
	h.Hostname, _ = os.Hostname()
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

// countCPUs counts the CPUs in a taskset list ("0", "0-3", "0,2-3"); an
// empty list counts 0.
func countCPUs(list string) (int, error) {
	cpus, err := stack.ParseCPUList(list)
	if err != nil {
		return 0, errors.New(strings.TrimPrefix(err.Error(), "fsstack: "))
	}
	return len(cpus), nil
}
