// Command fsstack runs and inspects the fsstack daemon and its lab.
//
//	fsstack up --iface IFACE [--queues N] [--netns NAME] [--socket PATH]
//	           [--ephemeral-ports 61000-65499] [--time-wait 5s]
//	           [--xdp-mode native|generic] [--log-level info] [--cpuprofile FILE]
//	           [--fastsocket "enable_listen_spawn=2 enable_fast_epoll=1 ..."]
//	fsstack stats [--socket PATH] [--json] [--watch 1s]
//	fsstack capture [-i IFACE] [-w FILE.pcap] [--shard N] [-c COUNT] [--snaplen N] [--socket PATH] [FILTER]
//	fsstack lab [--server go|nginx|redis] [--loader loadgen|wrk] [--lib PATH] [--workers N] [--queues 4]
//	            [--duration 5s] [--warmup 500ms] [--conns 64] [--bulk-conns 8] [--rounds 1]
//	            [--json FILE] [--svg FILE] [--keep] [--xdp-mode M] [--cpuprofile FILE]
//	            [--server-cpus LIST] [--client-cpus LIST]
//	fsstack lab --clean                           remove labs left by killed runs
//	fsstack run [--socket PATH] [--lib PATH] [--fallback kernel|fail] [--preload LIB]... -- COMMAND [ARGS...]
//	fsstack version
//	fsstack help [COMMAND]
//
// Every command takes --help (flags may be written -flag or --flag). Exit
// status: 0 success, 1 failure, 2 usage error (unknown command or flag,
// stray argument, bad value).
//
// # up
//
// up listens on the control socket first (default /run/fsstack/fsstack.sock;
// its directory is created 0755, the socket is 0666 so that applications
// under LD_PRELOAD run as any user can attach, and ops that change state
// must check SO_PEERCRED). A socket nobody answers on is replaced; if a
// daemon answers, up refuses to start (exit 1) before touching the
// interface. Then it calls stack.New; an error is printed as one line
// ("fsstack up: start stack on IFACE: ...") with exit status 1. SIGINT or
// SIGTERM stop it: control server, stack.Close, socket removed. Logs go to
// stderr through log/slog; "daemon ready" is logged once it serves (and,
// under systemd with Type=notify, READY=1 is sent). --cpuprofile FILE
// profiles the daemon from then until it stops.
//
// --fastsocket takes fastsocket.ko's module parameters as given to modprobe
// (kmod-compat.ParseParams) and gives them the meaning they had:
// enable_listen_spawn goes to the shim service (0: accepts ignore the
// caller's CPU; the value is published to the shim, whose /dev/fastsocket
// SPAWN ioctls follow it), enable_fastsocket_debug sets the log level
// unless --log-level is given, and parameters whose mechanism fsstack
// does not have are accepted and logged as having no effect. A bad string
// is a usage error (exit 2) naming the parameter.
//
// The control socket speaks line-delimited JSON (internal/control):
// {"op":"stats"} -> {"shards":[...]}, {"op":"version"}, {"op":"info"},
// {"op":"ops"}; errors are {"error":"..."}. {"op":"capture",...} streams
// frames (cmd/fsstack/capture.go has its protocol).
//
// # stats
//
// stats prints one row per shard and a total row (columns follow
// stack.ShardStats), or the daemon's {"shards":[...]} with --json. --watch
// repeats, with per-second rates of the main counters. Without a daemon:
// "fsstack: no daemon at PATH; start one with 'fsstack up --iface IFACE'",
// exit 1.
//
// # capture
//
// capture asks the daemon for the frames its shards receive (from the rx
// ring, before GRO) and post for transmit, and writes them as pcap to -w
// FILE or to stdout (-w -, or no -w when stdout is not a terminal), or as
// one line per frame on a terminal. FILTER is a subset of tcpdump's syntax
// (capture.ParseFilter); --shard N records one shard. Only root or the
// daemon's uid may capture ("fsstack capture: capture needs root: ...",
// exit 1). SIGINT or SIGTERM (or -c COUNT frames) stops it; the frames
// still buffered in the daemon are written, and the counts of frames
// captured and dropped (the reader was slow) go to stderr.
//
// # lab
//
// lab needs root. It creates two network namespaces joined by a veth pair
// with --queues queues (internal/netlab), serves a 64-byte body over HTTP
// from the kernel stack (198.18.0.1:8080) and then from fsstack (port 80,
// one shard per queue) in the server namespace, and loads each from the
// client namespace in three phases of --duration each: keep-alive
// requests/s, "Connection: close" new connections/s, and bulk (GET /bulk,
// a 1 MiB body, on --bulk-conns keep-alive connections: body Gbit/s),
// with p50/p99 latency, the server side's CPU per request (bulk: per MiB)
// and fsstack's per-shard spread. The servers and load generators are
// child processes of this binary (hidden subcommands lab-serve and
// lab-load). Progress goes to stderr, the table with the fsstack/kernel
// ratios to stdout, the report to --json FILE and a bar chart of the
// ratios to --svg FILE. Everything is removed at the end, on failure and
// on SIGINT/SIGTERM. If fsstack cannot start, the kernel's numbers and
// fsstack's error are still printed, and the exit status is 1. --rounds N
// measures both servers N times, alternating which goes first, and reports
// medians.
//
// With --server nginx the server is Debian's nginx (a master and one
// worker per CPU, the 64-byte body as index.html, the 1 MiB body as the
// file "bulk"): as it is on the kernel, and under LD_PRELOAD=libfsstack.so
// with `fsstack up` serving the interface, FSSTACK_FALLBACK=fail so it can
// never quietly run on the kernel. The per-shard spread then comes from
// the daemon's stats. With --server redis the server is Debian's
// redis-server, loaded by redis-benchmark (SET and GET); it has no bulk
// phase, and the report says so.
//
// --loader wrk drives the load with wrk instead of the built-in generator
// (internal/loadgen), to cross-check it against the tool the design's
// reference numbers were measured with.
//
// The version is set at build time with -ldflags "-X main.version=V"
// (the Makefile does), otherwise taken from the module's build info.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/fsstack/fsstack/internal/lab"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	hidden  bool // lab children: not listed in help
	run     func(env *env, args []string) int
}

