package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/internal/gostats"
	"github.com/fsstack/fsstack/internal/memrelief"
	"github.com/fsstack/fsstack/internal/metrics"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/stack"
)

// SocketMode is the permission of the control socket. It is world-writable
// because applications under LD_PRELOAD=libfsstack.so run as any user and
// must attach; ops that change state check the caller with SO_PEERCRED
// (control.RequireUID). The directory is 0755 and owned by root.
const SocketMode = 0o666

// daemonStack is what `up` needs from a stack; tests substitute a fake.
// It serves the shim's sockets too (daemon.Backend).
type daemonStack interface {
	daemon.Backend
	Queues() int
	Stats() []stack.ShardStats
	// Capture records the shards' frames (the "capture" op).
	Capture(stack.CaptureOptions) (*stack.Capture, error)
	Close() error
}

// newStack starts the stack; a variable so tests can replace it.
var newStack = func(cfg stack.Config) (daemonStack, error) {
	s, err := stack.New(cfg)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// upSignals are the signals that stop the daemon; a variable for tests.
var upSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM}

func parsePortRange(s string) (stack.PortRange, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return stack.PortRange{}, fmt.Errorf("%q is not a range like 61000-65499", s)
	}
	first, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	last, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err1 != nil || err2 != nil {
		return stack.PortRange{}, fmt.Errorf("%q is not a range of ports 1-65535 like 61000-65499", s)
	}
	r := stack.PortRange{First: uint16(first), Last: uint16(last)}
	if r.First == 0 || r.Last < r.First {
		return stack.PortRange{}, fmt.Errorf("port range %q is empty or starts at 0", s)
	}
	return r, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q (use debug, info, warn or error)", s)
	}
	return l, nil
}

// defaultGCPercent is the daemon's GOGC. At Go's default (100) the
// collector took 8 us of each connection in the nginx lab's close phase,
// at 200 it takes 4 (the heap may grow to three times what is live). The
// time-wait table (stack/timewait.go) keeps what is live small under a
// short-connection load (96 MiB after 5 s at 12,000 connections/s, where
// netstack's TIME_WAIT endpoints held about 250), so the heap stays below
// what it was at 100 before the table. A SYN flood's peak resident set
// grows from about 134 to 174 MiB and is given back as fast
// (TestNginxSYNFlood); at 400 it grew past 300 MiB. --gc-percent lets an
// operator make another trade.
const defaultGCPercent = 200

