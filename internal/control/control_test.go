package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

type shard struct {
	Shard    int    `json:"shard"`
	Accepted uint64 `json:"accepted"`
}

// startServer serves a Server with "stats", "version", "echo" and "panic"
// ops on a fresh socket and returns its path.
func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := Listen(path, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	s.Handle("stats", func(context.Context, *Request) (any, error) {
		return map[string]any{"shards": []shard{{0, 10}, {1, 12}}}, nil
	})
	s.Handle("version", func(context.Context, *Request) (any, error) {
		return map[string]string{"version": "test"}, nil
	})
	s.Handle("echo", func(_ context.Context, r *Request) (any, error) {
		var a struct {
			Text string `json:"text"`
		}
		if err := r.Decode(&a); err != nil {
			return nil, err
		}
		return map[string]string{"text": a.Text}, nil
	})
	s.Handle("panic", func(context.Context, *Request) (any, error) { panic("boom") })
	s.Handle("slow", func(ctx context.Context, _ *Request) (any, error) {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return map[string]bool{"ok": true}, nil
	})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind after Close (err %v)", path, err)
		}
	})
	return s, path
}

// raw sends lines on a raw connection and returns the reply lines.
func raw(t *testing.T, path string, lines ...string) []string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	for _, l := range lines {
		if _, err := io.WriteString(c, l); err != nil {
			t.Fatal(err)
		}
		reply, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", l, err)
		}
		out = append(out, strings.TrimSuffix(reply, "\n"))
	}
	return out
}

func TestProtocol(t *testing.T) {
	_, path := startServer(t)
	tests := []struct {
		in, want string
	}{
		{`{"op":"stats"}` + "\n", `{"shards":[{"shard":0,"accepted":10},{"shard":1,"accepted":12}]}`},
		{`{"op":"version"}` + "\n", `{"version":"test"}`},
		{`  {"op":"echo","text":"hi"}  ` + "\r\n", `{"text":"hi"}`},
		{`{"op":"x"}` + "\n", `{"error":"unknown op \"x\""}`},
		{`{"op":"panic"}` + "\n", `{"error":"op \"panic\" failed: internal error"}`},
		{`{"op":"echo","text":5}` + "\n", ``}, // decode error, checked below
		{`{"op":`, ``},
		{"\n", `{"error":"bad request: empty line"}`},
		{`[1,2]` + "\n", ``},
		{`{"op":7}` + "\n", `{"error":"bad request: \"op\" must be a string"}`},
		{`{"nop":"stats"}` + "\n", `{"error":"bad request: missing \"op\""}`},
		{`{"op":""}` + "\n", `{"error":"bad request: empty \"op\""}`},
		{"\xff\xfe{\n", ``},
		{`{"op":"ops"}` + "\n", `{"ops":["echo","ops","panic","slow","stats","version"]}`},
	}
	// All on one connection: malformed input must not close it.
	var lines []string
	for _, tt := range tests {
		in := tt.in
		if !strings.HasSuffix(in, "\n") {
			in += "\n"
		}
		lines = append(lines, in)
	}
	got := raw(t, path, lines...)
	for i, tt := range tests {
		if tt.want != "" {
			if got[i] != tt.want {
				t.Errorf("%q: got %s, want %s", tt.in, got[i], tt.want)
			}
			continue
		}
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(got[i]), &e); err != nil || e.Error == "" {
			t.Errorf("%q: got %s, want an error reply", tt.in, got[i])
		}
	}
}

func TestClient(t *testing.T) {
	_, path := startServer(t)
	ctx := context.Background()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var st struct{ Shards []shard }
	if err := c.Call(ctx, "stats", nil, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Shards) != 2 || st.Shards[1].Accepted != 12 {
		t.Errorf("stats = %+v", st)
	}
	var echo struct{ Text string }
	if err := c.Call(ctx, "echo", map[string]string{"text": "x\ny"}, &echo); err != nil || echo.Text != "x\ny" {
		t.Errorf("echo = %+v, %v", echo, err)
	}
	err = c.Call(ctx, "nope", nil, nil)
	var re *RemoteError
	if !errors.As(err, &re) || !IsUnknownOp(err) {
		t.Errorf("unknown op: err = %v, want RemoteError for unknown op", err)
	}
	if err := c.Call(ctx, "echo", 5, nil); err == nil {
		t.Error("non-object args: want error")
	}
	// A cancelled context must abort a slow call promptly.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Call(cctx, "slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow call with 20ms deadline: err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 700*time.Millisecond {
		t.Errorf("cancelled call took %v", d)
	}
}

