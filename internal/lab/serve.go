package lab

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/internal/gostats"
	"github.com/fsstack/fsstack/stack"
)

// Body is what the lab's HTTP server answers: 64 bytes, as in Fastsocket's
// and the design brief's nginx measurements.
var Body = []byte("fsstack lab: 64-byte body for the short-connection benchmark...\n")

func init() {
	if len(Body) != 64 {
		panic("lab: Body must be 64 bytes, is " + strconv.Itoa(len(Body)))
	}
}

// The bulk phase's response: BulkSize bytes at BulkPath, on every HTTP
// server of the lab (Handler from memory, nginx from a file in its
// docroot).
const (
	BulkPath = "/bulk"
	BulkSize = 1 << 20
)

// BulkBody returns the bulk response: Body repeated to BulkSize bytes,
// built on first use.
var BulkBody = sync.OnceValue(func() []byte { return bytes.Repeat(Body, BulkSize/len(Body)) })

// Handler serves BulkBody at BulkPath and Body on every other path.
func Handler() http.Handler {
	clen, bulkLen := strconv.Itoa(len(Body)), strconv.Itoa(BulkSize)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		if r.URL.Path == BulkPath {
			h["Content-Length"] = []string{bulkLen}
			w.Write(BulkBody())
			return
		}
		h["Content-Length"] = []string{clen}
		w.Write(Body)
	})
}

// ServeMain is the hidden "lab-serve" subcommand: it runs the lab's HTTP
// server on the kernel stack or on fsstack in the current network
// namespace until SIGTERM/SIGINT, reporting "ready" or "error" on stdout.
func ServeMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lab-serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	which := fs.String("stack", "kernel", "kernel or fsstack")
	listen := fs.String("listen", ":80", "address to serve HTTP on")
	iface := fs.String("iface", "", "interface for fsstack")
	queues := fs.Int("queues", 0, "fsstack queues (0: one per CPU)")
	xdpMode := fs.String("xdp-mode", "", "native or generic (fsstack; empty: try native first)")
	ctl := fs.String("control", "", "control socket path for fsstack's stats (empty: none)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the serving period here")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "lab-serve: bad --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("server", *which)
	ev := newEventWriter(stdout)
	fail := func(err error) int {
		log.Error("lab server failed", "err", err)
		ev.emit(Event{Event: "error", Stack: *which, Error: err.Error()})
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var (
		ln      net.Listener
		nq      int
		cleanup []func()
	)
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()
	switch *which {
	case "kernel":
		l, err := net.Listen("tcp4", *listen)
		if err != nil {
			return fail(fmt.Errorf("kernel listen on %s: %w", *listen, err))
		}
		ln = l
	case "fsstack":
		cfg := stack.Config{Interface: *iface, Queues: *queues, XDPMode: stack.XDPMode(*xdpMode), Logger: log}
		s, err := stack.New(cfg)
		if err != nil {
			return fail(fmt.Errorf("start fsstack on %s with %d queues: %w", *iface, *queues, err))
		}
		cleanup = append(cleanup, func() {
			if err := s.Close(); err != nil {
				log.Error("close stack", "err", err)
			}
		})
		nq = s.Queues()
		l, err := s.Listen("tcp4", *listen)
		if err != nil {
			return fail(fmt.Errorf("fsstack listen on %s: %w", *listen, err))
		}
		ln = l
		if *ctl != "" {
			cl, err := control.Listen(*ctl, 0o600)
			if err != nil {
				return fail(fmt.Errorf("control socket: %w", err))
			}
			srv := control.NewServer(log)
			srv.Handle("stats", func(context.Context, *control.Request) (any, error) {
				return map[string]any{"shards": s.Stats(), "runtime": gostats.Read()}, nil
			})
			go srv.Serve(cl)
			cleanup = append(cleanup, func() { srv.Close() })
		}
	default:
		return fail(fmt.Errorf("unknown --stack %q (use kernel or fsstack)", *which))
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fail(fmt.Errorf("create CPU profile: %w", err))
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fail(fmt.Errorf("start CPU profile: %w", err))
		}
		cleanup = append(cleanup, func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}

	hs := &http.Server{
		Handler:           Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("lab server ready", "addr", ln.Addr().String(), "queues", nq)
	ev.emit(Event{Event: "ready", Stack: *which, Addr: ln.Addr().String(), Queues: nq, Control: *ctl})

	select {
	case <-ctx.Done():
		log.Info("lab server stopping")
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		return 0
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return 0
		}
		return fail(fmt.Errorf("serve HTTP: %w", err))
	}
}
