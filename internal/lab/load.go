package lab

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/loadgen"
)

// LoadMain is the hidden "lab-load" subcommand: one loadgen run in the
// current network namespace, with "progress" events and one "result" (or
// "error") event on stdout.
func LoadMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lab-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "server host:port")
	mode := fs.String("mode", "keepalive", "keepalive, close or bulk (keep-alive, large responses: body Gbit/s)")
	path := fs.String("path", "/", "request path (the bulk phase: "+BulkPath+")")
	wantBody := fs.Int("want-body", 0, "body length every response must have (0: any; built-in load generator only)")
	conns := fs.Int("conns", 64, "concurrent connections")
	duration := fs.Duration("duration", 5*time.Second, "measured time")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "load before measuring")
	tool := fs.String("tool", LoaderBuiltin, "load generator: loadgen (built-in), wrk or redis-benchmark")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ev := newEventWriter(stdout)
	m, err := loadgen.ParseMode(*mode)
	if err != nil {
		ev.emit(Event{Event: "error", Error: err.Error()})
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var res *loadgen.Result
	switch *tool {
	case LoaderWrk:
		res, err = runWrk(ctx, *addr, *path, m, *conns, *duration, *warmup)
	case LoaderRedis:
		if m == loadgen.Bulk {
			ev.emit(Event{Event: "error", Error: bulkNotApplicable})
			return 2
		}
		res, err = runRedisBenchmark(ctx, *addr, m, *conns, *duration)
	case LoaderBuiltin:
		res, err = loadgen.Run(ctx, loadgen.Config{
			Addr: *addr, Path: *path, Mode: m, Conns: *conns, Duration: *duration, Warmup: *warmup, WantBody: *wantBody,
			ProgressInterval: 500 * time.Millisecond,
			Progress: func(p loadgen.Progress) {
				ev.emit(Event{Event: "progress", Progress: &p})
			},
		})
	default:
		ev.emit(Event{Event: "error", Error: fmt.Sprintf("unknown --tool %q (use loadgen, wrk or redis-benchmark)", *tool)})
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "lab-load: %v\n", err)
		ev.emit(Event{Event: "error", Error: err.Error()})
		return 1
	}
	ev.emit(Event{Event: "result", Result: res})
	return 0
}