func TestNoDaemon(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "none.sock")
	_, err := Dial(context.Background(), path)
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("missing socket: err = %v, want ErrNoDaemon", err)
	}
	// A stale socket file nobody listens on.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(context.Background(), path); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("stale socket: err = %v, want ErrNoDaemon", err)
	}
	var nd *NoDaemonError
	if !errors.As(err, &nd) && nd != nil && nd.Path != path {
		t.Errorf("NoDaemonError path = %q", nd.Path)
	}
}

func TestListenStaleAndBusy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "d.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Stale: a socket file without a listener is replaced.
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	ln, err := Listen(path, 0o660)
	if err != nil {
		t.Fatalf("Listen over stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, %v; want 0660", fi.Mode(), err)
	}
	// Locked: a daemon that holds the lock but has not listened yet (or
	// whose socket was removed) still refuses a second one.
	os.Remove(path)
	if _, err := Listen(path, 0o666); !errors.Is(err, ErrDaemonRunning) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("Listen while locked: err = %v, want ErrDaemonRunning (locked)", err)
	}
	ln.Close()
	if ln, err = Listen(path, 0o660); err != nil {
		t.Fatalf("Listen after the lock was released: %v", err)
	}
	// Busy: a second daemon must be refused and must not remove the socket.
	if _, err := Listen(path, 0o666); !errors.Is(err, ErrDaemonRunning) {
		t.Errorf("second Listen: err = %v, want ErrDaemonRunning", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("refused Listen removed the live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket not removed on close: %v", err)
	}
	if _, err := os.Lstat(path + ".lock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file not removed on close: %v", err)
	}
	// Not a socket: never removed.
	path = filepath.Join(dir, "sub", "file")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, 0o666); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Error("regular file was clobbered")
	}
	// Directory creation.
	p2 := filepath.Join(dir, "a", "b", "c.sock")
	ln2, err := Listen(p2, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	if fi, err := os.Stat(filepath.Dir(p2)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("dir mode = %v, %v", fi.Mode(), err)
	}
}

func TestClientDiesMidRequest(t *testing.T) {
	s, path := startServer(t)
	for _, partial := range []string{`{"op":"sta`, `{"op":"stats"}`, strings.Repeat("x", 10000)} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, partial)
		c.Close()
	}
	// A client that sends a request and vanishes before reading.
	c, _ := net.Dial("unix", path)
	io.WriteString(c, `{"op":"slow"}`+"\n")
	c.Close()
	// The server must still serve others.
	if got := raw(t, path, `{"op":"version"}`+"\n"); got[0] != `{"version":"test"}` {
		t.Errorf("after dead clients: %s", got[0])
	}
	waitConns(t, s, 0)
}

func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.conns)
		s.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still tracks %d connections, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOverlongLineClosesConnection(t *testing.T) {
	_, path := startServer(t)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		big := strings.Repeat("a", MaxLineBytes+10)
		io.WriteString(c, `{"op":"`+big)
	}()
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, "longer than") {
		t.Fatalf("reply %q, %v", line, err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("connection stayed open after an over-long line")
	}
}

func TestConcurrentClients(t *testing.T) {
	_, path := startServer(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(context.Background(), path)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range 50 {
				want := fmt.Sprintf("c%d-%d", i, j)
				var got struct{ Text string }
				if err := c.Call(context.Background(), "echo", map[string]string{"text": want}, &got); err != nil {
					errs <- err
					return
				}
				if got.Text != want {
					errs <- fmt.Errorf("got %q want %q", got.Text, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCloseWithOpenConnections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := Listen(path, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	go s.Serve(ln)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Call(context.Background(), "ops", nil, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close hung with an idle client connected")
	}
	if err := c.Call(context.Background(), "ops", nil, nil); err == nil {
		t.Error("call after server Close succeeded")
	}
	if err := s.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close = %v", err)
	}
	s.Close() // idempotent
}

func TestPeerCred(t *testing.T) {
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	cred, err := PeerCred(a)
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.PID) != os.Getpid() || int(cred.UID) != os.Getuid() {
		t.Errorf("cred = %+v, want pid %d uid %d", cred, os.Getpid(), os.Getuid())
	}
	if os.Getuid() == 0 {
		if err := RequireUID(a); err != nil {
			t.Errorf("root refused: %v", err)
		}
	}
}

func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("fsstack-pc-%d.sock", os.Getpid()))
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	a, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	b, err := ln.AcceptUnix()
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	// Goroutine leak check: every server and connection goroutine is gone.
	var leaked []string
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		leaked = leakedGoroutines()
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if code == 0 && len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", strings.Join(leaked, "\n\n"))
		code = 1
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines running this package's
// code, other than the caller's.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/control.") && !strings.Contains(g, "control.TestMain") &&
			!strings.Contains(g, "control.leakedGoroutines") {
			out = append(out, g)
		}
	}
	return out
}

