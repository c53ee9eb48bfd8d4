// Package metrics serves the daemon's counters in the Prometheus text
// format (`fsstack up --metrics ADDR`). A scrape reads the shards' and the
// shim service's counters at that moment; nothing runs between scrapes,
// so the data path pays nothing for it.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/stack"
)

// Sources are where a scrape reads. Shards is required; Shim may be nil
// (a daemon without the shim service).
type Sources struct {
	Shards func() []stack.ShardStats
	Shim   func() daemon.Stats
	// Profiles also serves Go's profiles (heap, goroutines, CPU) under
	// /debug/pprof/. They show the daemon's internals: only on an address
	// the operator trusts.
	Profiles bool
}

type shardMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*stack.ShardStats) float64
}

func counter(name, help string, v func(*stack.ShardStats) uint64) shardMetric {
	return shardMetric{
		desc:  prometheus.NewDesc("fsstack_shard_"+name, help, []string{"shard", "queue"}, nil),
		kind:  prometheus.CounterValue,
		value: func(s *stack.ShardStats) float64 { return float64(v(s)) },
	}
}

// shardMetrics are the per-shard series, one per ShardStats field.
var shardMetrics = []shardMetric{
	counter("rx_packets_total", "Frames taken from the shard's AF_XDP socket.", func(s *stack.ShardStats) uint64 { return s.RxPackets }),
	counter("tx_packets_total", "Frames sent through the shard's AF_XDP socket.", func(s *stack.ShardStats) uint64 { return s.TxPackets }),
	counter("rx_dropped_total", "Frames dropped as malformed or for a full hand-off ring.", func(s *stack.ShardStats) uint64 { return s.RxDropped }),
	counter("tx_dropped_total", "Frames that could not be sent (no free frame, no neighbour).", func(s *stack.ShardStats) uint64 { return s.TxDropped }),
	counter("tx_waits_total", "Transmits that found every tx frame in flight and waited.", func(s *stack.ShardStats) uint64 { return s.TxWaits }),
	counter("tx_kicks_total", "sendto wake-ups of the AF_XDP tx ring.", func(s *stack.ShardStats) uint64 { return s.TxKicks }),
	counter("handshakes_total", "Passive opens completed on the shard.", func(s *stack.ShardStats) uint64 { return s.Accepted }),
	counter("connects_total", "Active opens completed on the shard.", func(s *stack.ShardStats) uint64 { return s.Connected }),
	counter("handoffs_out_total", "Segments passed to the shard that owns their flow.", func(s *stack.ShardStats) uint64 { return s.Handoffs }),
	counter("handoffs_in_total", "Segments received from another shard.", func(s *stack.ShardStats) uint64 { return s.HandoffsIn }),
	counter("resets_total", "RSTs sent.", func(s *stack.ShardStats) uint64 { return s.Resets }),
	counter("retransmits_total", "TCP segments sent again.", func(s *stack.ShardStats) uint64 { return s.Retransmits }),
	counter("rto_timeouts_total", "Expiries of the TCP retransmission timer (each costs its connection at least 200 ms).", func(s *stack.ShardStats) uint64 { return s.Timeouts }),
	counter("wakeups_total", "Times the shard slept and woke.", func(s *stack.ShardStats) uint64 { return s.Wakeups }),
	counter("missed_wakeups_total", "Sleeps of the shard that ended on their timer and found frames its socket's readiness notification had not woken it for.", func(s *stack.ShardStats) uint64 { return s.MissedWakeups }),
	counter("syn_cookies_total", "SYN-ACKs sent as SYN cookies because a listen queue was full (a SYN flood, or a burst).", func(s *stack.ShardStats) uint64 { return s.SynCookies }),
	counter("listen_drops_total", "SYNs and final ACKs dropped because an accept queue was full.", func(s *stack.ShardStats) uint64 { return s.ListenDrops }),
	counter("flows_evicted_total", "Claims of unanswered SYNs forgotten to make room in the flow directory.", func(s *stack.ShardStats) uint64 { return s.FlowsEvicted }),
	counter("flows_untracked_total", "SYNs served without a flow-directory claim because no room could be made.", func(s *stack.ShardStats) uint64 { return s.FlowsUntracked }),
	counter("half_open_pruned_total", "Half-open connections aborted under a SYN flood because their handshake did not complete in 7 s.", func(s *stack.ShardStats) uint64 { return s.HalfOpenPruned }),
	counter("time_wait_acks_total", "ACKs the shard's time-wait table sent for connections netstack had let go (a peer that did not get our last ACK).", func(s *stack.ShardStats) uint64 { return s.TimeWaitAcks }),
	counter("time_wait_overflow_total", "Connections closed without the rest of their TIME_WAIT because the shard's time-wait table was full.", func(s *stack.ShardStats) uint64 { return s.TimeWaitOverflow }),
	counter("syn_shed_total", "SYNs the steering program dropped while the shard's receive frames ran out (a SYN flood on a busy machine).", func(s *stack.ShardStats) uint64 { return s.SynShed }),
	counter("xsk_rx_dropped_total", "Frames the kernel dropped on the shard's AF_XDP socket for other reasons than a full ring.", func(s *stack.ShardStats) uint64 { return s.XSKRxDropped }),
	counter("xsk_rx_ring_full_total", "Frames the kernel dropped because the shard's rx ring was full.", func(s *stack.ShardStats) uint64 { return s.XSKRxRingFull }),
	counter("xsk_fill_ring_empty_total", "Frames the kernel dropped because the shard's fill ring had no free frame (fill-ring starvation).", func(s *stack.ShardStats) uint64 { return s.XSKFillEmpty }),
	counter("xsk_tx_invalid_total", "Invalid tx descriptors the kernel refused.", func(s *stack.ShardStats) uint64 { return s.XSKTxInvalid }),
	{
		desc:  prometheus.NewDesc("fsstack_shard_open_connections", "Connections open on the shard now.", []string{"shard", "queue"}, nil),
		kind:  prometheus.GaugeValue,
		value: func(s *stack.ShardStats) float64 { return float64(s.Open) },
	},
	{
		desc:  prometheus.NewDesc("fsstack_shard_time_wait_connections", "Connections the shard keeps in TIME_WAIT in its time-wait table now (after netstack let their endpoints go).", []string{"shard", "queue"}, nil),
		kind:  prometheus.GaugeValue,
		value: func(s *stack.ShardStats) float64 { return float64(s.TimeWait) },
	},
}

