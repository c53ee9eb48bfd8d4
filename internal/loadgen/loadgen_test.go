package loadgen

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var body64 = []byte(strings.Repeat("x", 63) + "\n")

func newServer(t *testing.T, h http.HandlerFunc) (addr string, hits *atomic.Int64, closes *atomic.Int64) {
	t.Helper()
	hits, closes = new(atomic.Int64), new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Close {
			closes.Add(1)
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), hits, closes
}

func ok64(w http.ResponseWriter, r *http.Request) { w.Write(body64) }

func TestKeepAlive(t *testing.T) {
	addr, hits, closes := newServer(t, ok64)
	var progress atomic.Int64
	res, err := Run(context.Background(), Config{
		Addr: addr, Conns: 8, Duration: time.Second, Warmup: 100 * time.Millisecond,
		ProgressInterval: 100 * time.Millisecond,
		Progress:         func(Progress) { progress.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Describe())
	if res.Requests == 0 || res.Errors != 0 {
		t.Fatalf("requests %d errors %d (%s)", res.Requests, res.Errors, res.FirstError)
	}
	if res.Connections > 8 {
		t.Errorf("keep-alive opened %d connections in the window, want <= 8", res.Connections)
	}
	if closes.Load() != 0 {
		t.Errorf("%d keep-alive requests asked to close", closes.Load())
	}
	if int64(res.Requests) > hits.Load() {
		t.Errorf("counted %d requests, server saw %d", res.Requests, hits.Load())
	}
	if res.BodyBytes != res.Requests*64 {
		t.Errorf("body bytes %d for %d requests", res.BodyBytes, res.Requests)
	}
	if !(res.P50 > 0 && res.P50 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("latencies p50 %v p99 %v max %v out of order", res.P50, res.P99, res.Max)
	}
	if d := res.Duration; d < 950*time.Millisecond || d > 1100*time.Millisecond {
		t.Errorf("measured window %v, want about 1s", d)
	}
	if res.Late > 8 {
		t.Errorf("%d requests unanswered at the end with 8 connections", res.Late)
	}
	if progress.Load() < 3 {
		t.Errorf("progress called %d times in 600ms at 100ms interval", progress.Load())
	}
}

func TestClose(t *testing.T) {
	addr, _, closes := newServer(t, ok64)
	res, err := Run(context.Background(), Config{Addr: addr, Mode: Close, Conns: 4, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Describe())
	if res.Requests == 0 || res.Errors != 0 {
		t.Fatalf("requests %d errors %d (%s)", res.Requests, res.Errors, res.FirstError)
	}
	// One connection per request (give or take the ones cut by the window).
	if d := int64(res.Connections) - int64(res.Requests); d < 0 || d > 4 {
		t.Errorf("%d connections for %d requests", res.Connections, res.Requests)
	}
	if closes.Load() < int64(res.Requests) {
		t.Errorf("server saw %d Connection: close requests, want >= %d", closes.Load(), res.Requests)
	}
}

func TestErrorsCounted(t *testing.T) {
	t.Run("status", func(t *testing.T) {
		addr, _, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) })
		res, err := Run(context.Background(), Config{Addr: addr, Conns: 2, Duration: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 0 || res.ErrorKinds["status"] == 0 || !strings.Contains(res.FirstError, "500") {
			t.Errorf("500s: %+v", res)
		}
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		start := time.Now()
		res, err := Run(context.Background(), Config{Addr: addr, Conns: 2, Duration: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.ErrorKinds["refused"] == 0 || res.Requests != 0 {
			t.Errorf("closed port: %+v", res)
		}
		if res.Errors > 100 {
			t.Errorf("%d errors in 200ms: no back-off", res.Errors)
		}
		if time.Since(start) > time.Second {
			t.Errorf("run took %v", time.Since(start))
		}
	})
	t.Run("no-close", func(t *testing.T) {
		// A server that ignores Connection: close.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					br := bufio.NewReader(c)
					for {
						if _, err := http.ReadRequest(br); err != nil {
							return
						}
						c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
					}
				}()
			}
		}()
		res, err := Run(context.Background(), Config{Addr: ln.Addr().String(), Mode: Close, Conns: 2, Duration: 1500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.ErrorKinds["no-close"] == 0 || !strings.Contains(res.FirstError, "did not close") {
			t.Errorf("server ignoring Connection: close: %+v", res)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		addr, _, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Write(body64)
			w.(http.Flusher).Flush() // forces chunked encoding
			w.Write(body64)
		})
		res, err := Run(context.Background(), Config{Addr: addr, Conns: 1, Duration: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.ErrorKinds["parse"] == 0 || !strings.Contains(res.FirstError, "Transfer-Encoding") {
			t.Errorf("chunked: %+v", res)
		}
	})
}

func TestCancel(t *testing.T) {
	addr, _, _ := newServer(t, ok64)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := Run(ctx, Config{Addr: addr, Conns: 4, Duration: 10 * time.Second}); err == nil {
		t.Error("cancelled run returned no error")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestSlowServerTimeout(t *testing.T) {
	var mu sync.Mutex
	release := make(chan struct{})
	addr, _, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	start := time.Now()
	res, err := Run(context.Background(), Config{Addr: addr, Conns: 2, Duration: 300 * time.Millisecond, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorKinds["timeout"] == 0 || res.Late == 0 {
		t.Errorf("hung server: want timeouts and requests unanswered at the end: %+v", res)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("run against a hung server took %v", d)
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config{{}, {Addr: "nohost"}, {Addr: "a:1", Mode: "x"}, {Addr: "a:1", Conns: -1}} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := ParseMode("nope"); err == nil {
		t.Error("ParseMode(nope) succeeded")
	}
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		in       string
		keep     bool
		body     int
		wantErr  string
		trailing string
	}{
		{in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", keep: true, body: 3},
		{in: "HTTP/1.1 200 OK\r\ncontent-length:3\r\nConnection: close\r\n\r\nabcNEXT", body: 3, trailing: "NEXT"},
		{in: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", keep: false, body: 0},
		{in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: Keep-Alive\r\n\r\nx", keep: true, body: 1},
		{in: "HTTP/1.1 204 No Content\r\n\r\n", keep: true},
		{in: "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", keep: true, body: 2, wantErr: "404"},
		{in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: "Transfer-Encoding"},
		{in: "HTTP/1.1 200 OK\r\n\r\n", wantErr: "no Content-Length"},
		{in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantErr: "Content-Length"},
		{in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", wantErr: "unexpected EOF"},
		{in: "HTTP/1.1 200 OK\r\nContent-Le", wantErr: "unexpected EOF"},
		{in: "SSH-2.0-OpenSSH\r\n", wantErr: "status line"},
		{in: "HTTP/1.1 2x0 OK\r\n", wantErr: "status line"},
		{in: "HTTP/1.1 200 OK\r\nbadheader\r\n", wantErr: "header"},
		{in: "", wantErr: "EOF"},
	}
	for _, tt := range tests {
		br := bufio.NewReader(strings.NewReader(tt.in))
		keep, body, err := ReadResponse(br)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.wantErr)
			}
			if tt.body == 0 {
				continue
			}
		} else if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if keep != tt.keep || body != tt.body {
			t.Errorf("%q: keep %v body %d, want %v %d", tt.in, keep, body, tt.keep, tt.body)
		}
		rest := make([]byte, 16)
		n, _ := br.Read(rest)
		if string(rest[:n]) != tt.trailing {
			t.Errorf("%q: left %q unread, want %q", tt.in, rest[:n], tt.trailing)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	for b := range numBuckets - 1 {
		lo, hi := bucketLow(b), bucketHigh(b)
		if lo > hi || bucketOf(lo) != b || bucketOf(hi) != b || bucketLow(b+1) != hi+1 {
			t.Fatalf("bucket %d: [%d,%d] not contiguous", b, lo, hi)
		}
		if lo >= 1024 && float64(hi-lo)/float64(lo) > 1.0/float64(subCount) {
			t.Fatalf("bucket %d: [%d,%d] wider than 1/%d", b, lo, hi, subCount)
		}
	}
	for _, v := range []uint64{0, 1, 63, 64, 65, 1 << 40, 1<<63 - 1, 1 << 63, ^uint64(0)} {
		b := bucketOf(v)
		if b < 0 || b >= numBuckets || v < bucketLow(b) || v > bucketHigh(b) {
			t.Errorf("value %d in bucket %d [%d,%d]", v, b, bucketLow(b), bucketHigh(b))
		}
	}
}

// TestHistogramQuantiles compares quantiles with a sorted reference.
func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h, a, b Histogram
	var ref []time.Duration
	for i := range 20000 {
		d := time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond))
		ref = append(ref, d)
		h.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	slices.Sort(ref)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		want := ref[int(q*float64(len(ref))+0.999999)-1]
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.04 || diff < -0.04 {
			t.Errorf("q%.3f = %v, reference %v (%.1f%% off)", q, got, want, 100*diff)
		}
		if a.Quantile(q) != got {
			t.Errorf("merged q%.3f = %v, want %v", q, a.Quantile(q), got)
		}
	}
	if h.Max() != ref[len(ref)-1] || h.Count() != uint64(len(ref)) {
		t.Errorf("max %v count %d", h.Max(), h.Count())
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Error("empty histogram not zero")
	}
	allocs := testing.AllocsPerRun(100, func() { h.Record(time.Millisecond) })
	if allocs != 0 {
		t.Errorf("Record allocates %v", allocs)
	}
}
