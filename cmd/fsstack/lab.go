package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/lab"
	"github.com/fsstack/fsstack/internal/loadgen"
)

func runLab(e *env, args []string) int {
	fs := newFlags(e, "lab", "[flags]",
		`Create two network namespaces joined by a veth pair with --queues queues, serve
a 64-byte HTTP body from the kernel stack (port 8080) and then from fsstack (port 80)
in one of them, load each from the other namespace in three phases of --duration
each (keep-alive requests/s; "Connection: close" new connections/s; bulk: GET /bulk,
1 MiB responses on --bulk-conns keep-alive connections, body Gbit/s), with the
server side's CPU per request (bulk: per MiB), print both side by side with the
fsstack/kernel ratio, and remove everything. Needs root. Ctrl-C stops and cleans up.

--server go measures the built-in Go server (fsstack through the embedded API);
--server nginx measures Debian's nginx, unmodified: as it is on the kernel, and
under LD_PRELOAD=libfsstack.so with 'fsstack up' serving the interface (it never
falls back to the kernel quietly). --server redis has no bulk phase; the report
says so. --phases runs some of the phases only: with --cpuprofile, one phase
gives a profile of that load alone (e.g. --phases close).`)
	server := fs.String("server", "go", "server to measure: go (built-in HTTP server; fsstack through the embedded API), nginx or redis (Debian's nginx or redis-server, loaded by redis-benchmark; fsstack through 'fsstack up' and LD_PRELOAD=libfsstack.so)")
	loader := fs.String("loader", "loadgen", "load generator: loadgen (built-in) or wrk (whole seconds only)")
	lib := fs.String("lib", "", "libfsstack.so for --server nginx (default: next to this binary, then $FSSTACK_LIB)")
	workers := fs.Int("workers", 0, "nginx worker processes (0: one per CPU, of --server-cpus if set)")
	serverCPUs := fs.String("server-cpus", "", "pin the servers and fsstack to these CPUs (taskset list, e.g. 0 or 0-1)")
	clientCPUs := fs.String("client-cpus", "", "pin the load generator to these CPUs (taskset list)")
	queues := fs.Int("queues", 4, "veth queues and fsstack shards")
	duration := fs.Duration("duration", 5*time.Second, "measured time of each of the three phases (keep-alive, close, bulk) of each server")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "unmeasured load before each phase (0: none)")
	conns := fs.Int("conns", 64, "concurrent load connections of the keep-alive and close phases")
	bulkConns := fs.Int("bulk-conns", lab.DefaultBulkConns, "concurrent keep-alive connections of the bulk phase (1 MiB responses)")
	rounds := fs.Int("rounds", 1, "measure both servers this many times, alternating which goes first, and report medians")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	svgOut := fs.String("svg", "", "also draw the fsstack/kernel ratio of each phase as an SVG bar chart in this file")
	keep := fs.Bool("keep", false, "leave the namespaces in place afterwards (servers are stopped)")
	clean := fs.Bool("clean", false, "only remove the namespaces of labs that were killed or kept (older than a minute, creator gone), killing leftover nginx/fsstack/wrk processes inside, then exit")
	xdpMode := fs.String("xdp-mode", "", "fsstack XDP attach mode: native or generic (default: native, falling back to generic)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the fsstack server under load to this file")
	phases := fs.String("phases", "keepalive,close,bulk", "the phases to run, comma-separated (with --cpuprofile, one phase profiles that load alone)")
	logLevel := fs.String("log-level", "warn", "log level of the lab itself: debug, info, warn or error")
	if rc := parseFlags(e, fs, args); rc >= 0 {
		return rc
	}
	if *server != lab.ServerGo && *server != lab.ServerNginx && *server != lab.ServerRedis {
		fmt.Fprintf(e.stderr, "fsstack lab: --server %q: use go, nginx or redis\nRun 'fsstack lab --help' for usage.\n", *server)
		return 2
	}
	phaseList, err := lab.ParsePhases(*phases)
	if err != nil {
		fmt.Fprintf(e.stderr, "fsstack lab: --phases: %v\nRun 'fsstack lab --help' for usage.\n", err)
		return 2
	}
	if *server == lab.ServerRedis && *phases == "keepalive,close,bulk" {
		phaseList = nil // the default: redis has no bulk phase, and the report says so
	} else if *server == lab.ServerRedis && slices.Contains(phaseList, loadgen.Bulk) {
		fmt.Fprintf(e.stderr, "fsstack lab: --phases %s: redis-server has no bulk phase; choose among keepalive and close\n", *phases)
		return 2
	}
	if *loader != lab.LoaderBuiltin && *loader != lab.LoaderWrk {
		fmt.Fprintf(e.stderr, "fsstack lab: --loader %q: use loadgen or wrk\nRun 'fsstack lab --help' for usage.\n", *loader)
		return 2
	}
	if *queues < 1 || *conns < 1 || *bulkConns < 1 || *rounds < 1 || *workers < 0 || *duration <= 0 {
		fmt.Fprintf(e.stderr, "fsstack lab: --queues, --conns, --bulk-conns and --rounds must be at least 1 and --duration positive\nRun 'fsstack lab --help' for usage.\n")
		return 2
	}
	lvl, err := parseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(e.stderr, "fsstack lab: %v\n", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(e.stderr, "fsstack lab: needs root to create network namespaces (try 'sudo fsstack lab')\n")
		return 1
	}
	if *clean {
		res, err := lab.CleanStale(time.Minute)
		for _, ns := range res.Removed {
			fmt.Fprintf(e.stdout, "removed %s\n", ns)
		}
		for _, k := range res.Kept {
			fmt.Fprintf(e.stdout, "kept %s; stop it, then run 'fsstack lab --clean' again\n", k)
		}
		if err != nil {
			errorLine(e, "lab", err)
			return 1
		}
		if len(res.Removed) == 0 && len(res.Kept) == 0 {
			fmt.Fprintln(e.stdout, "no stale lab namespaces")
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if *warmup == 0 {
		*warmup = -1 // lab.Options: negative is none, 0 the default
	}
	rep, err := lab.Run(ctx, lab.Options{
		Server: *server, Loader: *loader, ShimLib: *lib, Workers: *workers,
		ServerCPUs: *serverCPUs, ClientCPUs: *clientCPUs,
		Queues: *queues, Conns: *conns, BulkConns: *bulkConns, Rounds: *rounds, Duration: *duration, Warmup: *warmup, Version: Version(),
		XDPMode: *xdpMode, CPUProfile: *cpuprofile, Keep: *keep, Phases: phaseList,
		Progress: e.stderr, ProgressTTY: isTerminal(e.stderr),
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl})),
	})
	if ctx.Err() != nil {
		if errors.Is(err, lab.ErrCleanup) {
			errorLine(e, "lab", err)
		} else {
			fmt.Fprintf(e.stderr, "fsstack lab: interrupted; children stopped and lab removed\n")
		}
		return 1
	}
	if rep != nil {
		fmt.Fprintln(e.stdout)
		rep.WriteTable(e.stdout)
		if *jsonOut != "" {
			if werr := writeJSON(*jsonOut, rep); werr != nil {
				errorLine(e, "lab", werr)
				return 1
			}
			fmt.Fprintf(e.stdout, "\nreport written to %s\n", *jsonOut)
		}
		if *svgOut != "" {
			if werr := writeChart(*svgOut, rep); werr != nil {
				errorLine(e, "lab", werr)
				return 1
			}
			fmt.Fprintf(e.stdout, "chart written to %s\n", *svgOut)
		}
	}
	if err != nil {
		fsFailed, cleanup := errors.Is(err, lab.ErrFSStackFailed), errors.Is(err, lab.ErrCleanup)
		if fsFailed {
			fmt.Fprintf(e.stderr, "fsstack lab: fsstack could not be measured (kernel numbers above): %s\n", rep.FSStack.Error)
		}
		if cleanup || !fsFailed {
			errorLine(e, "lab", err)
		}
		return 1
	}
	return 0
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// writeChart draws rep's ratios (lab.WriteRatioSVG) into path.
func writeChart(path string, rep *lab.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create chart: %w", err)
	}
	title := fmt.Sprintf("fsstack lab %s, %s", rep.Version, rep.Started.Format("2006-01-02 15:04 UTC"))
	if err := lab.WriteRatioSVG(f, title, lab.ChartBars([]*lab.Report{rep})); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
