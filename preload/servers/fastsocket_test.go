package servers

import (
	"errors"
	"fmt"
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
)

var (
	fsockOnce sync.Once
	fsockBin  string
	fsockErr  error
)

// fastsocketProgram builds preload/shim/tests/t_fastsocket.c, a program
// written against Fastsocket's /dev/fastsocket ioctl ABI, next to the shim.
func fastsocketProgram(t *testing.T) string {
	t.Helper()
	built(t)
	fsockOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			fsockErr = err
			return
		}
		obj := filepath.Join(buildDir, "obj")
		fsockBin = filepath.Join(obj, "t_fastsocket")
		cmd := exec.Command("make", "-s", "-C", filepath.Join(root, "preload", "shim"),
			"OUT="+shimLib, "OBJDIR="+obj, fsockBin)
		if out, err := cmd.CombinedOutput(); err != nil {
			fsockErr = fmt.Errorf("make t_fastsocket: %v\n%s", err, out)
		}
	})
	if fsockErr != nil {
		t.Fatal(fsockErr)
	}
	return fsockBin
}

var fsockBodyRE = regexp.MustCompile(`^fastsocket worker [01] cpu \d+\n$`)

// TestFastsocket runs a server written against fastsocket.ko's ioctl ABI
// under the shim: it opens /dev/fastsocket, creates its socket and listens
// by ioctl, forks two workers that SPAWN their listener and
// ACCEPT/read/write/CLOSE by ioctl. With `fsstack up` serving the lab
// (fsstack mode) curl in the client namespace is served through the
// shards; with no daemon (fallback mode) the device does not exist, as on
// a kernel without the module, and the program says so.
func TestFastsocket(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		bin := fastsocketProgram(t)
		r := newRig(t, mode)
		const port = 8090
		p := r.startServer("t_fastsocket", bin, "serve", r.lab.ServerAddr.String(), strconv.Itoa(port), "2")
		if mode == modeFallback {
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("t_fastsocket still runs without a daemon:\n%s", p.output())
			}
			var ee *exec.ExitError
			if err := p.waitErr(); !errors.As(err, &ee) || ee.ExitCode() != 4 ||
				!strings.Contains(p.output(), "open /dev/fastsocket: No such file or directory") {
				t.Errorf("without a daemon: %v, want exit 4 and ENOENT:\n%s", err, p.output())
			}
			r.checkShimLines(p)
			return
		}
		r.waitListen(p, port)
		r.checkKernelListener(port)
		const n = 40
		seen := map[string]int{}
		for i := range n {
			out, errs, err := r.client(10*time.Second, "curl", "-sS", "-m", "5",
				fmt.Sprintf("http://%s:%d/", r.lab.ServerAddr, port))
			if err != nil || !fsockBodyRE.Match(out) {
				t.Fatalf("request %d: %v %q %s\nserver:\n%s", i, err, out, errs, p.output())
			}
			seen[strings.TrimSpace(string(out))]++
		}
		t.Logf("served by: %v", seen)
		// SPAWN pinned each worker to one CPU; with -1 the shim spreads
		// workers that attach one after another over the allowed CPUs.
		cpuOf := map[string]string{}
		for body := range seen {
			f := strings.Fields(body) // fastsocket worker W cpu C
			if prev, ok := cpuOf[f[2]]; ok && prev != f[4] {
				t.Errorf("worker %s answered from CPUs %s and %s after it was pinned", f[2], prev, f[4])
			}
			cpuOf[f[2]] = f[4]
		}
		if runtime.NumCPU() >= 2 && len(cpuOf) == 2 && cpuOf["0"] == cpuOf["1"] {
			t.Errorf("both workers were pinned to CPU %s", cpuOf["0"])
		}
		r.checkAccepted(n, 3) // the master and its two workers are attached
		if ok, left := p.stopWatch(syscall.SIGTERM, 10*time.Second); !ok {
			t.Errorf("t_fastsocket did not stop within 10s of SIGTERM; its processes then:\n%s", left)
		} else if err := p.waitErr(); err != nil {
			t.Errorf("t_fastsocket after SIGTERM: %v\n%s", err, p.output())
		}
		r.checkReleased()
		r.checkShimLines(p)
	})
}
