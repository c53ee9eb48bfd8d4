package servers

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

	"github.com/fsstack/fsstack/internal/netlab"
)

// curlRun is one curl against nginx in the loop.
type curlRun struct {
	start, end time.Time
	code       string // HTTP code curl wrote, "000" without a response
	err        error  // curl's exit (nil: success)
}

// TestDaemonKilled: curl loops against nginx under the shim on fsstack;
// the daemon is SIGKILLed mid-run. Every curl ends within its own timeout
// (nothing hangs) and those after the kill fail with errors; nginx neither
// crashes nor hangs (it stops on SIGQUIT); the XDP link goes with the
// daemon, and a kernel listener on the same address and port serves again.
func TestDaemonKilled(t *testing.T) {
	r := newRig(t, modeFsstack, "nginx")
	p, _ := startNginx(r, false)
	if out := r.xdpLinks(); !strings.Contains(out, "xdp") {
		t.Fatalf("no XDP program on %s while the daemon runs:\n%s", r.lab.ServerIf, out)
	}

	const maxTime = 3 // seconds, curl --max-time
	// A curl that has not ended this long after it started hangs: curl
	// stops itself after --max-time, the rest is slack for a loaded machine.
	const hangBound = maxTime*time.Second + 15*time.Second
	var (
		mu     sync.Mutex
		runs   []curlRun
		stop   = make(chan struct{})
		loopWG sync.WaitGroup
	)
	for range 2 {
		loopWG.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := curlRun{start: time.Now()}
				out, _, err := r.client(hangBound, "curl", "-sS", "-o", "/dev/null",
					"-w", "%{http_code}", "--connect-timeout", "2", "--max-time", strconv.Itoa(maxTime), r.url("small.bin"))
				c.end, c.code, c.err = time.Now(), strings.TrimSpace(string(out)), err
				mu.Lock()
				runs = append(runs, c)
				mu.Unlock()
			}
		})
	}
	succeeded := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range runs {
			if c.err == nil && c.code == "200" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for succeeded() < 20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := succeeded(); n < 20 {
		close(stop)
		loopWG.Wait()
		t.Fatalf("only %d curls succeeded against nginx on fsstack before the kill:\n%s%s", n, summarize(runs, time.Time{}), r.files("error.log"))
	}
	r.checkAccepted(20, 3)

	// Connections open at the kill: an idle keep-alive one, and a slow
	// download in progress. The file is bigger than the client's socket
	// can buffer (tcp_rmem's maximum is 6 MiB): a 1 MiB one could arrive
	// whole in the second before the kill and then complete from the
	// client's buffer, the server long gone.
	slowFile := make([]byte, 16<<20)
	if err := os.WriteFile(filepath.Join(r.dir, "www", "slow.bin"), slowFile, 0o644); err != nil {
		t.Fatal(err)
	}
	ka, kaR := r.keepAlive(t)
	defer ka.Close()
	const slowMax = 15 // seconds, --max-time of the slow download
	slow := make(chan curlRun, 1)
	go func() {
		c := curlRun{start: time.Now()}
		out, _, err := r.client(slowMax*time.Second+15*time.Second, "curl", "-sS", "-o", "/dev/null",
			"-w", "%{http_code} %{size_download}", "--limit-rate", "50k", "--max-time", strconv.Itoa(slowMax), r.url("slow.bin"))
		c.end, c.code, c.err = time.Now(), strings.TrimSpace(string(out)), err
		slow <- c
	}()
	time.Sleep(time.Second)

	killed := time.Now()
	if err := syscall.Kill(r.daemon.pid(), syscall.SIGKILL); err != nil {
		t.Fatalf("kill daemon: %v", err)
	}
	r.daemon.waitErr()

	// The keep-alive connection's next request fails, promptly.
	ka.SetDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(ka, "GET /small.bin HTTP/1.1\r\nHost: fsstack\r\n\r\n")
	if err == nil {
		var resp *http.Response
		if resp, err = http.ReadResponse(kaR, nil); err == nil {
			resp.Body.Close()
			t.Errorf("a keep-alive connection opened before the kill still answers after it: %s", resp.Status)
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a keep-alive connection opened before the kill hangs after it (no answer, no error in 10s)")
	} else if err != nil {
		t.Logf("keep-alive connection after the kill: %v", err)
	}

	// Keep looping for a while after the kill.
	time.Sleep(2*maxTime*time.Second + time.Second)
	close(stop)
	loopWG.Wait()

	// The download in progress at the kill fails (it cannot complete:
	// its server is gone) and ends within its --max-time.
	sc := <-slow
	t.Logf("download in progress at the kill: %q after %v: %v", sc.code, sc.end.Sub(sc.start).Round(time.Millisecond), sc.err)
	switch {
	case sc.err != nil && strings.Contains(sc.err.Error(), "did not finish"):
		t.Errorf("the download in progress at the kill hung: %v", sc.err)
	case sc.err == nil:
		t.Errorf("the download in progress at the kill completed (%s): it was not in progress, or something else served it", sc.code)
	}

	// Nothing hung: every curl ended by itself within its --max-time
	// (the outer bound of client() would report an error naming it).
	var after, afterOK int
	var longest time.Duration
	for _, c := range runs {
		longest = max(longest, c.end.Sub(c.start))
		if c.err != nil && strings.Contains(c.err.Error(), "did not finish") {
			t.Errorf("a curl started %v after the kill hung: %v", c.start.Sub(killed).Round(time.Millisecond), c.err)
		}
		// Runs that started after the kill must fail: with the link gone
		// nothing serves port 80 (nginx's listener lived on fsstack).
		if c.start.After(killed.Add(500 * time.Millisecond)) {
			after++
			if c.err == nil {
				afterOK++
			}
		}
	}
	t.Logf("curl runs: %d started before the kill or within 0.5s of it (%d ok), %d later (%d ok); the longest took %v",
		len(runs)-after, succeeded()-afterOK, after, afterOK, longest.Round(time.Millisecond))
	if after == 0 {
		t.Errorf("no curl ran after the kill:\n%s", summarize(runs, killed))
	}
	if afterOK > 0 {
		t.Errorf("%d curls succeeded after the daemon was killed, but nothing should serve port 80 then:\n%s", afterOK, summarize(runs, killed))
	}

	// The kernel takes the interface back: the XDP link is gone...
	var links string
	for end := time.Now().Add(5 * time.Second); ; {
		links = r.xdpLinks()
		if !strings.Contains(links, "xdp") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("XDP program still attached to %s 5s after the daemon died:\n%s", r.lab.ServerIf, links)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// ... and a kernel listener on nginx's address and port serves.
	r.checkKernelServes(80)

	// nginx did not crash and does not hang: it is still there, and it
	// stops on SIGQUIT.
	if p.exited() {
		t.Errorf("nginx died with the daemon: %v\n%s%s", p.waitErr(), p.output(), r.files("error.log"))
	} else if stopped, left := p.stopWatch(syscall.SIGQUIT, 15*time.Second); !stopped {
		t.Errorf("nginx did not stop within 15s of SIGQUIT after the daemon died; its processes then:\n%s\nerror.log (the last 30 lines):\n%s",
			left, lastLines(r.files("error.log"), 30))
	}
	// The shim says once per process that the daemon went away
	// (preload/shim/README.md, "Daemon gone").
	gone := goneRE.FindAllStringSubmatch(p.output()+r.files("error.log"), -1)
	perPid := map[string]int{}
	for _, m := range gone {
		perPid[m[1]]++
	}
	for pid, n := range perPid {
		if n > 1 {
			t.Errorf("the shim in pid %s said %d times that the daemon went away, want once", pid, n)
		}
	}
	t.Logf("processes whose shim noticed the daemon is gone: %v", perPid)
	if crashes := crashLines(r.files("error.log")); crashes != "" {
		t.Errorf("nginx processes crashed:\n%s", crashes)
	}
	r.checkShimLines(p, "error.log")
}

// xdpLinks returns `ip -d link show` of the server interface.
func (r *rig) xdpLinks() string {
	out, err := exec.Command("ip", "-n", r.lab.ServerNS, "-d", "link", "show", "dev", r.lab.ServerIf).CombinedOutput()
	if err != nil {
		r.t.Fatalf("ip link show: %v\n%s", err, out)
	}
	return string(out)
}

// checkKernelServes listens with the kernel on the server address and
// port in the server namespace and fetches from it with curl in the client
// namespace.
func (r *rig) checkKernelServes(port int) {
	t := r.t
	t.Helper()
	var ln net.Listener
	err := netlab.Do(r.lab.ServerNS, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(r.lab.ServerAddr.String(), strconv.Itoa(port)))
		return err
	})
	if err != nil {
		t.Fatalf("kernel listener on port %d: %v", port, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "kernel\n")
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("kernel server: %v", err)
		}
	}()
	out, stderr, err := r.client(15*time.Second, "curl", "-sS", "--max-time", "10", fmt.Sprintf("http://%s:%d/", r.lab.ServerAddr, port))
	if err != nil || string(out) != "kernel\n" {
		t.Errorf("the kernel does not serve port %d again: %q, %v %s", port, out, err, stderr)
	}
}

