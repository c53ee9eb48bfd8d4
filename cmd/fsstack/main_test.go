package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
	"github.com/fsstack/fsstack/stack"
)

// syncBuffer is a bytes.Buffer safe for a command goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e syncBuffer
	code = run(&env{stdout: &o, stderr: &e, stdin: strings.NewReader("")}, args)
	return code, o.String(), e.String()
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		args      []string
		code      int
		out, errs string // substrings expected on stdout / stderr
	}{
		{args: nil, code: 2, errs: "Commands:"},
		{args: []string{"--help"}, code: 0, out: "  up       run the daemon"},
		{args: []string{"help"}, code: 0, out: "Commands:"},
		{args: []string{"help", "stats"}, code: 0, out: "Usage: fsstack stats"},
		{args: []string{"help", "nope"}, code: 2, errs: `unknown command "nope"`},
		{args: []string{"nope"}, code: 2, errs: `fsstack: unknown command "nope"`},
		{args: []string{"stat"}, code: 2, errs: `did you mean "stats"?`},
		{args: []string{"--iface", "x"}, code: 2, errs: `unknown flag "--iface" before a command`},
		{args: []string{"version"}, code: 0, out: "fsstack "},
		{args: []string{"--version"}, code: 0, out: "fsstack "},
		{args: []string{"version", "extra"}, code: 2, errs: `unexpected argument "extra"`},
		{args: []string{"up"}, code: 2, errs: "--iface is required"},
		{args: []string{"up", "--iface", "x", "--ephemeral-ports", "9-1"}, code: 2, errs: "--ephemeral-ports"},
		{args: []string{"up", "--iface", "x", "--ephemeral-ports", "abc"}, code: 2, errs: "not a range"},
		{args: []string{"up", "--iface", "x", "--xdp-mode", "turbo"}, code: 2, errs: `--xdp-mode "turbo"`},
		{args: []string{"up", "--iface", "x", "--offload", "tso"}, code: 2, errs: `unknown offload "tso"`},
		{args: []string{"up", "--iface", "x", "--delayed-ack", "-1ms"}, code: 2, errs: `--delayed-ack -1ms: must not be negative`},
		{args: []string{"up", "--iface", "x", "--gc-percent", "10"}, code: 2, errs: `--gc-percent 10: must be at least 25`},
		{args: []string{"up", "--iface", "x", "--cpus", "3-1"}, code: 2, errs: `--cpus: bad CPU list "3-1"`},
		{args: []string{"up", "--iface", "x", "--pprof"}, code: 2, errs: `--pprof serves on the --metrics address`},
		{args: []string{"up", "--iface", "x", "--log-level", "loud"}, code: 2, errs: "unknown log level"},
		{args: []string{"up", "--iface", "x", "--queues", "-1"}, code: 2, errs: "queues must be"},
		{args: []string{"up", "--iface", "x", "--time-wait", "soon"}, code: 2, errs: "invalid value"},
		{args: []string{"stats", "--watch", "-1s"}, code: 2, errs: "--watch must be positive"},
		{args: []string{"lab", "--queues", "0"}, code: 2, errs: "at least 1"},
		{args: []string{"lab", "--log-level", "x"}, code: 2, errs: "unknown log level"},
		{args: []string{"lab", "--phases", "warm"}, code: 2, errs: `--phases: phase "warm": use keepalive, close or bulk`},
		{args: []string{"lab", "--phases", ","}, code: 2, errs: `--phases: no phase`},
		{args: []string{"lab", "--server", "redis", "--phases", "close,bulk"}, code: 2, errs: "redis-server has no bulk phase"},
	}
	for _, c := range []string{"up", "stats", "lab", "version"} {
		tests = append(tests,
			struct {
				args      []string
				code      int
				out, errs string
			}{args: []string{c, "--help"}, code: 0, out: "Usage: fsstack " + c},
			struct {
				args      []string
				code      int
				out, errs string
			}{args: []string{c, "--bogus"}, code: 2, errs: "flag provided but not defined: -bogus\nRun 'fsstack " + c + " --help' for usage."},
		)
	}
	for _, tt := range tests {
		code, out, errs := runCmd(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errs, tt.errs) {
			t.Errorf("fsstack %q: exit %d, stdout %q, stderr %q; want exit %d, stdout ~%q, stderr ~%q",
				tt.args, code, out, errs, tt.code, tt.out, tt.errs)
		}
	}
}

