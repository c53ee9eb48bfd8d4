// Package loadgen is a small HTTP/1.1 load generator for fsstack's lab and
// benchmarks. It speaks just enough HTTP over raw TCP to be cheaper than
// the servers it measures: it writes a fixed GET and reads the response by
// its Content-Length.
//
//	Conns workers, each:
//	  keep-alive: dial once -> [write GET, read response]* -> (redial on error)
//	  close:      [dial, write GET+Connection: close, read response,
//	               wait for the server's FIN, close]*
//	  bulk:       as keep-alive, for large responses: the body is read
//	              into a 256 KiB buffer as it arrives, and every read's
//	              bytes count if they arrive inside the counting window
//	  latency: write start -> response read (keep-alive, bulk)
//	           dial start  -> response read (close)
//
// Every worker owns its histogram and counters; only the request, error
// and byte totals are atomics, for the progress callback. Run merges them
// at the end.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Mode selects how connections are used.
type Mode string

const (
	// KeepAlive sends many requests on each connection.
	KeepAlive Mode = "keepalive"
	// Close opens a new connection for every request and asks the server
	// to close it ("Connection: close"): the new-connections/s figure.
	Close Mode = "close"
	// Bulk sends many requests on each connection, as KeepAlive, for
	// large responses: the body-throughput figure (Result.Gbps). Body
	// bytes are counted per read, as they arrive, so a response cut by
	// the end of the window still counts the part read inside it.
	Bulk Mode = "bulk"
)

// ParseMode accepts "keepalive"/"keep-alive", "close" and "bulk".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "keepalive", "keep-alive", "ka":
		return KeepAlive, nil
	case "close":
		return Close, nil
	case "bulk":
		return Bulk, nil
	}
	return "", fmt.Errorf("unknown mode %q (use keepalive, close or bulk)", s)
}

