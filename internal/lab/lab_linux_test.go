//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// fsstackBin builds cmd/fsstack once for the lab's child processes.
func fsstackBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fsstack-labtest-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "fsstack")
		out, err := exec.Command("go", "build", "-o", builtBin, "../../cmd/fsstack").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build fsstack: %v", buildErr)
	}
	return builtBin
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
}

// assertGone checks that the lab's namespaces and child processes are gone.
func assertGone(t *testing.T, rep *Report, bin string) {
	t.Helper()
	for _, ns := range rep.Namespaces {
		if _, err := os.Stat(netlab.NSPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s left behind", ns)
			exec.Command("ip", "netns", "del", ns).Run()
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), bin) {
			t.Errorf("child process left behind: pid %s: %q", e.Name(), strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
}

// TestLabSmoke runs a very short lab. The kernel side must produce
// numbers; the fsstack side must either produce numbers or say clearly why
// not (the stack is built separately). Timings are not asserted.
func TestLabSmoke(t *testing.T) {
	needRoot(t)
	bin := fsstackBin(t)
	var progress strings.Builder
	rep, err := Run(context.Background(), Options{
		Exe: bin, Queues: 2, Conns: 4, Duration: time.Second, Warmup: -1,
		Progress: &progress,
	})
	if rep == nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("progress:\n%s", progress.String())
	if len(rep.Namespaces) != 2 {
		t.Errorf("namespaces %v", rep.Namespaces)
	}
	assertGone(t, rep, bin)
	for _, p := range []*Phase{rep.Kernel.KeepAlive, rep.Kernel.Close, rep.Kernel.Bulk} {
		if !ok(p) || p.Result.Requests == 0 {
			t.Errorf("kernel phase %+v", p)
		}
	}
	if p := rep.Kernel.Bulk; ok(p) && (p.Result.Gbps <= 0 || p.Result.BodyBytes < p.Result.Requests*BulkSize) {
		t.Errorf("kernel bulk phase: %.3f Gbit/s, %d body bytes for %d responses", p.Result.Gbps, p.Result.BodyBytes, p.Result.Requests)
	}
	if rep.Kernel.Close != nil && rep.Kernel.Close.Result != nil && rep.Kernel.Close.Result.Connections == 0 {
		t.Error("kernel close phase opened no connections")
	}
	switch {
	case err == nil:
		if !ok(rep.FSStack.KeepAlive) || !ok(rep.FSStack.Close) || rep.Ratios.KeepAliveRPS == 0 {
			t.Errorf("fsstack ran but reported %+v", rep.FSStack)
		}
		if rep.FSStack.Close != nil && len(rep.FSStack.Close.Shards) != 2 {
			t.Errorf("fsstack per-shard stats: %+v", rep.FSStack.Close.Shards)
		}
		// Every connection allocates (netstack's endpoint alone is
		// kilobytes): the Go server's collection counters must arrive.
		if gc := rep.FSStack.Close.GC; gc == nil || gc.AllocPerReq < 1024 {
			t.Errorf("fsstack close phase's GC cost: %+v", gc)
		}
		if rep.Kernel.Close != nil && rep.Kernel.Close.GC != nil {
			t.Errorf("the kernel's run reports fsstack's GC cost: %+v", rep.Kernel.Close.GC)
		}
	case errors.Is(err, ErrFSStackFailed):
		if rep.FSStack.Error == "" {
			t.Error("fsstack failed without an error in the report")
		}
		t.Logf("fsstack not measured (allowed here): %s", rep.FSStack.Error)
	default:
		t.Errorf("Run: %v", err)
	}
	if !strings.Contains(progress.String(), "[kernel keepalive] done") {
		t.Errorf("no progress lines")
	}
}

// TestLabNginx runs the lab with Debian's nginx: on the kernel, and under
// the LD_PRELOAD shim with `fsstack up`. The kernel side must produce
// numbers; the fsstack side either numbers whose connections the shards
// accepted, or a clear error.
func TestLabNginx(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatalf("nginx not installed (scripts/install-deps.sh installs it): %v", err)
	}
	bin := fsstackBin(t)
	lib := filepath.Join(filepath.Dir(bin), "libfsstack.so")
	if _, err := os.Stat(lib); err != nil {
		out, err := exec.Command("make", "-s", "-C", "../../preload/shim", "OUT="+lib,
			"OBJDIR="+filepath.Join(filepath.Dir(bin), "shimobj")).CombinedOutput()
		if err != nil {
			t.Fatalf("build libfsstack.so: %v\n%s", err, out)
		}
	}
	rep, err := Run(context.Background(), Options{
		Exe: bin, Server: ServerNginx, Queues: 2, Conns: 4, Duration: time.Second, Warmup: -1,
	})
	if rep == nil {
		t.Fatalf("Run: %v", err)
	}
	assertGone(t, rep, bin)
	if pids := nginxUnder(rep); len(pids) > 0 {
		t.Errorf("nginx processes left behind: %v", pids)
	}
	for _, p := range []*Phase{rep.Kernel.KeepAlive, rep.Kernel.Close, rep.Kernel.Bulk} {
		if !ok(p) {
			t.Errorf("kernel nginx phase %+v", p)
		}
	}
	switch {
	case err == nil:
		var accepted uint64
		for _, s := range rep.FSStack.Close.Shards {
			accepted += s.Accepted
		}
		if accepted == 0 {
			t.Errorf("nginx on fsstack: the shards accepted no connection: %+v", rep.FSStack.Close.Shards)
		}
		if gc := rep.FSStack.Close.GC; gc == nil || gc.AllocPerReq < 1024 {
			t.Errorf("the daemon's GC cost in the close phase: %+v", gc)
		}
	case errors.Is(err, ErrFSStackFailed):
		t.Logf("nginx on fsstack not measured (allowed here): %s", rep.FSStack.Error)
	default:
		t.Errorf("Run: %v", err)
	}
}

// nginxUnder returns nginx processes whose command line names the lab's
// temporary directory (fsstack-lab-...).
func nginxUnder(rep *Report) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "nginx") && strings.Contains(string(b), "fsstack-lab-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestLabCancel interrupts a run during the kernel phase: Run must return
// promptly, kill its children and remove its namespaces.
func TestLabCancel(t *testing.T) {
	needRoot(t)
	bin := fsstackBin(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var progress syncWriter
	go func() {
		for !strings.Contains(progress.String(), "measuring") {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	rep, err := Run(ctx, Options{Exe: bin, Queues: 1, Conns: 2, Duration: 30 * time.Second, Warmup: -1, Progress: &progress})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("cancelled run took %v", d)
	}
	if rep != nil {
		assertGone(t, rep, bin)
	}
}

// wrapper writes a shell script that runs the real binary except for the
// fsstack server, which does what fsstackCase says instead.
func wrapper(t *testing.T, bin, fsstackCase string) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "fsstack-wrapper")
	body := "#!/bin/sh\ncase \"$*\" in\n*\"--stack fsstack\"*)\n" + fsstackCase + "\n;;\nesac\nexec " + bin + " \"$@\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

// TestLabFSStackFailures injects fsstack failures (deterministically, with
// a wrapper around the real binary): the kernel numbers must still be
// reported, the fsstack error must say what happened, and everything must
// be cleaned up.
func TestLabFSStackFailures(t *testing.T) {
	needRoot(t)
	bin := fsstackBin(t)
	tests := []struct {
		name, script, want string
	}{
		{"start error", `echo '{"event":"error","stack":"fsstack","error":"start fsstack on vethX: injected failure"}'; exit 1`,
			"injected failure"},
		{"exit before ready", `echo "fsstack: cannot attach XDP: injected" >&2; exit 7`,
			"exited before it was ready: exit status 7; its last log lines:"},
		// Passes the real server's "ready" on, then dies under load,
		// however long the server took to start.
		{"dies under load", `f=$(mktemp -u); mkfifo "$f"; ` + bin + ` lab-serve --stack kernel --listen 198.18.0.1:80 >"$f" & pid=$!; ` +
			`read -r line <"$f"; rm -f "$f"; echo "$line"; sleep 0.7; kill -9 $pid; exit 3`,
			"died during the keepalive phase"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exe := wrapper(t, bin, tt.script)
			rep, err := Run(context.Background(), Options{
				Exe: exe, Queues: 1, Conns: 2, Duration: 2 * time.Second, Warmup: -1,
			})
			if !errors.Is(err, ErrFSStackFailed) || rep == nil {
				t.Fatalf("Run = %v, want ErrFSStackFailed with a report", err)
			}
			assertGone(t, rep, exe)
			if !ok(rep.Kernel.KeepAlive) || !ok(rep.Kernel.Close) {
				t.Errorf("kernel numbers missing: %+v", rep.Kernel)
			}
			if !strings.Contains(rep.FSStack.Error, tt.want) {
				t.Errorf("fsstack error %q, want it to contain %q", rep.FSStack.Error, tt.want)
			}
			if rep.Ratios != (Ratios{}) {
				t.Errorf("ratios without fsstack numbers: %+v", rep.Ratios)
			}
			var b strings.Builder
			rep.WriteTable(&b)
			if !strings.Contains(b.String(), "fsstack: FAILED:") {
				t.Errorf("table does not show the failure:\n%s", b.String())
			}
		})
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// TestCleanStale fakes the namespaces of a lab whose process was killed
// (a pid that cannot exist) and checks that CleanStale removes them, but
// not while a foreign process is inside, nor younger ones, nor a live
// lab's; a leftover lab process (an orphaned "nginx") is killed and its
// namespace removed.
func TestCleanStale(t *testing.T) {
	needRoot(t)
	id := fmt.Sprintf("%08x", uint32(time.Now().UnixNano()))
	dead := fmt.Sprintf("fs-lab-999999999-%s-", id) // pids stop at 2^22
	live := fmt.Sprintf("fs-lab-%d-%s-", os.Getpid(), id)
	names := []string{dead + "srv", dead + "cli", live + "srv"}
	only := map[string]bool{}
	for _, n := range names {
		only[n] = true
	}
	for _, n := range names {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", n, err, out)
		}
		defer exec.Command("ip", "netns", "del", n).Run()
	}
	// Young: nothing removed.
	if res, err := cleanStale(time.Hour, only); err != nil || len(res.Removed)+len(res.Kept) != 0 {
		t.Fatalf("young namespaces touched: %+v %v", res, err)
	}
	// enter starts prog (a copy of sleep named name) in ns and waits until
	// it is inside.
	enter := func(ns, name string) *exec.Cmd {
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(sleep)
		if err != nil {
			t.Fatal(err)
		}
		prog := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(prog, b, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", ns, prog, "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var a, b syscall.Stat_t
			syscall.Stat(netlab.NSPath(ns), &a)
			if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &b) == nil && a.Ino == b.Ino {
				if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); strings.TrimSpace(string(comm)) == name {
					return cmd
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never entered %s", name, ns)
			}
		}
	}
	// A foreign process inside the dead lab's server namespace keeps it;
	// an orphaned lab process in its client namespace is killed.
	sleeper := enter(dead+"srv", "sleep")
	orphan := enter(dead+"cli", "nginx")
	res, err := cleanStale(0, only)
	if err != nil || !slices.Contains(res.Removed, dead+"cli") || slices.Contains(res.Removed, dead+"srv") || slices.Contains(res.Removed, live+"srv") {
		t.Errorf("with sleep inside dead srv: %+v, %v; want only %scli removed", res, err, dead)
	}
	if len(res.Kept) != 1 || !strings.Contains(res.Kept[0], dead+"srv") || !strings.Contains(res.Kept[0], "(sleep)") {
		t.Errorf("kept %q, want %ssrv with sleep inside", res.Kept, dead)
	}
	if err := orphan.Wait(); err == nil {
		t.Error("orphaned nginx exited cleanly; want it killed")
	}
	sleeper.Process.Kill()
	sleeper.Wait()
	res, err = cleanStale(0, only)
	if err != nil || !slices.Contains(res.Removed, dead+"srv") || slices.Contains(res.Removed, live+"srv") {
		t.Errorf("after the process left: %+v, %v; want %ssrv removed", res, err, dead)
	}
	if _, err := os.Stat(netlab.NSPath(live + "srv")); err != nil {
		t.Errorf("a live lab's namespace was removed: %v", err)
	}
}
