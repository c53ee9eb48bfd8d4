// Package lab runs fsstack's embedded demo and benchmark: the same HTTP
// server on fsstack and on the kernel stack, in one network namespace of a
// netlab, loaded from the other namespace, one after the other.
//
//	parent (fsstack lab / bench)                 child processes (same binary)
//	  netlab.New ---------------------------------------------------------.
//	  | ServerNS: lab-serve --stack kernel  --listen 198.18.0.1:8080      |
//	  | ClientNS: lab-load  --mode keepalive, then close, then bulk       |
//	  | stop kernel server                                                |
//	  | ServerNS: lab-serve --stack fsstack --iface ServerIf --queues N   |
//	  |           (control socket for per-shard Stats, CPU profile)       |
//	  | ClientNS: lab-load  --mode keepalive, then close, then bulk       |
//	  | stop fsstack server                                               |
//	  '-- netlab.Close, also on failure, SIGINT and SIGTERM ---------------'
//
// Each server is measured in three phases of Options.Duration each (after
// Options.Warmup): keep-alive (64-byte responses on Conns connections,
// requests/s), close (a new connection per request, connections/s) and
// bulk (BulkSize-byte responses at BulkPath on BulkConns keep-alive
// connections, body Gbit/s), each with the server side's CPU per request
// (bulk: per MiB). redis-server has no bulk phase (Report.BulkSkipped).
//
// The servers run one at a time so that neither competes for the two CPUs
// (or for an attached XDP program) while the other is measured.
//
// With Options.Server = ServerNginx the server is Debian's nginx instead:
// plain on the kernel, and on fsstack under LD_PRELOAD=libfsstack.so with
// `fsstack up` serving ServerIf (nginx.go).
//
// Children talk to the parent with JSON lines on stdout (Event); their
// stderr carries slog output, kept by the parent for error reports.
package lab

import (
	"encoding/json"
	"io"
	"sync"

	"github.com/fsstack/fsstack/internal/loadgen"
)

// Event is one line a child writes on stdout.
type Event struct {
	Event    string            `json:"event"` // "ready", "progress", "result", "error"
	Addr     string            `json:"addr,omitempty"`
	Stack    string            `json:"stack,omitempty"`
	Queues   int               `json:"queues,omitempty"`
	Control  string            `json:"control,omitempty"`
	Error    string            `json:"error,omitempty"`
	Progress *loadgen.Progress `json:"progress,omitempty"`
	Result   *loadgen.Result   `json:"result,omitempty"`
}

// eventWriter serializes Events onto one stream.
type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newEventWriter(w io.Writer) *eventWriter { return &eventWriter{enc: json.NewEncoder(w)} }

func (w *eventWriter) emit(ev Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.enc.Encode(ev)
}