// summarize lists curl runs relative to t0 for failure messages.
func summarize(runs []curlRun, t0 time.Time) string {
	var sb strings.Builder
	for i, c := range runs {
		if i >= 60 {
			fmt.Fprintf(&sb, "... %d more\n", len(runs)-i)
			break
		}
		at := c.start.Sub(t0).Round(time.Millisecond)
		if t0.IsZero() {
			at = 0
		}
		fmt.Fprintf(&sb, "%+v %s took %v: %v\n", at, c.code, c.end.Sub(c.start).Round(time.Millisecond), c.err)
	}
	return sb.String()
}

// keepAlive opens a connection from the client namespace, makes one
// keep-alive request on it and returns it for more.
func (r *rig) keepAlive(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := r.dial(80, 5*time.Second)
	if err != nil {
		t.Fatalf("keep-alive dial: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /small.bin HTTP/1.1\r\nHost: fsstack\r\n\r\n"); err != nil {
		c.Close()
		t.Fatalf("keep-alive request: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		t.Fatalf("keep-alive response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		c.Close()
		t.Fatalf("keep-alive response: %s, close %v", resp.Status, resp.Close)
	}
	return c, br
}

// goneRE matches the shim's line when the daemon it attached to goes away
// (preload/shim/client.c); group 1 is the pid.
var goneRE = regexp.MustCompile(`(?m)^fsstack\[(\d+)\]: the fsstack daemon .*; fsstack sockets of this process fail from now on$`)