func TestHandleOther(t *testing.T) {
	s, path := startServer(t)
	got := make(chan string, 1)
	s.HandleOther(func(ctx context.Context, c net.Conn, first []byte) error {
		// Read the rest of the 8-byte hello, answer, and hold the
		// connection until the peer or the server closes it.
		rest := make([]byte, 8-len(first))
		if _, err := io.ReadFull(c, rest); err != nil {
			return err
		}
		got <- string(first) + string(rest)
		io.WriteString(c, "OK")
		io.Copy(io.Discard, c)
		return nil
	})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "FSSA")
	time.Sleep(10 * time.Millisecond)
	io.WriteString(c, "1234")
	if hello := <-got; hello != "FSSA1234" {
		t.Errorf("handler got %q", hello)
	}
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "OK" {
		t.Errorf("reply %q %v", buf, err)
	}
	// JSON still works beside it, including after leading blanks.
	if got := raw(t, path, "\n"+`{"op":"version"}`+"\n"); got[0] != `{"error":"bad request: empty line"}` {
		t.Errorf("blank first line: %s", got[0])
	}
	if got := raw(t, path, `{"op":"version"}`+"\n"); got[0] != `{"version":"test"}` {
		t.Errorf("JSON beside the handler: %s", got[0])
	}
	// Close must end the handler's connection (the cleanup checks Serve).
}

func TestIdleTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "i.sock")
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	s.IdleTimeout = 50 * time.Millisecond
	s.HandleOther(func(context.Context, net.Conn, []byte) error { return nil })
	go s.Serve(ln)
	defer s.Close()
	for _, send := range []string{"", `{"op":"ops"}` + "\n"} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, send)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		io.Copy(io.Discard, c) // until the server closes
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("after %q: idle connection open for %v", send, d)
		}
		c.Close()
	}
}

// TestHandleStream: a streaming op writes its first reply and then lines
// of its own until the client half-closes; the client reads them all, the
// last one after CloseWrite, and then EOF.
func TestHandleStream(t *testing.T) {
	s, path := startServer(t)
	s.HandleStream("count", func(ctx context.Context, req *Request, r *bufio.Reader, w io.Writer) error {
		var a struct {
			N int `json:"n"`
		}
		if err := req.Decode(&a); err != nil || a.N < 0 {
			w.Write(encodeError(fmt.Errorf("n must be a positive number")))
			return err
		}
		w.Write(encodeReply(map[string]bool{"ok": true}))
		for i := 0; i < a.N; i++ {
			w.Write(encodeReply(map[string]int{"i": i}))
		}
		io.Copy(io.Discard, r) // until the client half-closes
		_, err := w.Write(encodeReply(map[string]bool{"end": true}))
		return err
	})
	if ops := fmt.Sprint(s.Ops()); !strings.Contains(ops, "count") {
		t.Errorf("Ops() = %s, want count listed", ops)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var first struct {
		OK bool `json:"ok"`
	}
	if err := c.Stream(ctx, "count", map[string]int{"n": 3}, &first); err != nil || !first.OK {
		t.Fatalf("Stream: %v %+v", err, first)
	}
	var got []string
	for i := 0; i < 3; i++ {
		line, err := c.ReadLine()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(line))
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	line, err := c.ReadLine()
	got = append(got, string(line))
	if _, eof := c.ReadLine(); err != nil || !errors.Is(eof, io.EOF) {
		t.Fatalf("after CloseWrite: %v, then %v; want the last line, then EOF", err, eof)
	}
	if want := `[{"i":0} {"i":1} {"i":2} {"end":true}]`; fmt.Sprint(got) != want {
		t.Errorf("lines %v, want %s", got, want)
	}
	// A refusal is the first line, as for any op.
	c2, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var re *RemoteError
	if err := c2.Stream(ctx, "count", map[string]int{"n": -1}, nil); !errors.As(err, &re) || !strings.Contains(re.Msg, "positive") {
		t.Errorf("refused stream: %v", err)
	}
}
