package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/stack"
)

func runStats(e *env, args []string) int {
	fs := newFlags(e, "stats", "[--socket PATH] [--json] [--watch INTERVAL]",
		"Print the running daemon's per-shard counters, with a total row.")
	sock := fs.String("socket", control.DefaultSocketPath, "control socket of the daemon")
	asJSON := fs.Bool("json", false, `print {"shards":[...]} instead of a table (one line per interval with --watch)`)
	watch := fs.Duration("watch", 0, "repeat every INTERVAL (e.g. 1s) until interrupted")
	if rc := parseFlags(e, fs, args); rc >= 0 {
		return rc
	}
	if *watch < 0 {
		fmt.Fprintf(e.stderr, "fsstack stats: --watch must be positive\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var (
		prev   map[string]int64 // totals of the previous report, for rates
		prevAt time.Time
	)
	for i := 0; ; i++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var reply struct {
			Shards []json.RawMessage `json:"shards"`
			Shim   json.RawMessage   `json:"shim,omitempty"`
		}
		err := control.Do(cctx, *sock, "stats", nil, &reply)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			if errors.Is(err, control.ErrNoDaemon) {
				fmt.Fprintf(e.stderr, "fsstack: no daemon at %s; start one with 'fsstack up --iface IFACE'\n", *sock)
			} else {
				errorLine(e, "stats", fmt.Errorf("ask daemon at %s: %w", *sock, err))
			}
			return 1
		}
		if *asJSON {
			if reply.Shards == nil {
				reply.Shards = []json.RawMessage{} // {"shards":[]}, never null
			}
			b, _ := json.Marshal(reply)
			fmt.Fprintf(e.stdout, "%s\n", b)
		} else {
			if *watch > 0 {
				if i > 0 {
					fmt.Fprintln(e.stdout)
				}
				fmt.Fprintf(e.stdout, "%s\n", time.Now().Format("15:04:05"))
			}
			shards := make([]map[string]json.Number, len(reply.Shards))
			for i, raw := range reply.Shards {
				d := json.NewDecoder(bytes.NewReader(raw))
				d.UseNumber()
				if err := d.Decode(&shards[i]); err != nil {
					errorLine(e, "stats", fmt.Errorf("decode shard %d from daemon at %s: %w", i, *sock, err))
					return 1
				}
			}
			writeStatsTable(e.stdout, shards)
			if len(reply.Shim) > 0 && string(reply.Shim) != "null" {
				writeShim(e.stdout, reply.Shim)
			}
			if *watch > 0 {
				now := time.Now()
				cur := totals(shards)
				if prev != nil {
					writeRates(e.stdout, prev, cur, now.Sub(prevAt))
				}
				prev, prevAt = cur, now
			}
		}
		if *watch == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(*watch):
		}
	}
}

// statColumns returns the JSON names of stack.ShardStats' fields in
// declaration order, so the table follows the struct without naming its
// fields here.
func statColumns() []string {
	t := reflect.TypeFor[stack.ShardStats]()
	var cols []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			cols = append(cols, name)
		}
	}
	return cols
}

// writeStatsTable prints one row per shard and a total row. It works on
// the decoded JSON, so counters a newer daemon adds are shown too.
func writeStatsTable(w io.Writer, shards []map[string]json.Number) {
	cols := statColumns()
	known := map[string]bool{}
	for _, c := range cols {
		known[c] = true
	}
	var extra []string
	for _, s := range shards {
		for k := range s {
			if !known[k] {
				known[k] = true
				extra = append(extra, k)
			}
		}
	}
	sort.Strings(extra)
	cols = append(cols, extra...)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	totals := make([]int64, len(cols))
	for _, s := range shards {
		for i, c := range cols {
			v, ok := s[c]
			if !ok {
				fmt.Fprint(tw, "-\t")
				continue
			}
			fmt.Fprintf(tw, "%s\t", v)
			if n, err := v.Int64(); err == nil {
				totals[i] += n
			}
		}
		fmt.Fprintln(tw)
	}
	for i, c := range cols {
		switch {
		case i == 0:
			fmt.Fprint(tw, "total\t")
		case c == "shard" || c == "queue":
			fmt.Fprint(tw, "\t")
		default:
			fmt.Fprintf(tw, "%d\t", totals[i])
		}
	}
	fmt.Fprintln(tw)
	tw.Flush()
}

// totals sums each integer counter over the shards.
func totals(shards []map[string]json.Number) map[string]int64 {
	t := map[string]int64{}
	for _, s := range shards {
		for k, v := range s {
			if n, err := v.Int64(); err == nil && k != "shard" && k != "queue" {
				t[k] += n
			}
		}
	}
	return t
}

// rateColumns are the counters whose per-second rates --watch shows.
var rateColumns = []string{"rx_packets", "tx_packets", "accepted", "connected", "handoffs", "resets"}

// writeRates prints the per-second increase of the main counters between
// two reports.
func writeRates(w io.Writer, prev, cur map[string]int64, d time.Duration) {
	if d <= 0 {
		return
	}
	var parts []string
	for _, c := range rateColumns {
		if _, ok := cur[c]; !ok {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", c, float64(cur[c]-prev[c])/d.Seconds()))
	}
	fmt.Fprintf(w, "per second: %s\n", strings.Join(parts, ", "))
}

// writeShim prints the daemon's LD_PRELOAD client counters on one line,
// in the daemon's order.
func writeShim(w io.Writer, raw json.RawMessage) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var parts []string
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return
	}
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return
		}
		var v any
		if err := d.Decode(&v); err != nil {
			return
		}
		parts = append(parts, fmt.Sprintf("%v %v", k, v))
	}
	fmt.Fprintf(w, "shim: %s\n", strings.Join(parts, ", "))
}