func TestHelpOnce(t *testing.T) {
	for _, c := range []string{"up", "stats", "lab", "version"} {
		code, out, errs := runCmd(c, "--help")
		if code != 0 || strings.Count(out, "Usage:") != 1 || errs != "" {
			t.Errorf("%s --help: exit %d, %d usages, stderr %q", c, code, strings.Count(out, "Usage:"), errs)
		}
		code, out, errs = runCmd(c, "--bogus")
		if code != 2 || out != "" || strings.Count(errs, "\n") != 2 {
			t.Errorf("%s --bogus: exit %d, stdout %q, stderr %q; want 2, nothing, two lines", c, code, out, errs)
		}
	}
	if _, out, _ := runCmd("stats", "--help"); strings.Contains(out, "default 0s") {
		t.Errorf("zero default shown:\n%s", out)
	}
}

func TestHelpListsFlags(t *testing.T) {
	_, out, _ := runCmd("up", "--help")
	for _, f := range []string{"--iface", "--queues", "--netns", "--socket", "--ephemeral-ports", "--time-wait", "--xdp-mode", "--offload", "--delayed-ack", "--log-level", "0666"} {
		if !strings.Contains(out, f) {
			t.Errorf("up --help lacks %s:\n%s", f, out)
		}
	}
	_, out, _ = runCmd("--help")
	if strings.Contains(out, "lab-serve") || strings.Contains(out, "lab-load") {
		t.Errorf("hidden commands listed:\n%s", out)
	}
}