var (
	shimClients = prometheus.NewDesc("fsstack_shim_clients", "Processes attached through the LD_PRELOAD shim now.", nil, nil)
	shimSockets = prometheus.NewDesc("fsstack_shim_sockets", "Sockets of attached processes now.", nil, nil)
	shimCounter = map[string]*prometheus.Desc{
		"attached":         prometheus.NewDesc("fsstack_shim_attaches_total", "Attaches accepted.", nil, nil),
		"refused":          prometheus.NewDesc("fsstack_shim_attaches_refused_total", "Attaches refused.", nil, nil),
		"dropped":          prometheus.NewDesc("fsstack_shim_clients_dropped_total", "Clients dropped for a protocol violation.", nil, nil),
		"accept_local":     prometheus.NewDesc("fsstack_shim_accepts_local_total", "Accepts served from the caller's own CPU's shard.", nil, nil),
		"accept_remote":    prometheus.NewDesc("fsstack_shim_accepts_remote_total", "Accepts taken from another shard because the caller's was empty.", nil, nil),
		"accept_empty":     prometheus.NewDesc("fsstack_shim_accepts_empty_total", "Accept requests that found no connection (EAGAIN).", nil, nil),
		"accept_ring":      prometheus.NewDesc("fsstack_shim_accepts_ring_total", "Connections put into a client's accept ring (accepted without a round trip).", nil, nil),
		"accept_stolen":    prometheus.NewDesc("fsstack_shim_accepts_stolen_total", "Connections taken back from an accept ring left untaken too long, for another holder of the listener.", nil, nil),
		"accept_reclaimed": prometheus.NewDesc("fsstack_shim_accepts_reclaimed_total", "Connections taken back untaken from the accept ring of a client that closed the listener or exited.", nil, nil),
	}
)

// collector reads Sources on each scrape.
type collector struct{ src Sources }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range shardMetrics {
		ch <- m.desc
	}
	if c.src.Shim != nil {
		ch <- shimClients
		ch <- shimSockets
		for _, d := range shimCounter {
			ch <- d
		}
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src.Shards() {
		shard, queue := strconv.Itoa(s.Shard), strconv.Itoa(s.Queue)
		for _, m := range shardMetrics {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s), shard, queue)
		}
	}
	if c.src.Shim == nil {
		return
	}
	st := c.src.Shim()
	ch <- prometheus.MustNewConstMetric(shimClients, prometheus.GaugeValue, float64(st.Clients))
	ch <- prometheus.MustNewConstMetric(shimSockets, prometheus.GaugeValue, float64(st.Sockets))
	for name, v := range map[string]uint64{"attached": st.Attached, "refused": st.Refused, "dropped": st.Dropped,
		"accept_local": st.AcceptLocal, "accept_remote": st.AcceptRemote, "accept_empty": st.AcceptEmpty,
		"accept_ring": st.AcceptRing, "accept_reclaimed": st.AcceptReclaimed, "accept_stolen": st.AcceptStolen} {
		ch <- prometheus.MustNewConstMetric(shimCounter[name], prometheus.CounterValue, float64(v))
	}
}

// Handler returns the /metrics handler for src, with the Go runtime's and
// the process's own metrics beside fsstack's.
func Handler(src Sources) (http.Handler, error) {
	if src.Shards == nil {
		return nil, errors.New("metrics: no shard counters to serve")
	}
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{collector{src}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{}}), nil
}

// Server serves Handler on /metrics.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen starts serving src on addr (host:port; port 0 picks one).
func Listen(addr string, src Sources, log *slog.Logger) (*Server, error) {
	h, err := Handler(src)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	if src.Profiles {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

type slogErrorLog struct{}

func (slogErrorLog) Println(v ...any) { slog.Error("metrics", "err", fmt.Sprint(v...)) }
