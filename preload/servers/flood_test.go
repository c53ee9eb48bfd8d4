package servers

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// floodRate and floodFor: a flood several times the new connections this
// 2-core machine's kernel serves, bounded in time.
const (
	floodRate = 50_000
	floodFor  = 5 * time.Second
)

// rssKiB reads a process's resident set size.
func rssKiB(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// TestNginxSYNFlood: nginx under the shim on `fsstack up` while spoofed
// SYNs flood its port. Four clients fetch a file the whole time; every
// request must be served, and the daemon's memory must stay bounded by its
// configuration (half-open endpoints per shard, recorded flows per shard),
// not by the attacker.
func TestNginxSYNFlood(t *testing.T) {
	r := newRig(t, modeFsstack, "nginx", "curl")
	p, files := startNginx(r, true)
	want := files["small.bin"]
	idle, err := rssKiB(r.daemon.pid())
	if err != nil {
		t.Fatal(err)
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := "GET /small.bin HTTP/1.1\r\nHost: fsstack\r\nConnection: close\r\n\r\n"
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				err := func() error {
					c, err := r.dial(80, 10*time.Second) // four SYN retransmissions
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.WriteString(c, req); err != nil {
						return err
					}
					b, err := io.ReadAll(c)
					if err != nil {
						return err
					}
					if !strings.HasPrefix(string(b), "HTTP/1.1 200") || !strings.HasSuffix(string(b), string(want)) {
						return fmt.Errorf("unexpected answer %q", clipLines(string(b), 3))
					}
					return nil
				}()
				if err == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	var peak atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if kb, err := rssKiB(r.daemon.pid()); err == nil && int64(kb) > peak.Load() {
				peak.Store(int64(kb))
			}
		}
	}()
	sent, err := netlab.SYNFlood(r.lab.ClientNS, r.lab.ServerAddr, 80, floodRate, floodFor, 2_000_000)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	after, _ := rssKiB(r.daemon.pid())
	t.Logf("flood: %d SYNs in %v; legitimate requests: %d ok, %d failed (first: %v)", sent, floodFor, ok.Load(), failed.Load(), firstErr.Load())
	t.Logf("daemon RSS: idle %d MiB, peak %d MiB, right after the flood %d MiB", idle>>10, peak.Load()>>10, after>>10)
	if total := ok.Load() + failed.Load(); total < 20 || float64(ok.Load()) < 0.99*float64(total) {
		t.Errorf("only %d of %d legitimate requests were served during the flood (first error: %v)", ok.Load(), total, firstErr.Load())
	}
	// nginx's backlog (511) bounds each shard's half-open endpoints, and
	// every shard records at most 16384 flows: a few hundred MiB at most,
	// whatever the flood's length.
	if limit := idle + 512<<10; peak.Load() > int64(limit) {
		t.Errorf("daemon RSS peaked at %d MiB (idle %d MiB); want under %d MiB", peak.Load()>>10, idle>>10, limit>>10)
	}
	if p.exited() {
		t.Fatalf("nginx exited: %v\n%s", p.waitErr(), r.files("error.log"))
	}
	p.stopWatch(syscall.SIGQUIT, 10*time.Second)
}
