package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	kmodcompat "github.com/fsstack/fsstack/kmod-compat"
	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/shimtest"
	"github.com/fsstack/fsstack/stack"
)

func TestParseFastsocket(t *testing.T) {
	warn, debug := slog.LevelWarn, slog.LevelDebug
	for _, tt := range []struct {
		in     string
		spawn  int
		level  *slog.Level
		inert  []string
		errMsg string
	}{
		{in: "", spawn: 2},
		{in: "enable_listen_spawn=0 enable_fast_epoll=1", spawn: 0},
		{in: "modprobe fastsocket enable_listen_spawn=1 enable_fastsocket_debug=3", spawn: 1, level: &warn},
		{in: "options fastsocket enable_fastsocket_debug=7,enable_skb_pool=1 enable_fast_epoll=0", spawn: 2, level: &debug,
			inert: []string{"enable_fast_epoll", "enable_skb_pool"}},
		{in: "enable_turbo=1", errMsg: `unknown parameter "enable_turbo"; fastsocket.ko has enable_direct_tcp`},
		{in: "enable_listen_spawn=3", errMsg: "enable_listen_spawn=3: want a whole number from 0 to 2"},
	} {
		got, err := parseFastsocket(tt.in)
		if tt.errMsg != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errMsg) {
				t.Errorf("%q: error %v, want one containing %q", tt.in, err, tt.errMsg)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if got.Params.EnableListenSpawn != tt.spawn {
			t.Errorf("%q: enable_listen_spawn %d, want %d", tt.in, got.Params.EnableListenSpawn, tt.spawn)
		}
		if (got.LogLevel == nil) != (tt.level == nil) || (got.LogLevel != nil && *got.LogLevel != *tt.level) {
			t.Errorf("%q: log level %v, want %v", tt.in, got.LogLevel, tt.level)
		}
		if !slices.Equal(got.Inert, tt.inert) {
			t.Errorf("%q: inert %v, want %v", tt.in, got.Inert, tt.inert)
		}
	}
}

// TestUpFastsocket runs `up --fastsocket` on a fake stack: the shim
// service publishes enable_listen_spawn to an attached client, the
// parameters are logged and the inert ones named, and enable_fastsocket_debug
// sets the log level only when --log-level is not given.
func TestUpFastsocket(t *testing.T) {
	oldNew, oldSigs := newStack, upSignals
	newStack = func(cfg stack.Config) (daemonStack, error) { return &fakeStack{}, nil }
	upSignals = []os.Signal{syscall.SIGUSR2}
	defer func() { newStack, upSignals = oldNew, oldSigs }()

	for _, tt := range []struct {
		args    []string
		spawn   uint32
		logs    []string // in the log
		notLogs []string
	}{
		{args: []string{"--fastsocket", "modprobe fastsocket enable_listen_spawn=1 enable_skb_pool=1"}, spawn: 1,
			logs: []string{"daemon ready", "enable_listen_spawn=1 enable_fast_epoll=1", `param=enable_skb_pool`}},
		{args: []string{"--fastsocket", "enable_listen_spawn=0 enable_fastsocket_debug=3"}, spawn: 0,
			notLogs: []string{"daemon ready"}}, // debug 3: warnings only
		{args: []string{"--fastsocket", "enable_fastsocket_debug=3", "--log-level", "info"}, spawn: 2,
			logs: []string{"daemon ready"}},
		{args: nil, spawn: 2, logs: []string{"daemon ready"}, notLogs: []string{"fastsocket parameters"}},
	} {
		path := filepath.Join(t.TempDir(), "fsstack.sock")
		var stderr syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(&env{stdout: &stderr, stderr: &stderr},
				append([]string{"up", "--iface", "veth9", "--socket", path}, tt.args...))
		}()
		var c *shimtest.Client
		waitFor(t, "the shim attach", func() bool {
			var err error
			c, err = shimtest.Dial(path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
			return err == nil
		})
		if got, want := c.Hdr.Fastsocket, abi.FsockSet|tt.spawn; got != want {
			t.Errorf("%q: seg_hdr.fastsocket %#x, want %#x", tt.args, got, want)
		}
		c.Close()
		syscall.Kill(os.Getpid(), syscall.SIGUSR2)
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("%q: up exited %d: %s", tt.args, code, stderr.String())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: up did not stop on its signal", tt.args)
		}
		for _, s := range tt.logs {
			if !strings.Contains(stderr.String(), s) {
				t.Errorf("%q: log lacks %q:\n%s", tt.args, s, stderr.String())
			}
		}
		for _, s := range tt.notLogs {
			if strings.Contains(stderr.String(), s) {
				t.Errorf("%q: log has %q:\n%s", tt.args, s, stderr.String())
			}
		}
	}
}

// TestUpFastsocketErrors: a bad parameter string is a usage error naming
// the parameter, before anything starts; --help documents every parameter.
func TestUpFastsocketErrors(t *testing.T) {
	oldNew := newStack
	newStack = func(stack.Config) (daemonStack, error) {
		t.Error("stack started despite bad --fastsocket")
		return &fakeStack{}, nil
	}
	defer func() { newStack = oldNew }()
	path := filepath.Join(t.TempDir(), "fsstack.sock")
	for in, want := range map[string]string{
		"enable_turbo=1":           `fsstack up: --fastsocket: bad fastsocket parameters: unknown parameter "enable_turbo"; fastsocket.ko has enable_direct_tcp, `,
		"enable_fast_epoll=yes":    "enable_fast_epoll=yes: want a whole number from 0 to 1",
		"enable_listen_spawn":      "enable_listen_spawn needs a value (enable_listen_spawn=N)",
		"modprobe nginx x=1":       "expected the module name fastsocket",
		"enable_socket_pool_size=": "enable_socket_pool_size=: want a whole number",
	} {
		code, _, errs := runCmd("up", "--iface", "veth9", "--socket", path, "--fastsocket", in)
		if code != 2 || !strings.Contains(errs, want) || !strings.Contains(errs, "Run 'fsstack up --help'") {
			t.Errorf("--fastsocket %q: exit %d, stderr %q; want 2 and %q", in, code, errs, want)
		}
	}
	code, out, _ := runCmd("up", "--help")
	if code != 0 || !strings.Contains(out, "--fastsocket string") {
		t.Errorf("up --help: %d\n%s", code, out)
	}
	for _, name := range kmodcompat.Names() {
		if !strings.Contains(out, name+"=") {
			t.Errorf("up --help does not document %s:\n%s", name, out)
		}
	}
}
