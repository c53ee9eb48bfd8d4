package lab

import (
	"slices"
	"strings"
	"testing"

	"github.com/fsstack/fsstack/internal/loadgen"
)

// TestParsePhases: a comma-separated list, spaces and repeats tolerated,
// the loadgen spellings of keep-alive accepted; an unknown or empty list
// is an error naming the choices.
func TestParsePhases(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []loadgen.Mode
		err  string
	}{
		{in: "close", want: []loadgen.Mode{loadgen.Close}},
		{in: "keepalive,close,bulk", want: []loadgen.Mode{loadgen.KeepAlive, loadgen.Close, loadgen.Bulk}},
		{in: " keep-alive , ka,bulk", want: []loadgen.Mode{loadgen.KeepAlive, loadgen.Bulk}},
		{in: "bulk,close", want: []loadgen.Mode{loadgen.Bulk, loadgen.Close}},
		{in: "warm", err: `phase "warm": use keepalive, close or bulk`},
		{in: "close,", want: []loadgen.Mode{loadgen.Close}},
		{in: " , ", err: "no phase"},
	} {
		got, err := ParsePhases(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParsePhases(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ParsePhases(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// TestOptionsPhases: Options.Phases selects what runs (nil: everything),
// and a bulk phase for redis-server or an unknown phase is refused before
// anything starts.
func TestOptionsPhases(t *testing.T) {
	o := Options{Exe: "/bin/true"}
	for _, m := range []loadgen.Mode{loadgen.KeepAlive, loadgen.Close, loadgen.Bulk} {
		if !o.runs(m) {
			t.Errorf("no Phases: %s not run", m)
		}
	}
	o.Phases = []loadgen.Mode{loadgen.Close}
	if o.runs(loadgen.KeepAlive) || !o.runs(loadgen.Close) || o.runs(loadgen.Bulk) {
		t.Errorf("Phases [close]: runs keep-alive %v, close %v, bulk %v", o.runs(loadgen.KeepAlive), o.runs(loadgen.Close), o.runs(loadgen.Bulk))
	}
	if _, err := (Options{Exe: "/bin/true", Server: ServerRedis, Phases: []loadgen.Mode{loadgen.Bulk}}).withDefaults(); err == nil || !strings.Contains(err.Error(), "no bulk phase") {
		t.Errorf("redis with a bulk phase: %v, want the no-bulk error", err)
	}
	if _, err := (Options{Exe: "/bin/true", Phases: []loadgen.Mode{"warm"}}).withDefaults(); err == nil || !strings.Contains(err.Error(), "unknown phase") {
		t.Errorf("an unknown phase: %v, want an error", err)
	}
	if _, err := (Options{Exe: "/bin/true", Server: ServerRedis, Phases: []loadgen.Mode{loadgen.Close}}).withDefaults(); err != nil {
		t.Errorf("redis with a close phase: %v", err)
	}
}