// Config describes one run.
type Config struct {
	// Addr is the server's host:port (required).
	Addr string
	// Host is the Host header. If empty, Addr.
	Host string
	// Path is the request path. If empty, "/".
	Path string
	// Mode is KeepAlive, Close or Bulk. If empty, KeepAlive.
	Mode Mode
	// WantBody, if not 0, is the body length every 2xx response must
	// have: another length counts as an error of kind "size" (a server
	// that serves the wrong file would otherwise be measured as fast).
	WantBody int
	// Conns is the number of concurrent connections (workers). If 0, 64.
	Conns int
	// Duration is how long requests are counted. If 0, 5s.
	Duration time.Duration
	// Warmup runs the load this long before counting starts. If 0, none.
	Warmup time.Duration
	// Timeout bounds each dial and each request. If 0, 5s.
	Timeout time.Duration
	// Progress, if set, is called about every ProgressInterval (1s if 0)
	// from a separate goroutine while the run lasts, warm-up included.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// Dialer dials connections. If nil, a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Progress is a snapshot during a run.
type Progress struct {
	Elapsed  time.Duration `json:"elapsed_ns"`
	Warmup   bool          `json:"warmup"`   // still warming up: counts are not kept
	Requests uint64        `json:"requests"` // completed since counting started
	Errors   uint64        `json:"errors"`   // since counting started
	Rate     float64       `json:"rate"`     // requests/s over the last interval
	Gbps     float64       `json:"gbit_s"`   // body Gbit/s over the last interval
}

// Result is the outcome of a run.
type Result struct {
	Addr        string            `json:"addr"`
	Mode        Mode              `json:"mode"`
	Conns       int               `json:"conns"`
	Duration    time.Duration     `json:"duration_ns"` // counting window actually measured
	Requests    uint64            `json:"requests"`    // responses read completely in the window
	Connections uint64            `json:"connections"` // connections established in the window
	Errors      uint64            `json:"errors"`
	Late        uint64            `json:"late"` // connects or requests in flight when the window closed (not errors)
	ErrorKinds  map[string]uint64 `json:"error_kinds,omitempty"`
	RPS         float64           `json:"rps"`              // Requests per second
	ConnRate    float64           `json:"conn_rate"`        // Connections per second
	BodyBytes   uint64            `json:"body_bytes"`       // body bytes read in the window (Bulk: per read, partial responses included)
	Gbps        float64           `json:"gbit_s,omitempty"` // BodyBytes in Gbit/s (10^9 bits) over Duration
	P50         time.Duration     `json:"p50_ns"`
	P90         time.Duration     `json:"p90_ns"`
	P99         time.Duration     `json:"p99_ns"`
	Max         time.Duration     `json:"max_ns"`
	Mean        time.Duration     `json:"mean_ns"`
	FirstError  string            `json:"first_error,omitempty"`
	// Tests are the parts of a run by a tool that measures several
	// (redis-benchmark's SET and GET); the fields above sum them up.
	Tests []TestResult `json:"tests,omitempty"`
}

// TestResult is one test of a multi-test run.
type TestResult struct {
	Name string        `json:"name"` // "set", "get"
	RPS  float64       `json:"rps"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
}

func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host = c.Addr
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Mode == "" {
		c.Mode = KeepAlive
	}
	if c.Conns == 0 {
		c.Conns = 64
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = time.Second
	}
	if c.Dialer == nil {
		d := &net.Dialer{}
		c.Dialer = d.DialContext
	}
	return c
}

func (c Config) validate() error {
	if c.Addr == "" {
		return errors.New("loadgen: no address given")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("loadgen: bad address %q: %w", c.Addr, err)
	}
	if c.Conns < 0 || c.Duration < 0 || c.Warmup < 0 || c.Timeout < 0 || c.WantBody < 0 {
		return errors.New("loadgen: conns, duration, warmup, timeout and body length must not be negative")
	}
	switch c.Mode {
	case KeepAlive, Close, Bulk:
	default:
		return fmt.Errorf("loadgen: unknown mode %q", c.Mode)
	}
	return nil
}

// worker is one connection's state, owned by its goroutine. The atomics
// are read by the progress goroutine.
type worker struct {
	requests atomic.Uint64 // completed while counting
	all      atomic.Uint64 // completed, warm-up included (for progress rates)
	errors   atomic.Uint64
	bytes    atomic.Uint64 // body bytes read, warm-up included (for progress rates)
	_        [32]byte      // keep the hot atomics of neighbours off one cache line

	hist       Histogram
	conns      uint64
	late       uint64
	body       uint64 // body bytes read in the window
	buf        []byte // Bulk: the buffer bodies are read into
	errKinds   map[string]uint64
	firstError string
}

// run is shared, read-only state of one Run.
type run struct {
	cfg      Config
	req      []byte
	countAt  time.Time // counting starts
	stopAt   time.Time // counting ends
	counting atomic.Bool
}

// bulkReadSize is the most one read of a Bulk body asks for.
const bulkReadSize = 256 << 10

// inWindow reports whether t lies in the counting window.
func (r *run) inWindow(t time.Time) bool { return !t.Before(r.countAt) && !t.After(r.stopAt) }

// Run generates load until cfg.Duration (after cfg.Warmup) has passed or
// ctx is done, and returns what it measured. It returns an error only for
// a bad Config or a cancelled ctx; failed requests are counted in Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, req: buildRequest(cfg)}
	start := time.Now()
	r.countAt = start.Add(cfg.Warmup)
	r.stopAt = r.countAt.Add(cfg.Duration)
	if cfg.Warmup == 0 {
		r.counting.Store(true)
	}
	ctx, cancel := context.WithDeadline(ctx, r.stopAt)
	defer cancel()

	workers := make([]*worker, cfg.Conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{errKinds: map[string]uint64{}}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx, w)
		}()
	}

	// Counting switch and progress reports.
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(min(cfg.ProgressInterval, 100*time.Millisecond))
		defer tick.Stop()
		lastReport, lastN, lastB := start, uint64(0), uint64(0)
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if !r.counting.Load() && !now.Before(r.countAt) {
					r.counting.Store(true)
				}
				if cfg.Progress == nil || now.Sub(lastReport) < cfg.ProgressInterval {
					continue
				}
				var n, all, e, by uint64
				for _, w := range workers {
					n += w.requests.Load()
					all += w.all.Load()
					e += w.errors.Load()
					by += w.bytes.Load()
				}
				secs := now.Sub(lastReport).Seconds()
				rate := float64(all-min(lastN, all)) / secs
				gbps := float64(by-min(lastB, by)) * 8 / secs / 1e9
				cfg.Progress(Progress{Elapsed: now.Sub(start), Warmup: !r.counting.Load(), Requests: n, Errors: e, Rate: rate, Gbps: gbps})
				lastReport, lastN, lastB = now, all, by
			}
		}
	}()
	wg.Wait()
	<-progressDone
	end := time.Now()
	if end.After(r.stopAt) {
		end = r.stopAt
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("loadgen: %w", err)
	}

	res := &Result{Addr: cfg.Addr, Mode: cfg.Mode, Conns: cfg.Conns, ErrorKinds: map[string]uint64{}}
	var h Histogram
	for _, w := range workers {
		h.Merge(&w.hist)
		res.Requests += w.requests.Load()
		res.Errors += w.errors.Load()
		res.Connections += w.conns
		res.Late += w.late
		res.BodyBytes += w.body
		for k, v := range w.errKinds {
			res.ErrorKinds[k] += v
		}
		if res.FirstError == "" {
			res.FirstError = w.firstError
		}
	}
	res.Duration = end.Sub(r.countAt)
	if res.Duration > 0 {
		res.RPS = float64(res.Requests) / res.Duration.Seconds()
		res.ConnRate = float64(res.Connections) / res.Duration.Seconds()
		res.Gbps = float64(res.BodyBytes) * 8 / res.Duration.Seconds() / 1e9
	}
	res.P50, res.P90, res.P99 = h.Quantile(0.50), h.Quantile(0.90), h.Quantile(0.99)
	res.Max, res.Mean = h.Max(), h.Mean()
	if len(res.ErrorKinds) == 0 {
		res.ErrorKinds = nil
	}
	return res, nil
}

func buildRequest(cfg Config) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fsstack-loadgen\r\n", cfg.Path, cfg.Host)
	if cfg.Mode == Close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// fail counts an error of the given kind if counting is on.
func (r *run) fail(w *worker, kind string, err error) {
	if !r.counting.Load() || time.Now().After(r.stopAt) {
		return
	}
	w.errors.Add(1)
	w.errKinds[kind]++
	if w.firstError == "" {
		w.firstError = kind + ": " + err.Error()
	}
}

// backoff pauses a little after an error so a dead server does not turn
// the generator into a busy loop.
func backoff(ctx context.Context) {
	t := time.NewTimer(10 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (r *run) work(ctx context.Context, w *worker) {
	var (
		conn net.Conn
		br   *bufio.Reader
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	// The clock bounds the loop as well as ctx: ctx's deadline timer may
	// fire late on a loaded machine, and no request may start after the
	// window.
	for ctx.Err() == nil && !time.Now().After(r.stopAt) {
		t0 := time.Now()
		if conn == nil {
			dctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			c, err := r.cfg.Dialer(dctx, "tcp", r.cfg.Addr)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					r.fail(w, classify("connect", err), err)
					backoff(ctx)
				} else if r.counting.Load() {
					w.late++ // a connect still pending when the window closed
				}
				continue
			}
			if r.counting.Load() {
				w.conns++
			}
			conn = c
			if r.cfg.Mode == Bulk && w.buf == nil {
				w.buf = make([]byte, bulkReadSize)
			}
			if br == nil {
				br = bufio.NewReaderSize(c, 4096)
			} else {
				br.Reset(c)
			}
			if r.cfg.Mode != Close {
				t0 = time.Now() // keep-alive latency excludes the one dial
			}
		}
		deadline := t0.Add(r.cfg.Timeout)
		if late := r.stopAt.Add(100 * time.Millisecond); late.Before(deadline) {
			deadline = late
		}
		conn.SetDeadline(deadline)
		keep, n, kind, err := r.roundTrip(conn, br, w)
		done := time.Now()
		if t0.Before(r.stopAt) && done.After(r.stopAt) && r.counting.Load() {
			w.late++ // still waiting when the window closed
		}
		if err != nil {
			conn.Close()
			conn = nil
			if ctx.Err() == nil && done.Before(r.stopAt) {
				r.fail(w, kind, err)
				if kind != "closed" {
					backoff(ctx)
				}
			}
			continue
		}
		w.all.Add(1)
		if r.cfg.Mode != Bulk { // Bulk counted its bytes as they came
			w.bytes.Add(uint64(n))
		}
		if r.counting.Load() && !done.After(r.stopAt) {
			w.hist.Record(done.Sub(t0))
			w.requests.Add(1)
			if r.cfg.Mode != Bulk {
				w.body += uint64(n)
			}
		}
		if r.cfg.Mode == Close || !keep {
			if r.cfg.Mode == Close {
				// Let the server close first, as it does for
				// "Connection: close": its end takes TIME_WAIT and our
				// port is free at once.
				conn.SetReadDeadline(time.Now().Add(time.Second))
				if err := waitEOF(br); err != nil && ctx.Err() == nil {
					r.fail(w, "no-close", err)
				}
			}
			conn.Close()
			conn = nil
		}
	}
}

// errNoClose: the server answered "Connection: close" but kept the
// connection open (or sent more).
var errNoClose = errors.New("server did not close the connection within 1s of a Connection: close response")

// waitEOF reads until the server closes the connection. A reset counts as
// closed; a timeout or extra bytes do not.
func waitEOF(br *bufio.Reader) error {
	var buf [512]byte
	n, err := br.Read(buf[:])
	switch {
	case n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return nil
	case n > 0:
		return fmt.Errorf("%w: %d more bytes after the response", errNoClose, n)
	}
	return errNoClose
}

func classify(def string, err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no-port"
	}
	return def
}

// errStatus is a non-2xx response.
type errStatus struct{ code int }

func (e errStatus) Error() string { return "HTTP status " + strconv.Itoa(e.code) }

// roundTrip writes the request and reads one response. keep reports
// whether the server lets the connection live on.
func (r *run) roundTrip(c net.Conn, br *bufio.Reader, w *worker) (keep bool, body int, kind string, err error) {
	if _, err := c.Write(r.req); err != nil {
		return false, 0, classify("write", err), err
	}
	if r.cfg.Mode == Bulk {
		keep, body, err = r.readBulk(br, w)
	} else {
		keep, body, err = ReadResponse(br)
		if err == nil && r.cfg.WantBody > 0 && body != r.cfg.WantBody {
			err = fmt.Errorf("%w: %d bytes, want %d", errSize, body, r.cfg.WantBody)
		}
	}
	if err != nil {
		var es errStatus
		switch {
		case errors.As(err, &es):
			return false, body, "status", err
		case errors.Is(err, errSize):
			return false, body, "size", err
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return false, 0, "closed", err
		case errors.Is(err, errMalformed):
			return false, 0, "parse", err
		}
		return false, 0, classify("read", err), err
	}
	return keep, body, "", nil
}

var errMalformed = errors.New("malformed HTTP response")

// errSize: a 2xx response whose body is not Config.WantBody long.
var errSize = errors.New("response body of the wrong length (is the server serving the right file?)")

// readBulk reads one response like ReadResponse, but reads its body into
// w.buf itself and counts every read's bytes (w.body inside the window,
// w.bytes always) the moment they arrive.
func (r *run) readBulk(br *bufio.Reader, w *worker) (keep bool, body int, err error) {
	keep, code, length, err := readHead(br)
	if err != nil {
		return false, 0, err
	}
	if r.cfg.WantBody > 0 && length != r.cfg.WantBody && code >= 200 && code <= 299 {
		// The connection is closed on any error: no need to read on.
		return false, 0, fmt.Errorf("%w: Content-Length %d, want %d", errSize, length, r.cfg.WantBody)
	}
	for left := length; left > 0; {
		n, err := br.Read(w.buf[:min(left, len(w.buf))])
		if n > 0 {
			left -= n
			w.bytes.Add(uint64(n))
			if r.inWindow(time.Now()) {
				w.body += uint64(n)
			}
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return false, length - left, err
		}
	}
	if code < 200 || code > 299 {
		return keep, length, errStatus{code}
	}
	return keep, length, nil
}

// ReadResponse reads one HTTP/1.x response with a Content-Length body from
// br. It returns whether the connection may be reused and the body length.
// A status outside 2xx is returned as an error after the body is consumed.
// Chunked bodies are not supported (errMalformed).
func ReadResponse(br *bufio.Reader) (keep bool, body int, err error) {
	keep, code, length, err := readHead(br)
	if err != nil {
		return false, 0, err
	}
	if _, err := br.Discard(length); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return false, 0, err
	}
	if code < 200 || code > 299 {
		return keep, length, errStatus{code}
	}
	return keep, length, nil
}

// readHead reads a response's status line and headers, up to the body:
// whether the connection may be reused, the status code and the body
// length (0 for a 204 or 304 without Content-Length).
func readHead(br *bufio.Reader) (keep bool, code, length int, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return false, 0, 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return false, 0, 0, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
	}
	code, cerr := strconv.Atoi(string(line[9:12]))
	if cerr != nil {
		return false, 0, 0, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
	}
	keep = line[7] == '1' // HTTP/1.1 defaults to keep-alive, 1.0 to close
	length = -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if err == bufio.ErrBufferFull {
				err = fmt.Errorf("%w: header line too long", errMalformed)
			}
			return false, 0, 0, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return false, 0, 0, fmt.Errorf("%w: header %q", errMalformed, truncate(h))
		}
		name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, err := strconv.Atoi(string(val))
			if err != nil || n < 0 {
				return false, 0, 0, fmt.Errorf("%w: Content-Length %q", errMalformed, val)
			}
			length = n
		case asciiEqualFold(name, "connection"):
			if asciiEqualFold(val, "close") {
				keep = false
			} else if asciiEqualFold(val, "keep-alive") {
				keep = true
			}
		case asciiEqualFold(name, "transfer-encoding"):
			return false, 0, 0, fmt.Errorf("%w: Transfer-Encoding %q not supported (serve a Content-Length)", errMalformed, val)
		}
	}
	if length < 0 {
		if code == 204 || code == 304 {
			length = 0
		} else {
			return false, 0, 0, fmt.Errorf("%w: no Content-Length", errMalformed)
		}
	}
	return keep, code, length, nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// Describe returns a one-line human summary of res.
func (res *Result) Describe() string {
	s := fmt.Sprintf("%s %s: %.0f req/s, %.0f conn/s, p50 %v p99 %v max %v, %d requests, %d errors",
		res.Addr, res.Mode, res.RPS, res.ConnRate, round(res.P50), round(res.P99), round(res.Max), res.Requests, res.Errors)
	if res.Mode == Bulk {
		s = fmt.Sprintf("%s %s: %.2f Gbit/s of body, %.0f responses/s, p50 %v p99 %v max %v, %d responses, %d errors",
			res.Addr, res.Mode, res.Gbps, res.RPS, round(res.P50), round(res.P99), round(res.Max), res.Requests, res.Errors)
	}
	if res.Late > 0 {
		s += fmt.Sprintf(", %d in flight at the end", res.Late)
	}
	if res.FirstError != "" {
		s += " (first: " + res.FirstError + ")"
	}
	return s
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
