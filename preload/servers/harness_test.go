package servers

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// Modes a server runs in.
const (
	modeFallback = "fallback" // shim loaded, no daemon: FSSTACK_FALLBACK=kernel
	modeFsstack  = "fsstack"  // shim loaded, `fsstack up` on the lab's server interface
)

var modes = []string{modeFallback, modeFsstack}

// labQueues is the number of queues on each veth end (and shards of the daemon).
const labQueues = 4

// warnRE matches the shim's one line when the daemon cannot be reached
// (preload/shim/init.c); group 1 is the pid, group 2 the socket path.
var warnRE = regexp.MustCompile(`(?m)^fsstack\[(\d+)\]: cannot attach to the fsstack daemon at (\S+): .*; falling back to the kernel's TCP stack$`)

// attachFailRE matches any attach failure line, whatever the fallback.
var attachFailRE = regexp.MustCompile(`(?m)^fsstack\[(\d+)\]: cannot attach to the fsstack daemon at .*$`)

var (
	buildOnce  sync.Once
	buildDir   string
	fsstackBin string
	shimLib    string
	useRun     bool // bin/fsstack has a working `run` command
	buildErr   error
)

func TestMain(m *testing.M) {
	flag.Parse()
	sweepStale()
	disarm := guardRun()
	code := m.Run()
	disarm()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// repoRoot walks up from the working directory to the module's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module github.com/fsstack/fsstack")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/fsstack/fsstack above the working directory")
		}
		dir = parent
	}
}

// build compiles bin/fsstack and libfsstack.so into a temporary directory,
// once per package run, so that concurrent builds in the repository's bin/
// are not disturbed.
func build() {
	root, err := repoRoot()
	if err != nil {
		buildErr = err
		return
	}
	buildDir, err = mkTemp("bin")
	if err != nil {
		buildErr = err
		return
	}
	fsstackBin = filepath.Join(buildDir, "fsstack")
	shimLib = filepath.Join(buildDir, "libfsstack.so")
	cmd := exec.Command("go", "build", "-o", fsstackBin, "./cmd/fsstack")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as the Makefile builds it
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build ./cmd/fsstack: %v\n%s", err, out)
		return
	}
	cmd = exec.Command("make", "-s", "-j", strconv.Itoa(runtime.NumCPU()), "-C", filepath.Join(root, "preload", "shim"),
		"OUT="+shimLib, "OBJDIR="+filepath.Join(buildDir, "obj"))
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("make -C preload/shim: %v\n%s", err, out)
		return
	}
	// `fsstack run` is used when the command is registered; until then the
	// tests set what it would set (LD_PRELOAD, FSSTACK_SOCKET, FSSTACK_FALLBACK).
	useRun = exec.Command(fsstackBin, "run", "--help").Run() == nil
}

// built returns the paths of the binaries, building them on first use.
func built(t *testing.T) {
	t.Helper()
	buildOnce.Do(build)
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
}

// needTools fails (not skips) when a package the tests use is missing:
// scripts/install-deps.sh installs them.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range append([]string{"ip", "ss", "curl"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-deps.sh as root", tool)
		}
	}
}

// rig is one test's world: a lab, a temp dir, maybe a daemon.
type rig struct {
	t    *testing.T
	mode string
	lab  *netlab.Lab
	dir  string // per-test, removed at the end
	sock string // FSSTACK_SOCKET for the server
	// env is added to the environment of what startServer runs in the
	// server namespace (`fsstack run` with an inherited LD_PRELOAD, for
	// example), by env(1) after `ip netns exec`, which it must not reach.
	env    []string
	daemon *proc // nil in fallback mode
}