func runUp(e *env, args []string) int {
	fs := newFlags(e, "up", "--iface IFACE [flags]",
		`Run the fsstack daemon: attach the steering program to IFACE, start one shard per
queue and serve the control socket until SIGINT or SIGTERM.

The control socket's directory is created 0755; the socket is 0666 so that
applications under LD_PRELOAD=libfsstack.so can attach as any user (state-changing
ops check the caller with SO_PEERCRED). A socket left by a dead daemon is replaced;
if a daemon answers on it or holds its lock (PATH.lock), up refuses to start.

`+fastsocketHelp())
	iface := fs.String("iface", "", "network interface to serve (required; list with 'ip link')")
	queues := fs.Int("queues", 0, "number of shards, one per receive queue from queue 0 (0: one per CPU, capped by the device)")
	netns := fs.String("netns", "", "network namespace of the interface: a name under /var/run/netns or a path (default: the current one)")
	sock := fs.String("socket", control.DefaultSocketPath, "control socket path")
	eph := fs.String("ephemeral-ports", stack.DefaultEphemeralPorts.String(), "port range reserved for fsstack's own active opens")
	tw := fs.Duration("time-wait", stack.DefaultTimeWait, "TIME_WAIT duration of closed connections")
	xdpMode := fs.String("xdp-mode", "", "XDP attach mode: native or generic (default: native, falling back to generic)")
	offload := fs.String("offload", "gso,gro,csum", "offloads of the shards, comma-separated: gso (cut 64 KiB segments into frames), gro (merge a batch's segments of a flow), csum (leave TCP transmit checksums to the kernel or NIC through AF_XDP tx metadata, copy mode, Linux 6.11+), or none")
	cpuList := fs.String("cpus", "", "pin shard i's receive thread to the i-th CPU of this list (taskset form, e.g. 0-7 or 0,2,4,6; wraps around); empty: not pinned")
	gcPercent := fs.Int("gc-percent", defaultGCPercent, "the Go garbage collector's GOGC for the daemon: how far the heap may grow past what is live before a collection (higher: less CPU on collection, more memory under load; the daemon gives memory back when quiet)")
	delayedACK := fs.Duration("delayed-ack", stack.DefaultDelayedACK, "how long a pure ACK may wait for the application's answer to carry it (0: send every ACK at once)")
	metricsAddr := fs.String("metrics", "", "serve the per-shard and shim counters in the Prometheus text format on http://ADDR/metrics (host:port; empty: off)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	pprofOn := fs.Bool("pprof", false, "also serve Go's profiles (heap, goroutines, CPU) at http://ADDR/debug/pprof/ on the --metrics address; they show internals, so keep that address local")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the daemon to this file, from ready until it stops")
	maxConns := fs.Int("max-conns-per-uid", 512, "control socket connections one non-root uid may hold open (0: no cap)")
	maxClients := fs.Int("max-clients-per-uid", 256, "shim clients (processes) one non-root uid may have attached (0: no cap)")
	fastsocket := fs.String("fastsocket", "", `fastsocket.ko module parameters as given to modprobe, e.g. "enable_listen_spawn=2 enable_fast_epoll=1" (see above)`)
	if rc := parseFlags(e, fs, args); rc >= 0 {
		return rc
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "fsstack up: "+format+"\nRun 'fsstack up --help' for usage.\n", a...)
		return 2
	}
	if *iface == "" {
		return usageErr("--iface is required (list interfaces with 'ip link')")
	}
	if *maxConns < 0 || *maxClients < 0 {
		return usageErr("--max-conns-per-uid and --max-clients-per-uid must not be negative (0: no cap)")
	}
	if *pprofOn && *metricsAddr == "" {
		return usageErr("--pprof serves on the --metrics address; give --metrics 127.0.0.1:PORT too")
	}
	lvl, err := parseLevel(*logLevel)
	if err != nil {
		return usageErr("%v", err)
	}
	fsock, err := parseFastsocket(*fastsocket)
	if err != nil {
		return usageErr("--fastsocket: %v", err)
	}
	if fsock.LogLevel != nil && !flagGiven(fs, "log-level") {
		lvl = *fsock.LogLevel
	}
	ports, err := parsePortRange(*eph)
	if err != nil {
		return usageErr("--ephemeral-ports: %v", err)
	}
	switch *xdpMode {
	case "", "native", "generic":
	default:
		return usageErr("--xdp-mode %q: use native or generic", *xdpMode)
	}
	noGSO, noGRO, noCsum, err := parseOffload(*offload)
	if err != nil {
		return usageErr("--offload: %v", err)
	}
	if *gcPercent < 25 {
		return usageErr("--gc-percent %d: must be at least 25 (Go's default is 100)", *gcPercent)
	}
	if *delayedACK < 0 {
		return usageErr("--delayed-ack %v: must not be negative (0 turns it off)", *delayedACK)
	}
	dack := *delayedACK
	if dack == 0 {
		dack = -1 // stack.Config: negative is off, 0 the default
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl}))
	cpus, err := stack.ParseCPUList(*cpuList)
	if err != nil {
		return usageErr("--cpus: %s", strings.TrimPrefix(err.Error(), "fsstack: "))
	}
	cfg := stack.Config{
		CPUs:           cpus,
		Interface:      *iface,
		Queues:         *queues,
		NetNS:          *netns,
		EphemeralPorts: ports,
		StateDir:       filepath.Dir(*sock), // the original reserved ports, kept across a crash
		TimeWait:       *tw,
		XDPMode:        stack.XDPMode(*xdpMode),
		NoGSO:          noGSO,
		NoTxChecksum:   noCsum,
		NoGRO:          noGRO,
		DelayedACK:     dack,
		Logger:         log,
	}
	if err := cfg.Validate(); err != nil {
		return usageErr("%s", strings.TrimPrefix(err.Error(), "fsstack: "))
	}

	// The control socket first: a second daemon must be refused before
	// it touches the interface.
	ln, err := control.Listen(*sock, SocketMode)
	if err != nil {
		if errors.Is(err, control.ErrDaemonRunning) {
			errorLine(e, "up", fmt.Errorf("%w (see 'fsstack stats --socket %s')", err, *sock))
		} else {
			errorLine(e, "up", fmt.Errorf("%w (run as root, or pass --socket PATH in a writable directory)", err))
		}
		return 1
	}
	defer ln.Close()

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, upSignals...)
	defer signal.Stop(sigc)

	start := time.Now()
	st, err := newStack(cfg)
	if err != nil {
		where := *iface
		if *netns != "" {
			where += " in netns " + *netns
		}
		errorLine(e, "up", fmt.Errorf("start stack on %s: %w", where, err))
		return 1
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close stack", "err", err)
		}
	}()

	// The LD_PRELOAD shim attaches on the same socket (first byte not '{').
	shim, err := daemon.New(daemon.Options{Backend: st, Logger: log, Fastsocket: &fsock.Params, MaxClientsPerUID: *maxClients})
	if err != nil {
		errorLine(e, "up", fmt.Errorf("start shim service: %w", err))
		return 1
	}
	defer func() {
		if err := shim.Close(); err != nil {
			log.Error("close shim service", "err", err)
		}
	}()

	if *metricsAddr != "" {
		ms, err := metrics.Listen(*metricsAddr, metrics.Sources{Shards: st.Stats, Shim: shim.Stats, Profiles: *pprofOn}, log)
		if err != nil {
			errorLine(e, "up", fmt.Errorf("%w (give --metrics a free host:port, or leave it out)", err))
			return 1
		}
		defer ms.Close()
		log.Info("metrics served", "url", "http://"+ms.Addr().String()+"/metrics")
	}

	// After a flood or a connection storm, give the freed heap back to
	// the system once the daemon is quiet (internal/memrelief).
	reliefCtx, stopRelief := context.WithCancel(context.Background())
	defer stopRelief()
	debug.SetGCPercent(*gcPercent)
	go memrelief.Run(reliefCtx, memrelief.DefaultInterval, memrelief.DefaultThreshold, log)

	srv := control.NewServer(log)
	// A connection that never speaks is closed, and no user but root can
	// hold more than its share of the daemon's descriptors.
	srv.HelloTimeout = daemon.HelloTimeout
	srv.MaxConnsPerUID = *maxConns
	registerDaemonOps(srv, st, shim, cfg, start, *sock)
	srv.HandleStream("capture", serveCapture(st, cfg.Interface, log))
	srv.HandleOther(func(ctx context.Context, c net.Conn, first []byte) error {
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			return fmt.Errorf("shim attach on a %T, not a unix socket", c)
		}
		return shim.ServeConn(ctx, uc, first)
	})
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer srv.Close()

	if *cpuprofile != "" {
		stopProfile, err := startCPUProfile(*cpuprofile)
		if err != nil {
			errorLine(e, "up", err)
			return 1
		}
		defer stopProfile()
	}

	if *fastsocket != "" {
		log.Info("fastsocket parameters", "params", fsock.Params.String())
		for _, name := range fsock.Inert {
			log.Warn("fastsocket parameter has no effect on fsstack", "param", name)
		}
	}
	log.Info("daemon ready", "iface", *iface, "netns", *netns, "queues", st.Queues(),
		"ephemeral_ports", ports.String(), "time_wait", *tw, "socket", *sock, "version", Version(), "pid", os.Getpid())

	if err := sdNotify(fmt.Sprintf("READY=1\nMAINPID=%d\nSTATUS=serving %s with %d shards", os.Getpid(), *iface, st.Queues())); err != nil {
		log.Warn("systemd notification failed", "err", err)
	}

	select {
	case sig := <-sigc:
		log.Info("shutting down", "signal", sig.String(), "uptime", time.Since(start).Round(time.Millisecond))
	case err := <-serveErr:
		errorLine(e, "up", fmt.Errorf("control socket failed: %w", err))
		return 1
	}
	signal.Stop(sigc) // a second signal now kills the daemon the default way
	sdNotify("STOPPING=1")
	// Deferred in reverse: control server (ends shim connections), shim
	// service, stack, listener (removes socket and lock).
	return 0
}