// env is what a command may touch, so tests can run commands in-process.
type env struct {
	stdout, stderr io.Writer
	stdin          io.Reader
}

var commands []*command

func init() {
	commands = []*command{
		{name: "up", summary: "run the daemon on an interface", run: runUp},
		{name: "stats", summary: "print the daemon's per-shard counters", run: runStats},
		{name: "capture", summary: "record what the daemon's shards receive and send (pcap)", run: runCapture},
		{name: "run", summary: "run a program with its TCP sockets on the daemon (LD_PRELOAD shim)", run: runRun},
		{name: "lab", summary: "compare fsstack with the kernel stack in two network namespaces", run: runLab},
		{name: "version", summary: "print the version", run: runVersion},
		{name: "help", summary: "show help for a command", run: runHelp},
		{name: "lab-serve", hidden: true, run: func(e *env, a []string) int { return lab.ServeMain(a, e.stdout, e.stderr) }},
		{name: "lab-load", hidden: true, run: func(e *env, a []string) int { return lab.LoadMain(a, e.stdout, e.stderr) }},
	}
}

func main() {
	os.Exit(run(&env{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}, os.Args[1:]))
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func run(e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(e.stdout)
		return 0
	case "-v", "-version", "--version":
		return runVersion(e, nil)
	}
	c := lookup(args[0])
	if c == nil {
		msg := fmt.Sprintf("fsstack: unknown command %q", args[0])
		if strings.HasPrefix(args[0], "-") {
			msg = fmt.Sprintf("fsstack: unknown flag %q before a command", args[0])
		}
		if s := suggest(args[0]); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		fmt.Fprintf(e.stderr, "%s\nRun 'fsstack --help' for the list of commands.\n", msg)
		return 2
	}
	return c.run(e, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprint(w, `fsstack: per-core userspace TCP for unmodified Linux servers.

Usage:
  fsstack COMMAND [flags]

Commands:
`)
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprint(w, `
Run 'fsstack COMMAND --help' for a command's flags.
`)
}

// suggest returns a visible command name close to s, or "".
func suggest(s string) string {
	s = strings.TrimLeft(s, "-")
	var names []string
	for _, c := range commands {
		if !c.hidden {
			names = append(names, c.name)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.HasPrefix(n, s) && len(s) >= 2 || editDistance(n, s) == 1 {
			return n
		}
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func runHelp(e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stdout)
		return 0
	}
	c := lookup(args[0])
	if c == nil || c.hidden || c.name == "help" {
		fmt.Fprintf(e.stderr, "fsstack help: unknown command %q\n", args[0])
		return 2
	}
	return c.run(e, []string{"--help"})
}

// newFlags returns a FlagSet for a command whose usage names the command
// and describes its flags with --double-dash names.
func newFlags(e *env, name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("fsstack "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are printed by parseFlags
	// The flag package calls Usage itself on every parse error; parseFlags
	// prints help only for --help, through usageOf.
	fs.Usage = func() {}
	usages.Store(fs, func() {
		w := e.stdout
		fmt.Fprintf(w, "Usage: fsstack %s %s\n\n%s\n\nFlags:\n", name, synopsis, about)
		writeFlags(w, fs)
	})
	return fs
}

// writeFlags describes fs's flags with --double-dash names (one dash for
// a one-letter flag, as tcpdump's -i and -w).
func writeFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, use := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		fmt.Fprintf(w, "  %s%s", dash, f.Name)
		if typ != "" {
			fmt.Fprintf(w, " %s", typ)
		}
		fmt.Fprintf(w, "\n        %s", use)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// usages maps each command's FlagSet to its help printer.
var usages sync.Map // *flag.FlagSet -> func()

// errHelp is returned by parseFlags after printing help: exit 0.
var errHelp = errors.New("help shown")

// parseFlags parses args, prints a clear error for bad flags or stray
// arguments and returns the exit status to use (-1: carry on).
func parseFlags(e *env, fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if u, ok := usages.Load(fs); ok {
				u.(func())()
			}
			return 0
		}
		fmt.Fprintf(e.stderr, "%s: %v\nRun '%s --help' for usage.\n", fs.Name(), err, fs.Name())
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "%s: unexpected argument %q\nRun '%s --help' for usage.\n", fs.Name(), fs.Arg(0), fs.Name())
		return 2
	}
	return -1
}

// errorLine prints err as one line prefixed by the command, dropping the
// "fsstack: " prefixes that wrapped errors repeat.
func errorLine(e *env, cmd string, err error) {
	msg := strings.ReplaceAll(err.Error(), "fsstack: ", "")
	msg = strings.ReplaceAll(msg, "\n", "; ")
	fmt.Fprintf(e.stderr, "fsstack %s: %s\n", cmd, msg)
}
