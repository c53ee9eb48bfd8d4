//go:build linux

package conformance_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// knownStackDifferences lists programs whose transcript under the shim on
// the real daemon (`fsstack up`: gVisor netstack shards on AF_XDP) is known
// to differ from the kernel's, with the reason. As with
// knownShimDifferences, such a program still runs: a difference is
// reported as a skip with the reason, and a match fails the test so that
// the entry is removed. Differences of the shim itself are in
// knownShimDifferences and count here too.
var knownStackDifferences = map[string]string{}

// stackParallel is how many programs run at once against the daemon. The
// daemon's shards share the machine's cores with the programs; the
// transcripts report coarse timings ("immediate"), which a starved daemon
// could miss.
const stackParallel = 2

// TestStackDaemon runs every program under the shim against the real
// daemon, `fsstack up` on a 2-queue veth in a network namespace of its own
// (internal/netlab), and requires the transcript of the same program run on
// the kernel in that namespace with the same addresses.
//
// Each program is its own peer: its server binds the veth address
// (FSCONF_ADDR) and its clients connect to it from the same process. Under
// the shim both ends are fsstack sockets, and a connection to one of the
// stack's own addresses loops inside one shard's netstack, as the kernel's
// goes over lo; so every call, client side included, is answered by the
// daemon on the stack backend. See README.md, "Addresses and namespaces".
//
// It needs root (namespaces, XDP, AF_XDP) and skips without it; as root it
// fails when anything differs that knownStackDifferences does not list.
func TestStackDaemon(t *testing.T) {
	needPrograms(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, XDP, AF_XDP): the shim on the real daemon was NOT checked")
	}
	if !loopback() {
		t.Skip("FSCONF_ADDR or FSCONF_PEER is set; this test sets them itself")
	}
	lab, err := netlab.New(netlab.Options{Queues: 2, Name: "cfx"})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	dir := t.TempDir()
	fsstack, shim := buildDaemonAndShim(t, dir)
	sock := filepath.Join(dir, "fsstack.sock")
	d := startDaemon(t, fsstack, lab, sock)

	inNS := []string{"ip", "netns", "exec", lab.ServerNS}
	addr := "FSCONF_ADDR=" + lab.ServerAddr.String()
	addr6 := "FSCONF_ADDR6=" + lab.ServerAddr6.String() // t_ipv6's server: the stack's IPv6 address
	env := append(shimEnv(t, shim), "FSSTACK_SOCKET="+sock, "FSSTACK_FALLBACK=fail", addr, addr6)

	var mu sync.Mutex
	var differ []string
	sem := make(chan struct{}, stackParallel)
	t.Run("programs", func(t *testing.T) {
		for _, p := range programs {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
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
				k := executeWith(t, p, inNS, addr, addr6)
				if !k.ok {
					t.Fatalf("%s does not complete on the kernel in the namespace:\n%s\nstderr:\n%s", p.name, k.transcript, k.stderr)
				}
				s := executeWith(t, p, inNS, env...)
				keepTranscripts(t, p.name, "stack", k, s)
				known, isKnown := knownStackDifferences[p.name]
				if !isKnown {
					known, isKnown = knownShimDifferences[p.name]
				}
				if s.transcript != k.transcript && !isKnown {
					// The cases that fill a send buffer can differ when the
					// machine is starved of CPU (README, "Flaky under
					// load"): a difference counts when a second run shows
					// it too. One that does not is logged, not hidden.
					again := executeWith(t, p, inNS, env...)
					if again.transcript == k.transcript {
						t.Logf("FLAKY: %s differed from the kernel on a first run (from line %d) and matched on a second:\n%s",
							p.name, firstDifference(k.transcript, s.transcript), clip(diff("kernel", k.transcript, "stack", s.transcript), maxDiffLines))
						return
					}
				}
				if s.transcript == k.transcript {
					if isKnown {
						t.Errorf("%s now matches the kernel on the stack daemon: remove it from knownStackDifferences", p.name)
					}
					return
				}
				var ended string
				if !s.ok {
					ended = "the run under the shim did not complete; it ended with:\n" + tail(s.transcript, 5) + "\n"
				}
				if isKnown {
					// A known difference may end the program early (a
					// bind that should have failed makes a later step
					// fatal); the entry says why.
					t.Skipf("KNOWN DIFFERENCE, not a pass: %s: %s (differs from line %d)\n%s", p.name, known, firstDifference(k.transcript, s.transcript), ended)
				}
				t.Errorf("%s: under the shim on the stack daemon the transcript differs from the kernel's from line %d\n%s%s\nstderr:\n%s",
					p.name, firstDifference(k.transcript, s.transcript), ended,
					clip(diff("kernel", k.transcript, "stack", s.transcript), maxDiffLines), s.stderr)
			})
		}
	})
	sort.Strings(differ)
	list := "none"
	if len(differ) > 0 {
		list = strings.Join(differ, " ")
	}
	t.Logf("stack daemon: %d of %d programs match the kernel; differ: %s", len(programs)-len(differ), len(programs), list)
	if err := d.stop(); err != nil {
		t.Errorf("daemon: %v\n%s", err, d.log())
	}
}