// newRig builds what a test needs. In fsstack mode it starts the daemon
// and skips the test if (and only if) the daemon does not speak the shim's
// attach protocol.
func newRig(t *testing.T, mode string, tools ...string) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the tests create network namespaces")
	}
	needTools(t, tools...)
	built(t)
	dir, err := mkTemp("test")
	if err != nil {
		t.Fatal(err)
	}
	if !track(nil, dir) {
		os.RemoveAll(dir)
		t.Fatal("the run is being torn down")
	}
	t.Cleanup(func() {
		untrack(nil, dir)
		os.RemoveAll(dir)
	})
	l, err := netlab.New(netlab.Options{Queues: labQueues, Name: "srv"})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	if !track(l, "") {
		l.Close()
		t.Fatal("the run is being torn down")
	}
	t.Cleanup(func() {
		untrack(l, "")
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	r := &rig{t: t, mode: mode, lab: l, dir: dir}
	switch mode {
	case modeFallback:
		// A path where no daemon can be: the shim must fall back.
		r.sock = filepath.Join(dir, "no-daemon", "fsstack.sock")
	case modeFsstack:
		r.sock = filepath.Join(dir, "run", "fsstack.sock")
		r.startDaemon()
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	return r
}

// startDaemon runs `fsstack up` on the lab's server interface and waits
// until it is ready; then it checks that the control socket speaks the
// shim's attach protocol.
func (r *rig) startDaemon() {
	t := r.t
	t.Helper()
	cmd := exec.Command(fsstackBin, "up", "--iface", r.lab.ServerIf, "--netns", r.lab.ServerNS,
		"--queues", strconv.Itoa(labQueues), "--socket", r.sock)
	r.daemon = r.startCmd("fsstack-up", cmd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fsstack up's log (the last 40 lines):\n%s", lastLines(r.daemon.output(), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(r.daemon.output(), "daemon ready") {
		if r.daemon.exited() {
			t.Fatalf("fsstack up exited before it was ready: %v\n%s", r.daemon.waitErr(), r.daemon.output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("fsstack up not ready after 30s:\n%s", r.daemon.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if reason, err := probeAttach(r.sock); err != nil {
		t.Fatalf("attach probe on %s: %v\ndaemon log:\n%s", r.sock, err, r.daemon.output())
	} else if reason != "" {
		t.Skip(reason)
	}
}

// abiVersion reads FSS_ABI_VERSION from the header. The probe does not
// depend on it (any FSSR reply, even a refusal of the version, proves the
// daemon speaks the attach protocol), but a matching version keeps the
// daemon's log quiet.
func abiVersion() uint32 {
	root, err := repoRoot()
	if err != nil {
		return 1
	}
	b, err := os.ReadFile(filepath.Join(root, "preload", "include", "fsstack_abi.h"))
	if err != nil {
		return 1
	}
	m := regexp.MustCompile(`(?m)^#define FSS_ABI_VERSION (\d+)`).FindSubmatch(b)
	if m == nil {
		return 1
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 32)
	return uint32(v)
}

// probeAttach sends the shim's attach hello (docs/SHIM_PROTOCOL.md) to the
// control socket. It returns "" if the daemon answers with an FSSR reply
// (it speaks the attach protocol), a skip reason if it answers with JSON
// only (the control server is not wired to the shim's daemon side), and
// an error for anything else.
func probeAttach(sock string) (skipReason string, err error) {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	hello := make([]byte, 32)
	copy(hello, "FSSA")
	binary.LittleEndian.PutUint32(hello[4:], abiVersion())
	binary.LittleEndian.PutUint32(hello[8:], 32)
	binary.LittleEndian.PutUint32(hello[12:], uint32(os.Getpid()))
	if _, err := uc.Write(hello); err != nil {
		return "", fmt.Errorf("send hello: %w", err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(4*8))
	read := func(d time.Duration) (int, error) {
		uc.SetReadDeadline(time.Now().Add(d))
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		if oobn > 0 {
			if msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if fds, ferr := syscall.ParseUnixRights(&m); ferr == nil {
						for _, fd := range fds {
							syscall.Close(fd)
						}
					}
				}
			}
		}
		return n, err
	}
	n, err := read(3 * time.Second)
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		// A line-delimited JSON server waits for the end of the line;
		// end it, and it answers with its error reply.
		if _, werr := uc.Write([]byte("\n")); werr != nil {
			return "", fmt.Errorf("no reply to the hello in 3s, then: %w", werr)
		}
		n, err = read(5 * time.Second)
	}
	got := buf[:n]
	switch {
	case n >= 4 && string(got[:4]) == "FSSR":
		return "", nil
	case n > 0 && got[0] == '{' && json.Valid(bytes.TrimSpace(got)):
		return fmt.Sprintf("fsstack up does not serve the LD_PRELOAD shim yet: its control socket %s answered "+
			"the shim's attach hello with JSON only (%s), not an FSSR reply (docs/SHIM_PROTOCOL.md section 6)",
			sock, strings.TrimSpace(string(got))), nil
	default:
		return "", fmt.Errorf("neither an FSSR reply nor JSON: %q, %v", got, err)
	}
}

// proc is a process group started by a test; it is killed at the end of
// the test whatever happens.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startCmd starts cmd in its own process group with stdout and stderr in
// a file of the test's dir.
func (r *rig) startCmd(name string, cmd *exec.Cmd) *proc {
	t := r.t
	t.Helper()
	p := &proc{name: name, cmd: cmd, logPath: filepath.Join(r.dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	trackProc(p, r.dir)
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM, 5*time.Second)
		untrackProc(p)
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitErr returns the exit error once the process exited.
func (p *proc) waitErr() error {
	<-p.done
	return p.err
}

// stop signals the process group, waits up to grace for the leader, then
// kills the group. It reports whether the leader exited within grace.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) bool {
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, sig)
	ok := true
	select {
	case <-p.done:
	case <-time.After(grace):
		ok = false
	}
	// Whatever is left of the group (workers) goes too.
	syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
	return ok
}

// stopWatch is stop, but when the leader does not exit within grace it
// first describes the group's processes (state, kernel wait channel,
// command line) for the failure message.
func (p *proc) stopWatch(sig syscall.Signal, grace time.Duration) (bool, string) {
	syscall.Kill(-p.pid(), sig)
	select {
	case <-p.done:
		p.stop(syscall.SIGKILL, 5*time.Second) // what is left of the group
		return true, ""
	case <-time.After(grace):
	}
	left := groupInfo(p.pid())
	p.stop(syscall.SIGKILL, 5*time.Second)
	return false, left
}

// groupInfo describes the live processes of process group pgid.
func groupInfo(pgid int) string {
	var sb strings.Builder
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		syscallLine, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		fmt.Fprintf(&sb, "  pid %d state %s wchan %s syscall %s: %s\n", pid, f[0], wchan,
			strings.Fields(string(syscallLine) + " ?")[0], strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")))
		if f[0] != "Z" {
			sb.WriteString(backtrace(pid))
		}
	}
	return sb.String()
}

// shimEnv is what `fsstack run` sets.
func (r *rig) shimEnv() []string {
	return []string{"LD_PRELOAD=" + shimLib, "FSSTACK_SOCKET=" + r.sock, "FSSTACK_FALLBACK=kernel"}
}

// startServer runs argv in the server namespace under the shim.
func (r *rig) startServer(name string, argv ...string) *proc {
	r.t.Helper()
	var args []string
	if useRun {
		args = append([]string{fsstackBin, "run", "--socket", r.sock, "--lib", shimLib, "--fallback", "kernel", "--"}, argv...)
	} else {
		args = append(append([]string{"env"}, r.shimEnv()...), argv...)
	}
	if len(r.env) > 0 {
		args = append(append([]string{"env"}, r.env...), args...)
	}
	cmd := r.lab.Cmd(r.lab.ServerNS, args[0], args[1:]...)
	cmd.Env = os.Environ()
	p := r.startCmd(name, cmd)
	how := "env LD_PRELOAD=libfsstack.so"
	if useRun {
		how = "fsstack run"
	}
	r.t.Logf("%s (pid %d) under the shim via %s, FSSTACK_SOCKET=%s %s", name, p.pid(), how, r.sock, strings.Join(r.env, " "))
	return p
}

// waitListen dials addr from the client namespace until it connects, the
// server exits or 30 s pass.
func (r *rig) waitListen(p *proc, port int, logs ...string) {
	t := r.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := r.dial(port, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if p.exited() {
			t.Fatalf("%s exited before it listened on port %d: %v\n%s%s", p.name, port, p.waitErr(), p.output(), r.files(logs...))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept on %s:%d after 30s (last: %v)\n%s%s", p.name, r.lab.ServerAddr, port, err, p.output(), r.files(logs...))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkKernelListener asserts who listens on port in the server
// namespace: a kernel socket in fallback mode (the shim handed the socket
// to the kernel), none in fsstack mode (the listener lives on fsstack;
// the shim's placeholder is an unbound kernel socket) except on
// 127.0.0.1: a listener on 0.0.0.0 also listens there on its placeholder,
// for kernel clients of the namespace (FSS_CMPL_LISTEN_LOOPBACK).
func (r *rig) checkKernelListener(port int) {
	t := r.t
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", r.lab.ServerNS, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	var other []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// the loopback side of a wildcard listener (127.0.0.1, or [::1]
		// for an AF_INET6 one) is the placeholder's
		if f := strings.Fields(line); len(f) >= 4 && f[3] != fmt.Sprintf("127.0.0.1:%d", port) && f[3] != fmt.Sprintf("[::1]:%d", port) {
			other = append(other, line)
		}
	}
	listening := strings.TrimSpace(string(out)) != ""
	switch {
	case r.mode == modeFallback && !listening:
		t.Errorf("fallback: no kernel socket listens on port %d in the server namespace", port)
	case r.mode == modeFsstack && len(other) > 0:
		t.Errorf("fsstack: a kernel socket listens on port %d in the server namespace, so the server is not on fsstack:\n%s", port, out)
	}
}

// files returns the contents of files in the test's dir, for failure messages.
func (r *rig) files(names ...string) string {
	var sb strings.Builder
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(r.dir, n))
		if err != nil {
			continue
		}
		fmt.Fprintf(&sb, "\n--- %s ---\n%s", n, b)
	}
	return sb.String()
}

// dial connects to the server address from the client namespace.
func (r *rig) dial(port int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netlab.Do(r.lab.ClientNS, func() error {
		var err error
		c, err = net.DialTimeout("tcp", net.JoinHostPort(r.lab.ServerAddr.String(), strconv.Itoa(port)), timeout)
		return err
	})
	return c, err
}

// client runs a command in the client namespace (never under the shim),
// bounded by timeout; it returns stdout, stderr and the error.
func (r *rig) client(timeout time.Duration, name string, args ...string) (stdout []byte, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := r.lab.Cmd(r.lab.ClientNS, name, args...)
	cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s did not finish in %v: %w", name, timeout, ctx.Err())
	}
	return so.Bytes(), se.String(), err
}

// checkShimLines checks the shim's stderr lines in logs (the server's
// output and the files it redirects stderr to). In fallback mode there
// must be exactly one warning about the unreachable daemon, from pid; the
// shim says so once per process, and forked children inherit the decision
// (init.c). In fsstack mode there must be none.
func (r *rig) checkShimLines(p *proc, files ...string) {
	t := r.t
	t.Helper()
	all := p.output() + r.files(files...)
	switch r.mode {
	case modeFallback:
		warns := warnRE.FindAllStringSubmatch(all, -1)
		fails := attachFailRE.FindAllString(all, -1)
		if len(warns) != 1 || len(fails) != 1 {
			t.Errorf("want exactly one shim line about the unreachable daemon, got %d (%d attach failures):\n%s", len(warns), len(fails), all)
			return
		}
		if warns[0][1] != strconv.Itoa(p.pid()) || warns[0][2] != r.sock {
			t.Errorf("shim warning names pid %s and %s, want pid %d (the server) and %s:\n%s", warns[0][1], warns[0][2], p.pid(), r.sock, warns[0][0])
		}
		t.Logf("shim: %s", warns[0][0])
	case modeFsstack:
		if fails := attachFailRE.FindAllString(all, -1); len(fails) > 0 {
			t.Errorf("the shim did not attach to the running daemon:\n%s", strings.Join(fails, "\n"))
		}
	}
}

// statsReply is `fsstack stats --json`.
type statsReply struct {
	Shards []struct {
		Shard    int    `json:"shard"`
		Accepted uint64 `json:"accepted"`
		Open     int64  `json:"open"`
	} `json:"shards"`
	Shim *struct {
		Clients  int    `json:"clients"`
		Sockets  int    `json:"sockets"`
		Attached uint64 `json:"attached"`
		Refused  uint64 `json:"refused"`
		Dropped  uint64 `json:"dropped"`
	} `json:"shim"`
}

func (r *rig) stats() statsReply {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, fsstackBin, "stats", "--json", "--socket", r.sock).Output()
	if err != nil {
		t.Fatalf("fsstack stats --json: %v\n%s", err, out)
	}
	var s statsReply
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("fsstack stats --json: %v\n%s", err, out)
	}
	return s
}

// checkAccepted asserts, in fsstack mode, that the daemon's shards
// accepted at least min connections and that at least clients shim
// clients (processes) are attached now.
func (r *rig) checkAccepted(min uint64, clients int) {
	t := r.t
	t.Helper()
	if r.mode != modeFsstack {
		return
	}
	s := r.stats()
	var sum uint64
	var per []string
	for _, sh := range s.Shards {
		sum += sh.Accepted
		per = append(per, fmt.Sprintf("%d:%d", sh.Shard, sh.Accepted))
	}
	t.Logf("fsstack accepted %d connections (per shard %s); shim %+v", sum, strings.Join(per, " "), s.Shim)
	if len(s.Shards) != labQueues {
		t.Errorf("stats show %d shards, want %d", len(s.Shards), labQueues)
	}
	if sum == 0 || sum < min {
		t.Errorf("the shards accepted %d connections, want at least %d (> 0): the server's traffic did not go through fsstack", sum, min)
	}
	if s.Shim == nil {
		t.Errorf("stats have no shim section")
	} else if s.Shim.Clients < clients {
		t.Errorf("%d shim clients attached now, want at least %d", s.Shim.Clients, clients)
	}
}

// forModes runs fn once per mode, as subtests.
func forModes(t *testing.T, fn func(t *testing.T, mode string)) {
	for _, m := range modes {
		t.Run(m, func(t *testing.T) { fn(t, m) })
	}
}

// lastLines keeps the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// checkReleased asserts, in fsstack mode, that once the server's processes
// are gone the daemon dropped their clients and sockets (EOF on the attach
// connection releases every reference, docs/SHIM_PROTOCOL.md section 1),
// and that the daemon stops cleanly on SIGTERM.
func (r *rig) checkReleased() {
	t := r.t
	t.Helper()
	if r.mode != modeFsstack {
		return
	}
	var s statsReply
	for end := time.Now().Add(10 * time.Second); ; {
		s = r.stats()
		if s.Shim != nil && s.Shim.Clients == 0 && s.Shim.Sockets == 0 {
			break
		}
		if time.Now().After(end) {
			t.Errorf("10s after the server exited the daemon still has shim clients or sockets: %+v", s.Shim)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !r.daemon.stop(syscall.SIGTERM, 15*time.Second) {
		t.Errorf("fsstack up did not stop within 15s of SIGTERM")
	} else if err := r.daemon.waitErr(); err != nil {
		t.Errorf("fsstack up after SIGTERM: %v", err)
	}
}

// backtrace returns gdb's backtrace of every thread of pid, indented, or
// "" without gdb.
func backtrace(pid int) string {
	if _, err := exec.LookPath("gdb"); err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "gdb", "-p", strconv.Itoa(pid), "-batch", "-nx",
		"-ex", "set pagination off", "-ex", "thread apply all bt 25").CombinedOutput()
	var sb strings.Builder
	for l := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "Thread ") {
			sb.WriteString("      " + l + "\n")
		}
	}
	return sb.String()
}
