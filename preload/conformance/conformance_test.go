package conformance_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/kernel/*.txt from this kernel's transcripts")

// runTimeout bounds one run of one program; the programs arm a 10 s
// watchdog of their own and normally finish in well under a second.
const runTimeout = 30 * time.Second

// cflags are the flags of every build. Variants add to them.
var cflags = []string{"-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-pthread"}

// fortifyFlags are added for the _fortify variants.
var fortifyFlags = []string{"-O2", "-D_FORTIFY_SOURCE=2"}

// A program is one compiled conformance program.
type program struct {
	name string // t_io, or t_io_fortify / t_io_ipv6 for a variant
	src  string // path of its .c file
	bin  string // path of the compiled binary
	base string // the program's own name (what its END line says)
	env  []string
}

var (
	binDir   string
	programs []program
	buildErr error
)

// minParallel is the default -test.parallel: the programs spend most of
// their time asleep in timed waits, so more of them than there are CPUs can
// run at once, and the kernel half stays well under a minute on two cores.
const minParallel = 8

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit && runtime.GOMAXPROCS(0) < minParallel {
		flag.Set("test.parallel", fmt.Sprint(minParallel))
	}
	dir, err := os.MkdirTemp("", "fsconf-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
	binDir = dir
	programs, buildErr = buildAll(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildAll compiles every c/t_*.c into dir. A source that contains the line
// "fsconf:variant fortify" is built a second time, as <name>_fortify, with
// -O2 -D_FORTIFY_SOURCE=2, so that glibc routes its calls through the
// __*_chk entry points the shim must intercept too. One that contains
// "fsconf:variant ipv6" also runs as <name>_ipv6: the same binary with
// FSCONF_FAMILY=6, so conf.c's helpers make IPv6 sockets on SRV6.
func buildAll(dir string) ([]program, error) {
	if _, err := exec.LookPath("gcc"); err != nil {
		return nil, fmt.Errorf("gcc is required to build the conformance programs: %w", err)
	}
	srcs, err := filepath.Glob(filepath.Join("c", "t_*.c"))
	if err != nil {
		return nil, err
	}
	if len(srcs) == 0 {
		return nil, errors.New("no programs found in c/t_*.c")
	}
	type job struct {
		p       program
		fortify bool
	}
	var jobs []job
	var ipv6 []program // variants that run an existing binary
	for _, src := range srcs {
		name := strings.TrimSuffix(filepath.Base(src), ".c")
		jobs = append(jobs, job{program{name: name, src: src, bin: filepath.Join(dir, name), base: name}, false})
		text, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		if bytes.Contains(text, []byte("fsconf:variant fortify")) {
			v := name + "_fortify"
			jobs = append(jobs, job{program{name: v, src: src, bin: filepath.Join(dir, v), base: name}, true})
		}
		if bytes.Contains(text, []byte("fsconf:variant ipv6")) {
			ipv6 = append(ipv6, program{name: name + "_ipv6", src: src, bin: filepath.Join(dir, name), base: name, env: []string{"FSCONF_FAMILY=6"}})
		}
	}
	// conf.c once per flag set, then each program against it.
	objs := map[bool]string{false: filepath.Join(dir, "conf.o"), true: filepath.Join(dir, "conf_fortify.o")}
	compile := func(fortify bool, args ...string) error {
		all := append([]string{}, cflags...)
		if fortify {
			all = append(all, fortifyFlags...)
		}
		all = append(all, "-I", "c")
		out, err := exec.Command("gcc", append(all, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("gcc %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	var objErr [2]error
	var wg sync.WaitGroup
	for i, fortify := range []bool{false, true} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			objErr[i] = compile(fortify, "-c", "-o", objs[fortify], filepath.Join("c", "conf.c"))
		}()
	}
	wg.Wait()
	if err := errors.Join(objErr[:]...); err != nil {
		return nil, err
	}
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, runtime.NumCPU())
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = compile(j.fortify, "-o", j.p.bin, j.p.src, objs[j.fortify])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	ps := make([]program, len(jobs), len(jobs)+len(ipv6))
	for i, j := range jobs {
		ps[i] = j.p
	}
	ps = append(ps, ipv6...)
	sort.Slice(ps, func(a, b int) bool { return ps[a].name < ps[b].name })
	return ps, nil
}

// A run is what one execution of a program produced.
type run struct {
	transcript string // stdout plus a final "exit ..." line
	stderr     string
	ok         bool // exited 0 after printing "END <name>"
}

// execute runs p with extra environment (KEY=VALUE) appended to a copy of
// this process's environment from which LD_PRELOAD has been removed.
func execute(t *testing.T, p program, extra ...string) run {
	t.Helper()
	return executeWith(t, p, nil, extra...)
}

// executeWith is execute with the program started through wrapper (a
// command and its arguments, such as "ip netns exec NS"), if not empty.
func executeWith(t *testing.T, p program, wrapper []string, extra ...string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	argv := append(append([]string{}, wrapper...), p.bin)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = binDir
	// A hung program is killed with everything it forked (its own process
	// group), and a straggler holding the output pipes open cannot hold
	// the run for more than WaitDelay.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LD_PRELOAD=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(append(cmd.Env, p.env...), extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		// Whatever the program forked and left behind goes with it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	var status string
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		status = "exit 0"
	case ctx.Err() != nil:
		status = fmt.Sprintf("killed after %v (hung)", runTimeout)
	case errors.As(err, &exitErr):
		status = exitErr.ProcessState.String() // "exit status 1", "signal: killed"
	default:
		t.Fatalf("run %s: %v", p.name, err)
	}
	out := stdout.String()
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return run{
		transcript: out + status + "\n",
		stderr:     stderr.String(),
		ok:         err == nil && strings.HasSuffix(out, "END "+p.base+"\n"),
	}
}

// kernel caches the first kernel run of each program, which every test
// that compares with the kernel uses: one run per program per process.
var kernel struct {
	sync.Mutex
	runs map[string]*kernelOnce
}

type kernelOnce struct {
	once sync.Once
	r    run
}

func kernelRun(t *testing.T, p program) run {
	t.Helper()
	kernel.Lock()
	if kernel.runs == nil {
		kernel.runs = map[string]*kernelOnce{}
	}
	k := kernel.runs[p.name]
	if k == nil {
		k = &kernelOnce{}
		kernel.runs[p.name] = k
	}
	kernel.Unlock()
	k.once.Do(func() { k.r = execute(t, p) })
	return k.r
}

func needPrograms(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("building the conformance programs: %v", buildErr)
	}
}

// loopback reports whether the programs run on their default addresses, the
// only configuration the checked-in kernel transcripts describe.
func loopback() bool {
	return os.Getenv("FSCONF_ADDR") == "" && os.Getenv("FSCONF_PEER") == ""
}

// TestKernel runs every program twice on the kernel: each run must complete,
// and the two transcripts must be identical — a program whose output
// depends on timing or scheduling cannot tell the shim from the kernel. On
// loopback the transcript must also match testdata/kernel/<name>.txt
// (go test -update rewrites them), so that a change in what a program
// observes is reviewed, not silently absorbed.
func TestKernel(t *testing.T) {
	needPrograms(t)
	for _, p := range programs {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			first := kernelRun(t, p)
			if !first.ok {
				t.Fatalf("%s did not complete on the kernel:\n%s\nstderr:\n%s", p.name, first.transcript, first.stderr)
			}
			second := execute(t, p)
			if second.transcript != first.transcript {
				t.Errorf("%s is not deterministic on the kernel: two runs differ\n%s",
					p.name, clip(diff("run 1", first.transcript, "run 2", second.transcript), maxDiffLines))
			}
			if !loopback() {
				return
			}
			golden := filepath.Join("testdata", "kernel", p.name+".txt")
			if *update {
				recordedRelease(t)
				if err := os.WriteFile(golden, []byte(first.transcript), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(want) == first.transcript {
				return
			}
			msg := fmt.Sprintf("%s: the kernel's transcript differs from %s\n%s", p.name, golden,
				clip(diff(golden, string(want), "this kernel", first.transcript), maxDiffLines))
			if rec := recordedRelease(t); rec != kernelRelease(t) {
				// Another kernel may answer some calls differently
				// (HZ rounding, new checks): the differential half is
				// what matters there, so say it and go on.
				t.Logf("%s\n(recorded on kernel %s, this is %s: not a failure)", msg, rec, kernelRelease(t))
				return
			}
			t.Errorf("%s\n(a program changed, or the kernel did: review and go test -update)", msg)
		})
	}
}

// TestKernelAddresses runs the programs that print addresses with
// FSCONF_ADDR and FSCONF_PEER set to two other loopback addresses, the way
// a namespace harness will: they must complete, client addresses must show
// as PEER, and otherwise the transcript must be the loopback one.
func TestKernelAddresses(t *testing.T) {
	needPrograms(t)
	if !loopback() {
		t.Skip("FSCONF_ADDR or FSCONF_PEER is already set")
	}
	for _, p := range programs {
		if p.name != "t_socket" && p.name != "t_connect" && p.name != "t_fork" {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			k := kernelRun(t, p)
			r := execute(t, p, "FSCONF_ADDR=127.0.0.2", "FSCONF_PEER=127.0.0.3")
			if !r.ok {
				t.Fatalf("%s did not complete with FSCONF_ADDR/FSCONF_PEER set:\n%s\nstderr:\n%s", p.name, r.transcript, r.stderr)
			}
			if p.name == "t_socket" && !strings.Contains(r.transcript, "PEER:") {
				t.Errorf("t_socket shows no client address as PEER: FSCONF_PEER was not used")
			}
			if got := strings.ReplaceAll(r.transcript, "PEER:", "SRV:"); got != k.transcript {
				t.Errorf("%s with FSCONF_ADDR/FSCONF_PEER differs from loopback beyond PEER addresses:\n%s",
					p.name, clip(diff("loopback", k.transcript, "127.0.0.2/3", got), maxDiffLines))
			}
		})
	}
}

// releaseFile records the kernel release the transcripts were made on.
var releaseFile = filepath.Join("testdata", "kernel", "RELEASE")

var releaseOnce sync.Once

func kernelRelease(t *testing.T) string {
	t.Helper()
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// recordedRelease reads releaseFile; under -update it writes it first.
func recordedRelease(t *testing.T) string {
	t.Helper()
	if *update {
		releaseOnce.Do(func() {
			if err := os.WriteFile(releaseFile, []byte(kernelRelease(t)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
	b, err := os.ReadFile(releaseFile)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// TestShim runs every program under LD_PRELOAD=$FSSTACK_SHIM and requires
// the kernel's transcript. The daemon is the one at $FSSTACK_SOCKET if that
// is set, otherwise one this test runs in-process on the kernel's TCP stack
// (what preload/shimd serves), which checks the shim itself; `make test`
// runs it so. FSSTACK_FALLBACK=fail (unless set otherwise) makes the shim
// refuse instead of quietly handing sockets to the kernel when the daemon
// is not there, and FSCONF_REQUIRE_MAPPED makes each program check that
// the shim really is mapped, so a half-configured run cannot pass.
func TestShim(t *testing.T) {
	needPrograms(t)
	shim := os.Getenv("FSSTACK_SHIM")
	if shim == "" {
		t.Skip("FSSTACK_SHIM is not set, so the shim half of the suite did NOT run " +
			"(only the kernel half did): set FSSTACK_SHIM=/path/to/libfsstack.so (`make test` does), " +
			"or use `make shimd SHIM=/path/to/libfsstack.so`")
	}
	env := shimEnv(t, shim)
	if os.Getenv("FSSTACK_SOCKET") == "" {
		env = append(env, "FSSTACK_SOCKET="+startKernelDaemon(t))
	} else {
		t.Logf("against the daemon at FSSTACK_SOCKET=%s", os.Getenv("FSSTACK_SOCKET"))
	}
	if os.Getenv("FSSTACK_FALLBACK") == "" {
		env = append(env, "FSSTACK_FALLBACK=fail")
	}
	compareWithKernel(t, "shim", env)
}

// TestShimDisabled runs every program under the shim with FSSTACK_DISABLE=1:
// every socket stays a kernel socket, so this checks the interposition layer
// alone (wrappers, fd table, passthrough), which every application goes
// through, daemon or not.
func TestShimDisabled(t *testing.T) {
	needPrograms(t)
	shim := os.Getenv("FSSTACK_SHIM")
	if shim == "" {
		t.Skip("FSSTACK_SHIM is not set, so the shim's passthrough was NOT checked")
	}
	compareWithKernel(t, "shim-disabled", append(shimEnv(t, shim), "FSSTACK_DISABLE=1"))
}

// shimEnv is the environment of a run under the shim at path.
func shimEnv(t *testing.T, path string) []string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() {
		t.Fatalf("FSSTACK_SHIM=%s: not a file (%v)", path, err)
	}
	return []string{"LD_PRELOAD=" + abs, "FSCONF_REQUIRE_MAPPED=" + abs}
}

// compareWithKernel runs every program with env added and requires the
// kernel's transcript; mode names the runs in messages and files.
// knownShimDifferences lists programs whose shim transcript is known to
// differ from the kernel's, with the reason. Such a program is still run:
// if it differs it is skipped with the reason (visible in the output), and
// if it matches the test fails so that the entry is removed.
var knownShimDifferences = map[string]string{}

func compareWithKernel(t *testing.T, mode string, env []string) {
	t.Helper()
	var mu sync.Mutex
	var differ []string
	t.Cleanup(func() {
		// After every parallel subtest: one line to read first.
		sort.Strings(differ)
		list := "none"
		if len(differ) > 0 {
			list = strings.Join(differ, " ")
		}
		t.Logf("%s: %d of %d programs match the kernel; differ: %s",
			mode, len(programs)-len(differ), len(programs), list)
	})
	for _, p := range programs {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				if t.Failed() || t.Skipped() {
					name := p.name
					if !t.Failed() {
						name += "(known)"
					}
					mu.Lock()
					differ = append(differ, name)
					mu.Unlock()
				}
			}()
			k := kernelRun(t, p)
			if !k.ok {
				t.Fatalf("%s does not complete on the kernel, so there is nothing to compare with:\n%s", p.name, k.transcript)
			}
			s := execute(t, p, env...)
			keepTranscripts(t, p.name, mode, k, s)
			known, isKnown := knownShimDifferences[p.name]
			isKnown = isKnown && mode == "shim"
			if s.transcript == k.transcript {
				if isKnown {
					t.Errorf("%s now matches the kernel under the shim: remove it from knownShimDifferences", p.name)
				}
				return
			}
			if isKnown && s.ok {
				t.Skipf("KNOWN DIFFERENCE, not a pass: %s: %s (differs from line %d)", p.name, known, firstDifference(k.transcript, s.transcript))
			}
			var ended string
			if !s.ok {
				ended = "the " + mode + " run did not complete; it ended with:\n" + tail(s.transcript, 5) + "\n"
			}
			t.Errorf("%s: the %s run differs from the kernel from line %d\n%s%s\n%s stderr:\n%s",
				p.name, mode, firstDifference(k.transcript, s.transcript), ended,
				clip(diff("kernel", k.transcript, mode, s.transcript), maxDiffLines), mode, s.stderr)
		})
	}
}

// keepTranscripts writes both transcripts (and the shim run's stderr) to
// $FSCONF_OUT/<name>.{kernel,<mode>,<mode>-stderr}.txt when FSCONF_OUT
// names a directory, for reading side by side or diffing with other tools.
func keepTranscripts(t *testing.T, name, mode string, k, s run) {
	t.Helper()
	dir := os.Getenv("FSCONF_OUT")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("FSCONF_OUT: %v", err)
	}
	for suffix, text := range map[string]string{"kernel": k.transcript, mode: s.transcript, mode + "-stderr": s.stderr} {
		if err := os.WriteFile(filepath.Join(dir, name+"."+suffix+".txt"), []byte(text), 0o644); err != nil {
			t.Fatalf("FSCONF_OUT: %v", err)
		}
	}
}

// maxDiffLines caps a diff in a failure message: a shim that fails early
// differs on every later line, and the first screenful says why.
const maxDiffLines = 120

// clip keeps the first n lines of s.
func clip(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return strings.Join(lines[:n], "") + fmt.Sprintf("... (%d more lines of diff)\n", len(lines)-n)
}

// firstDifference returns the 1-based number of the first line where a and
// b differ.
func firstDifference(a, b string) int {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return i + 1
		}
	}
	return min(len(x), len(y)) + 1
}

// tail returns the last n lines of s, indented.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	lines = lines[max(0, len(lines)-n):]
	return "    " + strings.Join(lines, "\n    ")
}