// buildDaemonAndShim builds bin/fsstack and libfsstack.so from this tree
// into dir, so the test runs what it checks even without `make`.
func buildDaemonAndShim(t *testing.T, dir string) (fsstack, shim string) {
	t.Helper()
	fsstack = filepath.Join(dir, "fsstack")
	shim = filepath.Join(dir, "libfsstack.so")
	var wg sync.WaitGroup
	var errs [2]error
	wg.Add(2)
	go func() {
		defer wg.Done()
		if out, err := exec.Command("go", "build", "-o", fsstack, "../../cmd/fsstack").CombinedOutput(); err != nil {
			errs[0] = fmt.Errorf("go build fsstack: %v\n%s", err, out)
		}
	}()
	go func() {
		defer wg.Done()
		cmd := exec.Command("make", "-s", "-C", "../shim", "OBJDIR="+filepath.Join(dir, "shimobj"), "OUT="+shim)
		if out, err := cmd.CombinedOutput(); err != nil {
			errs[1] = fmt.Errorf("make shim: %v\n%s", err, out)
		}
	}()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return fsstack, shim
}

// daemonProc is a running `fsstack up`.
type daemonProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

func (d *daemonProc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// startDaemon starts `fsstack up` on the lab's server end and waits until
// it is ready. The test's cleanup stops it if the test did not.
func startDaemon(t *testing.T, bin string, lab *netlab.Lab, sock string) *daemonProc {
	t.Helper()
	d := &daemonProc{exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "up", "--iface", lab.ServerIf, "--netns", lab.ServerNS,
		"--queues", "2", "--socket", sock)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = pw
	d.cmd.Stdout = pw
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			d.mu.Lock()
			d.stderr.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if !sent && strings.Contains(sc.Text(), "daemon ready") {
				close(ready)
				sent = true
			}
		}
	}()
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() { d.stop() })
	select {
	case <-ready:
	case <-d.exited:
		t.Fatalf("fsstack up exited before it was ready: %v\n%s", d.err, d.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("fsstack up not ready after 30 s:\n%s", d.log())
	}
	return d
}

// stop ends the daemon with SIGTERM and reports how it exited; a daemon
// that died on its own before stop is an error.
func (d *daemonProc) stop() error {
	select {
	case <-d.exited:
		if d.err == nil {
			return nil // stopped before
		}
		return fmt.Errorf("fsstack up died: %v", d.err)
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("fsstack up did not stop within 15 s of SIGTERM")
	}
	if d.err != nil {
		return fmt.Errorf("fsstack up exited with %v after SIGTERM", d.err)
	}
	return nil
}
