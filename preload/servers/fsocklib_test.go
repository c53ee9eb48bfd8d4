package servers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	doubleOnce sync.Once
	doubleLib  string
	doubleErr  error
)

// fsocketDouble builds preload/shim/tests/libfsocket_double.c, the
// project's stand-in for Fastsocket's libfsocket.so: a preloaded library
// whose socket, listen, accept, close, shutdown and epoll_ctl wrappers issue
// /dev/fastsocket ioctls, and whose constructor exits 255 without the
// device.
func fsocketDouble(t *testing.T) string {
	t.Helper()
	built(t)
	doubleOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			doubleErr = err
			return
		}
		obj := filepath.Join(buildDir, "obj")
		doubleLib = filepath.Join(obj, "libfsocket_double.so")
		cmd := exec.Command("make", "-s", "-C", filepath.Join(root, "preload", "shim"),
			"OUT="+shimLib, "OBJDIR="+obj, doubleLib)
		if out, err := cmd.CombinedOutput(); err != nil {
			doubleErr = fmt.Errorf("make libfsocket_double.so: %v\n%s", err, out)
		}
	})
	if doubleErr != nil {
		t.Fatal(doubleErr)
	}
	return doubleLib
}

// fsockShortConns is how many Connection: close requests each server gets.
const fsockShortConns = 2000

// TestFastsocketLibrary runs servers as a site that uses Fastsocket's
// library would: the library (here the project's double) in LD_PRELOAD,
// started by `fsstack run` against `fsstack up` on the lab, in both
// orders: the double on top of the shim (LD_PRELOAD=double fsstack run,
// the order fsstack run composes) and the shim on top (LD_PRELOAD=shim:double,
// a place fsstack run keeps). nginx (a master and 2 workers) and the
// Fastsocket-ABI server (t_fastsocket serve, 2 workers) each serve curl and
// fsockShortConns short connections from the client namespace with no
// failure; no process crashes or closes an fd twice, and the double's
// counts show its wrappers were in the path.
func TestFastsocketLibrary(t *testing.T) {
	for _, order := range []string{"double-first", "shim-first"} {
		t.Run(order, func(t *testing.T) {
			double := fsocketDouble(t)
			bin := fastsocketProgram(t)
			r := newRig(t, modeFsstack, "nginx")
			stats := filepath.Join(r.dir, "double.stats")
			preload := double
			if order == "shim-first" {
				preload = shimLib + ":" + double
			}
			r.env = []string{"LD_PRELOAD=" + preload, "FSOCK_DOUBLE_STATS=" + stats}

			p, files := startNginx(r, false)
			for name, want := range files {
				r.checkGet(name, want)
			}
			r.curlClose(fsockShortConns)
			r.checkAccepted(fsockShortConns+2, 3)
			if ok, left := p.stopWatch(syscall.SIGQUIT, 10*time.Second); !ok {
				t.Errorf("nginx did not stop within 10s of SIGQUIT; its processes then:\n%s", left)
			}
			log := r.files("error.log")
			if crashes := crashLines(log); crashes != "" {
				t.Errorf("nginx processes crashed:\n%s", crashes)
			}
			if bad := regexpLine(log, `\[(emerg|alert|crit)\]`); bad != "" {
				t.Errorf("nginx logged a failure (a call served twice or not at all?): %s\n%s", bad, log)
			}
			if strings.Contains(p.output(), "libfsocket double:") {
				t.Errorf("an ioctl of the double failed:\n%s", p.output())
			}
			r.checkShimLines(p, "error.log")
			nginxCounts := doubleCounts(t, stats)
			os.Remove(stats)

			const port = 8090
			f := r.startServer("t_fastsocket", bin, "serve", r.lab.ServerAddr.String(), strconv.Itoa(port), "2")
			r.waitListen(f, port)
			r.checkKernelListener(port)
			url := fmt.Sprintf("http://%s:%d/", r.lab.ServerAddr, port)
			out, errs, err := r.client(10*time.Second, "curl", "-sS", "-m", "5", url)
			if err != nil || !fsockBodyRE.Match(out) {
				t.Fatalf("curl %s: %v %q %s\nserver:\n%s", url, err, out, errs, f.output())
			}
			r.curlCloseURL(fsockShortConns, url, regexp.MustCompile(`^200 1 [1-9][0-9]*$`))
			if ok, left := f.stopWatch(syscall.SIGTERM, 10*time.Second); !ok {
				t.Errorf("t_fastsocket did not stop within 10s of SIGTERM; its processes then:\n%s", left)
			} else if err := f.waitErr(); err != nil {
				t.Errorf("t_fastsocket after SIGTERM: %v\n%s", err, f.output())
			}
			r.checkShimLines(f)
			serveCounts := doubleCounts(t, stats)
			r.checkReleased()

			t.Logf("ioctls the double issued: nginx %v; t_fastsocket %v", nginxCounts, serveCounts)
			// On top, the double turns every listen, accept and close
			// into an ioctl and spawns the workers' listeners; below the
			// shim, it sees only what the shim passes on: closes of
			// kernel fds (files, pipes).
			want := []string{"close"}
			if order == "double-first" {
				want = []string{"socket", "listen", "accept", "close", "spawn"}
			}
			for _, k := range want {
				if nginxCounts[k] == 0 {
					t.Errorf("nginx under the double: no %s ioctl issued (%v): the double was not in the path", k, nginxCounts)
				}
			}
			// t_fastsocket issues its own ioctls and calls none of the
			// wrapped functions; the double's line says it was loaded
			// and opened its channel.
			if serveCounts["processes"] == 0 {
				t.Errorf("t_fastsocket under the double: no process reported the double's counts")
			}
		})
	}
}

// doubleCounts sums the double's FSOCK_DOUBLE_STATS lines ("pid P socket
// N listen N ..."), one per process that exited.
func doubleCounts(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("the double's counts: %v (no process under it exited normally?)", err)
		return nil
	}
	sum := map[string]uint64{}
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		for i := 2; i+1 < len(f); i += 2 {
			n, _ := strconv.ParseUint(f[i+1], 10, 64)
			sum[f[i]] += n
		}
		sum["processes"]++
	}
	return sum
}