func TestParsePortRange(t *testing.T) {
	good := map[string]stack.PortRange{"61000-65499": {First: 61000, Last: 65499}, "1-1": {First: 1, Last: 1}, " 10 - 20 ": {First: 10, Last: 20}}
	for s, want := range good {
		if got, err := parsePortRange(s); err != nil || got != want {
			t.Errorf("%q: %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "1", "0-5", "5-4", "1-70000", "a-b", "-5"} {
		if _, err := parsePortRange(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

var testShards = []stack.ShardStats{
	{Shard: 0, Queue: 0, RxPackets: 100, TxPackets: 90, Accepted: 10, Open: 2},
	{Shard: 1, Queue: 1, RxPackets: 200, TxPackets: 180, Accepted: 20, Open: 3, Handoffs: 7},
}

// fakeDaemon serves a control socket with a "stats" op.
func fakeDaemon(t *testing.T, stats func() (any, error)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "d.sock")
	ln, err := control.Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(nil)
	srv.Handle("stats", func(context.Context, *control.Request) (any, error) { return stats() })
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestStatsTable(t *testing.T) {
	path := fakeDaemon(t, func() (any, error) { return StatsReply{Shards: testShards}, nil })
	code, out, errs := runCmd("stats", "--socket", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header, 2 shards, total:\n%s", out)
	}
	hdr := strings.Fields(lines[0])
	total := strings.Fields(lines[3])
	if hdr[0] != "shard" || total[0] != "total" {
		t.Fatalf("table:\n%s", out)
	}
	// total row: no queue column value, so columns shift by one.
	col := func(name string) string {
		for i, h := range hdr {
			if h == name {
				return total[i-1]
			}
		}
		t.Fatalf("no column %s", name)
		return ""
	}
	for name, want := range map[string]string{"rx_packets": "300", "tx_packets": "270", "accepted": "30", "open": "5", "handoffs": "7"} {
		if got := col(name); got != want {
			t.Errorf("total %s = %s, want %s\n%s", name, got, want, out)
		}
	}
}

func TestStatsJSON(t *testing.T) {
	path := fakeDaemon(t, func() (any, error) { return StatsReply{Shards: testShards}, nil })
	code, out, errs := runCmd("stats", "--socket", path, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got struct {
		Shards []stack.ShardStats `json:"shards"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %q: %v", out, err)
	}
	if len(got.Shards) != 2 || got.Shards[1] != testShards[1] {
		t.Errorf("got %+v", got)
	}
	// An idle daemon with no shards yet still prints a list, not null.
	empty := fakeDaemon(t, func() (any, error) { return StatsReply{}, nil })
	if _, out, _ := runCmd("stats", "--socket", empty, "--json"); strings.TrimSpace(out) != `{"shards":[]}` {
		t.Errorf("empty: %q", out)
	}
}

func TestStatsErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	code, _, errs := runCmd("stats", "--socket", path)
	want := "fsstack: no daemon at " + path + "; start one with 'fsstack up --iface IFACE'\n"
	if code != 1 || errs != want {
		t.Errorf("no daemon: exit %d, stderr %q; want 1, %q", code, errs, want)
	}
	bad := fakeDaemon(t, func() (any, error) { return nil, errors.New("shard 3 is wedged") })
	code, _, errs = runCmd("stats", "--socket", bad)
	if code != 1 || !strings.Contains(errs, "shard 3 is wedged") || strings.Count(errs, "\n") != 1 {
		t.Errorf("remote error: exit %d, stderr %q", code, errs)
	}
}

func TestStatsWatch(t *testing.T) {
	var calls atomic.Int32
	var srv *control.Server
	path := filepath.Join(t.TempDir(), "w.sock")
	ln, err := control.Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srv = control.NewServer(nil)
	srv.Handle("stats", func(context.Context, *control.Request) (any, error) {
		if calls.Add(1) > 3 {
			// The fourth look fails and ends the watch. (Closing the
			// server from the third call's handler raced with that
			// call's reply; TestStatsErrors checks the "no daemon" message.)
			return nil, errors.New("daemon stopping")
		}
		return StatsReply{Shards: testShards}, nil
	})
	go srv.Serve(ln)
	defer srv.Close()
	code, out, errs := runCmd("stats", "--socket", path, "--json", "--watch", "20ms")
	if n := strings.Count(out, `{"shards":`); n != 3 || code != 1 || !strings.Contains(errs, "daemon stopping") {
		t.Errorf("watch: exit %d, %d reports, stderr %q\n%s", code, n, errs, out)
	}
}

type fakeStack struct {
	daemon.KernelBackend // the shim service's sockets come from the kernel
	closed               atomic.Bool
}

func (f *fakeStack) Queues() int               { return 2 }
func (f *fakeStack) Stats() []stack.ShardStats { return testShards }
func (f *fakeStack) Close() error              { f.closed.Store(true); return nil }

// Capture records nothing: the fake has no shards.
func (f *fakeStack) Capture(opts stack.CaptureOptions) (*stack.Capture, error) {
	return new(stack.Stack).Capture(opts)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestUpLifecycle runs `up` on a fake stack: it serves stats, refuses a
// second daemon, and on its signal closes the stack and removes the socket.
func TestUpLifecycle(t *testing.T) {
	fake := &fakeStack{}
	var gotCfg stack.Config
	oldNew, oldSigs := newStack, upSignals
	newStack = func(cfg stack.Config) (daemonStack, error) { gotCfg = cfg; return fake, nil }
	upSignals = []os.Signal{syscall.SIGUSR1}
	defer func() { newStack, upSignals = oldNew, oldSigs }()

	path := filepath.Join(t.TempDir(), "run", "fsstack.sock")
	// systemd's Type=notify: READY=1 once serving, STOPPING=1 on the way out.
	notifyPath := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	done := make(chan int, 1)
	var stderr syncBuffer
	go func() {
		done <- run(&env{stdout: &stderr, stderr: &stderr}, []string{"up", "--iface", "veth9", "--queues", "2",
			"--socket", path, "--ephemeral-ports", "62000-62999", "--time-wait", "2s", "--xdp-mode", "generic", "--offload", "none", "--delayed-ack", "0", "--metrics", "127.0.0.1:0"})
	}()
	waitFor(t, "daemon ready", func() bool { return strings.Contains(stderr.String(), "daemon ready") })
	checkMetrics(t, stderr.String())
	if gotCfg.Interface != "veth9" || gotCfg.Queues != 2 || gotCfg.EphemeralPorts != (stack.PortRange{First: 62000, Last: 62999}) ||
		gotCfg.TimeWait != 2*time.Second || gotCfg.XDPMode != stack.XDPGeneric || gotCfg.Logger == nil {
		t.Errorf("config = %+v", gotCfg)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != SocketMode {
		t.Errorf("socket mode %v, %v", fi.Mode(), err)
	}
	code, out, errs := runCmd("stats", "--socket", path, "--json")
	if code != 0 || !strings.Contains(out, `"rx_packets":200`) {
		t.Errorf("stats against up: %d %q %q", code, out, errs)
	}
	var info map[string]any
	if err := control.Do(context.Background(), path, "info", nil, &info); err != nil || info["iface"] != "veth9" {
		t.Errorf("info: %v %v", info, err)
	}
	// The LD_PRELOAD shim attaches on the same socket; stats counts it.
	cl, err := shimtest.Dial(path, shimtest.Hello(int32(os.Getpid()), 0))
	if err != nil {
		t.Fatalf("shim attach through up's socket: %v", err)
	}
	var st StatsReply
	if err := control.Do(context.Background(), path, "stats", nil, &st); err != nil || st.Shim == nil || st.Shim.Clients != 1 {
		t.Errorf("stats with one shim client: %+v %v", st.Shim, err)
	}
	if _, out, _ := runCmd("stats", "--socket", path); !strings.Contains(out, "shim: clients 1,") {
		t.Errorf("stats table lacks the shim line:\n%s", out)
	}
	cl.Close()
	// A second daemon on the same socket is refused without touching the stack.
	newStack = func(stack.Config) (daemonStack, error) {
		t.Error("second daemon started a stack")
		return nil, errors.New("no")
	}
	code, _, errs = runCmd("up", "--iface", "veth9", "--socket", path)
	if code != 1 || !strings.Contains(errs, "another daemon") {
		t.Errorf("second up: exit %d, %q", code, errs)
	}
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("up exited %d: %s", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("up did not stop on its signal")
	}
	if !fake.closed.Load() {
		t.Error("stack not closed")
	}
	notify.SetReadDeadline(time.Now().Add(2 * time.Second))
	var states []string
	buf := make([]byte, 512)
	for len(states) < 2 {
		n, err := notify.Read(buf)
		if err != nil {
			break
		}
		states = append(states, string(buf[:n]))
	}
	if len(states) != 2 || !strings.HasPrefix(states[0], "READY=1\nMAINPID=") || states[1] != "STOPPING=1" {
		t.Errorf("systemd notifications %q", states)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if !strings.Contains(stderr.String(), "shutting down") || !strings.Contains(stderr.String(), "user defined signal 1") {
		t.Errorf("logs: %s", stderr.String())
	}
}

// TestUpStackError checks that a failing stack.New is one clear line, exit
// 1, and leaves no socket behind.
func TestUpStackError(t *testing.T) {
	oldNew := newStack
	newStack = func(stack.Config) (daemonStack, error) {
		return nil, errors.Join(stack.ErrNotSupported)
	}
	defer func() { newStack = oldNew }()
	path := filepath.Join(t.TempDir(), "e.sock")
	code, _, errs := runCmd("up", "--iface", "eth7", "--socket", path)
	if code != 1 || errs != "fsstack up: start stack on eth7: not supported on this system\n" {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestBinary builds the real binary: the version can be set with -ldflags,
// and `up` on an interface that does not exist reaches stack.New and
// fails with one clear line and exit status 1.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "fsstack")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "fsstack v9.8.7-test (go") {
		t.Errorf("version: %q %v", out, err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: skipping the up test that needs the kernel")
		return
	}
	sock := filepath.Join(t.TempDir(), "u.sock")
	cmd := exec.Command(bin, "up", "--iface", "nosuch0fs", "--socket", sock, "--log-level", "error")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("up on a missing interface: %v, stderr %q", err, stderr.String())
	}
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "fsstack up: start stack on nosuch0fs: ") {
		t.Errorf("error line %q", last)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	// Unknown command through the real binary: status 2.
	if err := exec.Command(bin, "frobnicate").Run(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("unknown command: %v", err)
	}
}

func TestStatsWatchTableRates(t *testing.T) {
	var calls atomic.Int32
	path := filepath.Join(t.TempDir(), "r.sock")
	ln, err := control.Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(nil)
	srv.Handle("stats", func(context.Context, *control.Request) (any, error) {
		n := calls.Add(1)
		if n > 2 {
			// The third look fails, which ends the watch (exit 1). Closing
			// the server from the second call's handler raced with that
			// call's own reply.
			return nil, errors.New("daemon stopping")
		}
		return StatsReply{Shards: []stack.ShardStats{{RxPackets: uint64(n) * 1000, Accepted: uint64(n) * 10}}}, nil
	})
	go srv.Serve(ln)
	defer srv.Close()
	code, out, _ := runCmd("stats", "--socket", path, "--watch", "100ms")
	if code != 1 || strings.Count(out, "total") != 2 || !strings.Contains(out, "per second: rx_packets ") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// checkMetrics scrapes the /metrics URL that up logged and checks the
// shards' and the shim service's series as a Prometheus server parses them.
func checkMetrics(t *testing.T, log string) {
	t.Helper()
	m := regexp.MustCompile(`"metrics served" url=(\S+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("up did not log where it serves metrics:\n%s", log)
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatalf("scrape %s: %v", m[1], err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("scrape %s: %s, %s", m[1], resp.Status, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation) // what a Prometheus server accepts from any exporter
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics are not the Prometheus text format: %v", err)
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f := families[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			switch {
			case mt.Counter != nil:
				return mt.Counter.GetValue(), true
			case mt.Gauge != nil:
				return mt.Gauge.GetValue(), true
			}
		}
		return 0, false
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"fsstack_shard_rx_packets_total", map[string]string{"shard": "1", "queue": "1"}, 200},
		{"fsstack_shard_tx_packets_total", map[string]string{"shard": "0"}, 90},
		{"fsstack_shard_handshakes_total", map[string]string{"shard": "1"}, 20},
		{"fsstack_shard_handoffs_out_total", map[string]string{"shard": "1"}, 7},
		{"fsstack_shard_open_connections", map[string]string{"shard": "0"}, 2},
		{"fsstack_shard_xsk_fill_ring_empty_total", map[string]string{"shard": "0"}, 0},
		{"fsstack_shim_clients", nil, 0},
	} {
		if got, ok := value(c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := families["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics beside fsstack's")
	}
}
