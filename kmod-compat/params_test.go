package kmodcompat

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestParseParams(t *testing.T) {
	tests := []struct {
		in   string
		want Params
	}{
		{"", DefaultParams()},
		{"enable_listen_spawn=0", Params{EnableListenSpawn: 0, EnableFastEpoll: 1, EnableFastsocketDebug: 3}},
		{"modprobe fastsocket enable_listen_spawn=1 enable_fast_epoll=0",
			Params{EnableListenSpawn: 1, EnableFastEpoll: 0, EnableFastsocketDebug: 3}},
		{"modprobe -v fastsocket enable_receive_flow_deliver=1",
			Params{EnableListenSpawn: 2, EnableFastEpoll: 1, EnableReceiveFlowDeliver: 1, EnableFastsocketDebug: 3}},
		{"options fastsocket enable_socket_pool_size=1000,enable_fastsocket_debug=7\n",
			Params{EnableListenSpawn: 2, EnableFastEpoll: 1, EnableSocketPoolSize: 1000, EnableFastsocketDebug: 7}},
		{"fastsocket.enable_skb_pool=1 enable_direct_tcp=1 enable_receive_cpu_selection=1",
			Params{EnableListenSpawn: 2, EnableFastEpoll: 1, EnableSkbPool: 1, EnableDirectTCP: 1, EnableReceiveCPUSelection: 1, EnableFastsocketDebug: 3}},
		{"enable_listen_spawn=0 enable_listen_spawn=2", DefaultParams()}, // last wins
	}
	for _, tt := range tests {
		got, err := ParseParams(tt.in)
		if err != nil {
			t.Errorf("ParseParams(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseParams(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseParamsErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"enable_listen_spawn=3", "enable_listen_spawn=3: want a whole number from 0 to 2"},
		{"enable_listen_spawn=-1", "from 0 to 2"},
		{"enable_fast_epoll=yes", "enable_fast_epoll=yes"},
		{"enable_fast_epoll", "needs a value"},
		{"enable_turbo=1", `unknown parameter "enable_turbo"; fastsocket.ko has enable_direct_tcp`},
		{"modprobe otherthing enable_fast_epoll=1", "expected the module name fastsocket"},
		{"modprobe", "expected the module name fastsocket"},
	}
	for _, tt := range tests {
		_, err := ParseParams(tt.in)
		if err == nil || !errors.Is(err, ErrBadParams) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ParseParams(%q) error %v, want one containing %q", tt.in, err, tt.msg)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	p := Params{EnableListenSpawn: 1, EnableFastEpoll: 0, EnableReceiveFlowDeliver: 1, EnableSocketPoolSize: 5, EnableFastsocketDebug: 6}
	got, err := ParseParams(p.String())
	if err != nil || got != p {
		t.Fatalf("round trip of %q: %+v %v", p.String(), got, err)
	}
	if len(p.Effects()) != len(Names()) {
		t.Fatal("an effect per parameter")
	}
	if DefaultParams().LogLevel() != slog.LevelWarn || p.LogLevel() != slog.LevelDebug {
		t.Fatal("log level mapping")
	}
}

func FuzzParseParams(f *testing.F) {
	f.Add("modprobe fastsocket enable_listen_spawn=2 enable_fast_epoll=1")
	f.Add("options fastsocket enable_socket_pool_size=100,enable_fastsocket_debug=7")
	f.Add("enable_x=")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseParams(s)
		if err != nil {
			if !errors.Is(err, ErrBadParams) {
				t.Fatalf("error not wrapping ErrBadParams: %v", err)
			}
			return
		}
		// Whatever parses is in range and survives a round trip.
		for _, d := range params {
			if v := *d.field(&p); v < d.min || v > d.max {
				t.Fatalf("%s=%d out of range", d.name, v)
			}
		}
		if q, err := ParseParams(p.String()); err != nil || q != p {
			t.Fatalf("round trip: %+v %v", q, err)
		}
	})
}

func TestParseParamsGiven(t *testing.T) {
	p, given, err := ParseParamsGiven("modprobe fastsocket enable_fast_epoll=0 fastsocket.enable_fastsocket_debug=5 enable_fast_epoll=1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"enable_fast_epoll", "enable_fastsocket_debug", "enable_fast_epoll"}; strings.Join(given, " ") != strings.Join(want, " ") {
		t.Errorf("given %v, want %v", given, want)
	}
	if p.EnableFastEpoll != 1 || p.EnableFastsocketDebug != 5 {
		t.Errorf("params %+v", p)
	}
	if _, given, _ := ParseParamsGiven(""); given != nil {
		t.Errorf("nothing given: %v", given)
	}
}

func TestInert(t *testing.T) {
	if got := DefaultParams().Inert(); got != nil {
		t.Errorf("defaults inert: %v", got)
	}
	p := DefaultParams()
	p.EnableListenSpawn, p.EnableFastsocketDebug = 0, 7 // both applied
	p.EnableFastEpoll, p.EnableReceiveFlowDeliver, p.EnableSocketPoolSize = 0, 1, 64
	if got, want := strings.Join(p.Inert(), " "), "enable_fast_epoll enable_receive_flow_deliver enable_socket_pool_size"; got != want {
		t.Errorf("inert %q, want %q", got, want)
	}
}