// registerDaemonOps adds the daemon's ops to the control server.
func registerDaemonOps(srv *control.Server, st daemonStack, shim *daemon.Daemon, cfg stack.Config, start time.Time, sock string) {
	srv.Handle("stats", func(context.Context, *control.Request) (any, error) {
		shards := st.Stats()
		if shards == nil {
			shards = []stack.ShardStats{}
		}
		ss := shim.Stats()
		rt := gostats.Read()
		return StatsReply{Shards: shards, Shim: &ss, Runtime: &rt}, nil
	})
	srv.Handle("version", func(context.Context, *control.Request) (any, error) {
		return map[string]string{"version": Version(), "go": runtime.Version()}, nil
	})
	srv.Handle("info", func(context.Context, *control.Request) (any, error) {
		return map[string]any{
			"pid": os.Getpid(), "iface": cfg.Interface, "netns": cfg.NetNS, "queues": st.Queues(),
			"ephemeral_ports": cfg.EphemeralPorts.String(), "time_wait": cfg.TimeWait.String(),
			"uptime": time.Since(start).Round(time.Second).String(), "socket": sock, "version": Version(),
		}, nil
	})
}

// StatsReply is the "stats" op's reply.
type StatsReply struct {
	Shards []stack.ShardStats `json:"shards"`
	Shim   *daemon.Stats      `json:"shim,omitempty"` // LD_PRELOAD clients
	// Runtime is the daemon's garbage collection so far (the lab reports
	// its cost per request).
	Runtime *gostats.Runtime `json:"runtime,omitempty"`
}

// startCPUProfile starts profiling into path; the returned func stops and
// flushes it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// parseOffload reads --offload: a comma-separated subset of gso, gro and
// csum, or none.
func parseOffload(v string) (noGSO, noGRO, noCsum bool, err error) {
	noGSO, noGRO, noCsum = true, true, true
	if v == "none" {
		return
	}
	for _, o := range strings.Split(v, ",") {
		switch strings.TrimSpace(o) {
		case "gso":
			noGSO = false
		case "gro":
			noGRO = false
		case "csum":
			noCsum = false
		case "":
		default:
			return false, false, false, fmt.Errorf("unknown offload %q: use a comma-separated subset of gso, gro and csum, or none", o)
		}
	}
	return noGSO, noGRO, noCsum, nil
}
