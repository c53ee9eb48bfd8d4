package daemon_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/abi/abicheck"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// logBuf collects the daemon's logs for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type env struct {
	path string
	d    *daemon.Daemon
	logs *logBuf
}

// start runs a daemon on the kernel backend behind a unix socket in a
// temporary directory, with small segments.
func start(t testing.TB) *env {
	t.Helper()
	return startWith(t, daemon.KernelBackend{})
}

// startWith runs a daemon on backend.
func startWith(t testing.TB, backend daemon.Backend) *env {
	t.Helper()
	return startOpts(t, daemon.Options{Backend: backend})
}

// startOpts runs a daemon with opts, with small segments and a logger
// unless opts has its own, behind a unix socket in a temporary directory.
func startOpts(t testing.TB, opts daemon.Options) *env {
	t.Helper()
	logs := &logBuf{}
	var w io.Writer = logs
	if _, ok := t.(*testing.T); ok { // a fuzz target may not log through f
		w = io.MultiWriter(logs, testWriter{t})
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.Layout == (abi.Layout{}) {
		opts.Layout = abi.Layout{Socks: 128, RxFIFO: 16 << 10, TxFIFO: 16 << 10, ReqEntries: 16, CmplEntries: 16}
	}
	d, err := daemon.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "fsstack.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		d.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-served
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		if st := d.Stats(); st.Clients != 0 || st.Sockets != 0 {
			t.Errorf("after Close: %+v", st)
		}
	})
	return &env{path: path, d: d, logs: logs}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// attach attaches a client that acknowledges wake-ups (FSS_HELLO_WAKE_ACK),
// as shims should; the C shim's end-to-end tests (preload/shimd) and
// TestWithoutWakeAck cover clients that do not.
func (e *env) attach(t *testing.T) *shimtest.Client {
	t.Helper()
	c, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond (daemon-side state that has no wake-up of its own).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func TestABIMatchesHeader(t *testing.T) {
	if err := abicheck.Check(); err != nil {
		t.Fatal(err)
	}
}

// listen makes a listening shim socket on 127.0.0.1:0, with SO_REUSEADDR
// as servers set it.
func listen(t *testing.T, c *shimtest.Client) (uint32, netip.AddrPort) {
	t.Helper()
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpSetsockopt, Sock: ls, Arg0: syscall.SOL_SOCKET, Arg1: syscall.SO_REUSEADDR, Arg2: 4, Data: [32]byte{1}}); err != nil {
		t.Fatal(err)
	}
	ap, err := c.Listen(ls, loopback, 16)
	if err != nil {
		t.Fatal(err)
	}
	if ap.Port() == 0 || ap.Addr() != loopback.Addr() {
		t.Fatalf("getsockname after listen: %v", ap)
	}
	return ls, ap
}

// accepted listens (listen), connects a kernel socket to the listener
// and accepts it: the shim's connection and its peer, closed at the end
// of the test.
func accepted(t *testing.T, c *shimtest.Client) (uint32, net.Conn) {
	t.Helper()
	ls, ap := listen(t, c)
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	return cs, peer
}

// readFull reads n bytes through the rx FIFO.
func readFull(t *testing.T, c *shimtest.Client, id uint32, n int) []byte {
	t.Helper()
	out := make([]byte, 0, n)
	buf := make([]byte, 4096)
	for len(out) < n {
		k, err := c.Read(id, buf[:min(len(buf), n-len(out))])
		if err != nil {
			t.Fatalf("read after %d of %d bytes: %v", len(out), n, err)
		}
		if k == 0 {
			t.Fatalf("EOF after %d of %d bytes", len(out), n)
		}
		out = append(out, buf[:k]...)
	}
	return out
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestServeAcceptedConnection plays the shim: socket, bind, listen, a
// plain net.Dial to it, accept, data both ways (more than the FIFOs hold,
// so flow control and kicks run), half-close both ways, close.
func TestServeAcceptedConnection(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)

	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs, from, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	if from.String() != peer.LocalAddr().String() {
		t.Errorf("accept peer %v, dialer is %v", from, peer.LocalAddr())
	}
	cm, err := c.Call(abi.Req{Op: abi.OpGetpeername, Sock: cs})
	if err != nil || shimtest.DecodeAddr(cm.Data).String() != peer.LocalAddr().String() {
		t.Errorf("getpeername: %v %v", shimtest.DecodeAddr(cm.Data), err)
	}
	if c.Poll(cs)&abi.PollOut == 0 {
		t.Errorf("accepted socket not writable: poll %#x", c.Poll(cs))
	}

	// peer -> shim: 1 MiB through a 16 KiB rx FIFO.
	in := randBytes(1 << 20)
	go func() { peer.Write(in) }()
	if got := readFull(t, c, cs, len(in)); !bytes.Equal(got, in) {
		t.Fatal("bytes received through the rx FIFO differ from those sent")
	}
	// shim -> peer: 1 MiB through a 16 KiB tx FIFO.
	out := randBytes(1 << 20)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(cs, out)
		errc <- err
	}()
	got := make([]byte, len(out))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, out) {
		t.Fatal("bytes sent through the tx FIFO differ from those received")
	}

	// Peer half-closes: the shim reads EOF, and can still write.
	peer.(*net.TCPConn).CloseWrite()
	if n, err := c.Read(cs, make([]byte, 10)); n != 0 || err != nil {
		t.Fatalf("read after peer FIN: %d, %v; want 0, nil", n, err)
	}
	if p := c.Poll(cs); p&abi.PollRdHup == 0 || p&abi.PollIn == 0 || p&abi.PollOut == 0 {
		t.Errorf("poll after peer FIN: %#x", p)
	}
	if _, err := c.Write(cs, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	// Shim shuts down writing: the peer gets the bytes, then EOF.
	if _, err := c.Call(abi.Req{Op: abi.OpShutdown, Sock: cs, Arg0: syscall.SHUT_WR}); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(peer)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("peer read %q, %v after shim SHUT_WR", rest, err)
	}
	if _, err := c.Write(cs, []byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write after SHUT_WR: %v, want EPIPE", err)
	}
	if err := c.Wait(func() bool { return c.Poll(cs)&abi.PollHup != 0 }); err != nil {
		t.Errorf("no HUP after both sides shut down: %v (poll %#x)", err, c.Poll(cs))
	}
	if err := c.CloseSock(cs); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpGetpeername, Sock: cs}); !errors.Is(err, syscall.EBADF) {
		t.Errorf("stale socket id after close: %v, want EBADF", err)
	}
	if err := c.CloseSock(ls); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sockets released", func() bool { return e.d.Stats().Sockets == 0 })
	if _, err := net.DialTimeout("tcp4", ap.String(), time.Second); err == nil {
		t.Error("listener still accepts after its last reference closed")
	}
}

// TestConnectOut: the shim's socket connects to a kernel listener.
func TestConnectOut(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(s, netip.MustParseAddrPort(ln.Addr().String())); err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := c.Write(s, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("peer got %q, %v", buf, err)
	}
	peer.Write([]byte("pong"))
	if got := readFull(t, c, s, 4); string(got) != "pong" {
		t.Fatalf("shim got %q", got)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpConnect, Sock: s, Data: shimtest.Addr(netip.MustParseAddrPort(ln.Addr().String()))}); !errors.Is(err, syscall.EISCONN) {
		t.Errorf("second connect: %v, want EISCONN", err)
	}
	// The peer resets: the shim sees ECONNRESET.
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	if _, err := c.Read(s, buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after peer RST: %v, want ECONNRESET", err)
	}
}

func TestConnectRefused(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	s, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	seq0 := atomic.LoadUint32(&c.Sock(s).Ev_seq)
	if err := c.Connect(s, ap); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
	// Two edges: connecting, refused. The refusal is one change (one
	// wake-up in the kernel); a second edge for it is an extra EPOLLET
	// event in a set that reported the first. Reading SO_ERROR is none.
	time.Sleep(50 * time.Millisecond)
	if d := atomic.LoadUint32(&c.Sock(s).Ev_seq) - seq0; d != 2 {
		t.Errorf("ev_seq moved %d times for connect + refusal, want 2", d)
	}
	// SO_ERROR was consumed by Connect.
	cm, err := c.Call(abi.Req{Op: abi.OpGetsockopt, Sock: s, Arg0: syscall.SOL_SOCKET, Arg1: syscall.SO_ERROR, Arg2: 4})
	if err != nil || binary.LittleEndian.Uint32(cm.Data[:4]) != 0 || cm.Val0 != 4 {
		t.Errorf("SO_ERROR after it was read: %v %d %v", cm.Data[:4], cm.Val0, err)
	}
}

func TestSockopts(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	s, _ := c.Socket()
	one := [32]byte{1}
	for _, o := range []struct{ level, name int32 }{
		{syscall.SOL_SOCKET, syscall.SO_REUSEADDR}, {syscall.SOL_SOCKET, 0xf}, {syscall.IPPROTO_TCP, syscall.TCP_NODELAY},
	} {
		if _, err := c.Call(abi.Req{Op: abi.OpSetsockopt, Sock: s, Arg0: o.level, Arg1: o.name, Arg2: 4, Data: one}); err != nil {
			t.Errorf("setsockopt %d/%d: %v", o.level, o.name, err)
		}
		cm, err := c.Call(abi.Req{Op: abi.OpGetsockopt, Sock: s, Arg0: o.level, Arg1: o.name, Arg2: 4})
		if err != nil || cm.Val0 != 4 || cm.Data[0] != 1 {
			t.Errorf("getsockopt %d/%d: %v len %d %v", o.level, o.name, cm.Data[:4], cm.Val0, err)
		}
	}
	if _, err := c.Call(abi.Req{Op: abi.OpSetsockopt, Sock: s, Arg0: syscall.SOL_SOCKET, Arg1: 9999, Arg2: 4}); !errors.Is(err, syscall.ENOPROTOOPT) {
		t.Errorf("unknown option: %v, want ENOPROTOOPT", err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpSetsockopt, Sock: s, Arg0: syscall.SOL_SOCKET, Arg1: syscall.SO_REUSEADDR, Arg2: 2}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("short option: %v, want EINVAL", err)
	}
	cm, err := c.Call(abi.Req{Op: abi.OpGetsockopt, Sock: s, Arg0: syscall.SOL_SOCKET, Arg1: syscall.SO_TYPE, Arg2: 4})
	if err != nil || binary.LittleEndian.Uint32(cm.Data[:4]) != syscall.SOCK_STREAM {
		t.Errorf("SO_TYPE: %v %v", cm.Data[:4], err)
	}
}

// TestDupRefcount: a DUPed socket survives one CLOSE.
func TestDupRefcount(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)
	if _, err := c.Call(abi.Req{Op: abi.OpDup, Sock: ls}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpClose, Sock: ls}); err != nil {
		t.Fatal(err)
	}
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatalf("listener gone after closing one of two references: %v", err)
	}
	peer.Close()
	if _, _, err := c.Accept(ls); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpClose, Sock: ls}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpClose, Sock: ls}); !errors.Is(err, syscall.EBADF) {
		t.Errorf("third close: %v, want EBADF", err)
	}
}

// TestForkInherit: a "child" client claims the parent's sockets at the
// same ids; the parent closes its copy; the child keeps serving.
func TestForkInherit(t *testing.T) {
	e := start(t)
	parent := e.attach(t)
	ls, ap := listen(t, parent)
	cm, err := parent.Call(abi.Req{Op: abi.OpForkPrepare})
	if err != nil {
		t.Fatal(err)
	}
	token := binary.LittleEndian.Uint64(cm.Data[:8])
	// The parent closes its listener before the child attaches: the hold
	// keeps it alive.
	if err := parent.CloseSock(ls); err != nil {
		t.Fatal(err)
	}
	child, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloForkChild))
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	n, err := child.Inherit(token, ls)
	if err != nil || n != 1 {
		t.Fatalf("inherit: %d sockets, %v", n, err)
	}
	if _, err := parent.Call(abi.Req{Op: abi.OpForkCommit, Arg0: int32(os.Getpid()), Data: cm.Data}); err != nil {
		t.Fatal(err)
	}
	if _, err := child.Inherit(token); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("second claim of a token: %v, want ENOENT", err)
	}
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs, _, err := child.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte("hi child"))
	if got := readFull(t, child, cs, 8); string(got) != "hi child" {
		t.Fatalf("child read %q", got)
	}
}

// TestForkAbort: FORK_COMMIT with pid -1 releases the held references.
func TestForkAbort(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, _ := listen(t, c)
	cm, err := c.Call(abi.Req{Op: abi.OpForkPrepare})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpForkCommit, Arg0: -1, Data: cm.Data}); err != nil {
		t.Fatal(err)
	}
	c.CloseSock(ls)
	waitFor(t, "socket released", func() bool { return e.d.Stats().Sockets == 0 })
}

// attachRaw sends raw hello bytes and returns the reply (or error).
func attachRaw(t *testing.T, path string, hello []byte, closeWrite bool) (abi.HelloReply, []int, error) {
	t.Helper()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(hello)
	if closeWrite {
		conn.CloseWrite()
	}
	return shimtest.ReadReply(conn)
}

// TestBadAttach: malformed hellos are refused with the right status and a
// logged reason, while an attached client keeps working.
func TestBadAttach(t *testing.T) {
	e := start(t)
	good := e.attach(t)
	ls, ap := listen(t, good)

	pid := int32(os.Getpid())
	wrongVersion := shimtest.Hello(pid, 0)
	binary.LittleEndian.PutUint32(wrongVersion[4:8], abi.ABIVersion+7)
	badSize := shimtest.Hello(pid, 0)
	binary.LittleEndian.PutUint32(badSize[8:12], 1<<20)
	for _, tc := range []struct {
		name   string
		hello  []byte
		status syscall.Errno
		log    string
	}{
		{"bad magic", append([]byte("FSSX"), shimtest.Hello(pid, 0)[4:]...), syscall.EPROTO, "bad hello magic"},
		{"wrong version", wrongVersion, syscall.EPROTONOSUPPORT, "shim ABI version"},
		{"huge size", badSize, syscall.EPROTO, "hello size"},
		{"pid mismatch", shimtest.Hello(pid+1, 0), syscall.EPERM, "claims pid"},
		{"trailing bytes", append(shimtest.Hello(pid, 0), 1, 2, 3), syscall.EPROTO, "after the hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, fds, err := attachRaw(t, e.path, tc.hello, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(fds) != 0 || r.Status != -int32(tc.status) || r.Abi_version != abi.ABIVersion {
				t.Errorf("reply status %d (%d fds), want %d", r.Status, len(fds), -int32(tc.status))
			}
			if !strings.Contains(e.logs.String(), tc.log) {
				t.Errorf("log lacks %q", tc.log)
			}
		})
	}
	// A truncated hello gets no reply at all.
	if _, _, err := attachRaw(t, e.path, []byte("FSSA\x01"), true); err == nil {
		t.Error("truncated hello got a reply")
	}

	// The good client is unaffected.
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, _, err := good.Accept(ls); err != nil {
		t.Fatal(err)
	}
	if st := e.d.Stats(); st.Clients != 1 || st.Refused < 6 {
		t.Errorf("stats %+v", st)
	}
}

// echo checks that client c can still serve a connection end to end.
func echo(t *testing.T, c *shimtest.Client) {
	t.Helper()
	ls, ap := listen(t, c)
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte("still here"))
	if got := readFull(t, c, cs, 10); string(got) != "still here" {
		t.Fatalf("read %q", got)
	}
	c.CloseSock(cs)
	c.CloseSock(ls)
}

// dropped waits until the daemon has dropped c: its segment says GONE and
// its control connection is closed.
func dropped(t *testing.T, c *shimtest.Client) {
	t.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Conn.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("control connection still open: %d, %v", n, err)
	}
	if s := atomic.LoadUint32(&c.Hdr.Daemon_state); s != abi.DaemonGone {
		t.Errorf("daemon_state %d after drop, want GONE", s)
	}
}

// TestOutOfRange: each kind of bad index in shared memory drops that
// client (with a logged reason) and releases its sockets; another client
// keeps working.
func TestOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, c *shimtest.Client)
		log    string
	}{
		{"socket id beyond the table", func(t *testing.T, c *shimtest.Client) {
			c.Post(abi.Req{Op: abi.OpGetsockname, Sock: 1<<16 | 5000})
		}, "names slot 5000"},
		{"request ring producer index", func(t *testing.T, c *shimtest.Client) {
			r, _ := c.Seg.ReqRing()
			atomic.AddUint32(&r.Prod, 1000)
			c.Doorbell()
		}, "request ring"},
		{"completion ring consumer index", func(t *testing.T, c *shimtest.Client) {
			r, _ := c.Seg.CmplRing()
			atomic.AddUint32(&r.Cons, 77)
			c.Post(abi.Req{Op: abi.OpNop})
		}, "completion ring"},
		{"tx FIFO producer index", func(t *testing.T, c *shimtest.Client) {
			cs, _ := accepted(t, c)
			c.Write(cs, []byte("a"))
			sh := c.Sock(cs)
			atomic.AddUint32(&sh.Tx_tail, 1<<30)
			abi.SetBit(c.Seg.KickMap(), cs&0xffff)
			c.Post(abi.Req{Op: abi.OpNop}) // rings the doorbell
		}, "socket slot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t)
			other := e.attach(t)
			bad := e.attach(t)
			ls, _ := listen(t, bad) // a socket to be released
			_ = ls
			tc.break_(t, bad)
			dropped(t, bad)
			waitFor(t, "dropped client released", func() bool { st := e.d.Stats(); return st.Clients == 1 && st.Dropped == 1 })
			if !strings.Contains(e.logs.String(), "protocol violation") || !strings.Contains(e.logs.String(), tc.log) {
				t.Errorf("log lacks the reason %q", tc.log)
			}
			echo(t, other)
		})
	}
}

// TestClientDiesMidCall: requests in flight, sockets open, and the client
// vanishes; the daemon releases everything and the port is free again.
func TestClientDiesMidCall(t *testing.T) {
	e := start(t)
	c, err := shimtest.Dial(e.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ls, ap := listen(t, c)
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	// A write the daemon has not sent yet, a read the client never takes,
	// and requests posted without waiting for their completions.
	c.Write(cs, []byte("half"))
	peer.Write([]byte("unread"))
	for range 5 {
		c.Post(abi.Req{Op: abi.OpAccept, Sock: ls})
	}
	c.Post(abi.Req{Op: abi.OpConnect, Sock: cs, Data: shimtest.Addr(ap)})
	c.Close()

	waitFor(t, "client and sockets released", func() bool { st := e.d.Stats(); return st.Clients == 0 && st.Sockets == 0 })
	// The connection was closed by the daemon: the peer reads what was
	// sent, then EOF or a reset.
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, _ := io.ReadAll(peer)
	if len(rest) > 4 {
		t.Errorf("peer read %q", rest)
	}
	// The port is free again.
	ln, err := net.Listen("tcp4", ap.String())
	if err != nil {
		out, _ := exec.Command("ss", "-tanoe", "sport", "= :"+strconv.Itoa(int(ap.Port()))).CombinedOutput()
		t.Fatalf("port of the dead client's listener still taken: %v\n%s", err, out)
	}
	ln.Close()
	echo(t, e.attach(t))
}

// TestManyClients: several clients at once, each with its own traffic.
func TestManyClients(t *testing.T) {
	e := start(t)
	var wg sync.WaitGroup
	for range 4 {
		c := e.attach(t)
		wg.Go(func() {
			for range 3 {
				echo(t, c)
			}
		})
	}
	wg.Wait()
}

// TestDaemonClose: clients see FSS_DAEMON_GONE and their waits end.
func TestDaemonClose(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, _ := listen(t, c)
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Accept(ls)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	e.d.Close()
	select {
	case err := <-done:
		if !errors.Is(err, shimtest.ErrGone) {
			t.Errorf("accept during daemon close: %v, want ErrGone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting client was not woken when the daemon closed")
	}
}

// TestBindSemantics: bind reserves the address at once (kernel backend).
func TestBindSemantics(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	a, _ := c.Socket()
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: a, Data: shimtest.Addr(loopback)}); err != nil {
		t.Fatal(err)
	}
	cm, err := c.Call(abi.Req{Op: abi.OpGetsockname, Sock: a})
	bound := shimtest.DecodeAddr(cm.Data)
	if err != nil || bound.Port() == 0 {
		t.Fatalf("getsockname after bind to port 0: %v, %v", bound, err)
	}
	b, _ := c.Socket()
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: b, Data: shimtest.Addr(bound)}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second bind to %v: %v, want EADDRINUSE", bound, err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: b, Data: shimtest.Addr(netip.MustParseAddrPort("192.0.2.1:0"))}); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("bind to a foreign address: %v, want EADDRNOTAVAIL", err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpListen, Sock: a, Arg0: 4}); err != nil {
		t.Fatal(err)
	}
	cm, _ = c.Call(abi.Req{Op: abi.OpGetsockname, Sock: a})
	if got := shimtest.DecodeAddr(cm.Data); got != bound {
		t.Errorf("listening on %v, bound %v", got, bound)
	}
	// Shut for reading, a listener stops listening.
	if _, err := c.Call(abi.Req{Op: abi.OpShutdown, Sock: a, Arg0: syscall.SHUT_RD}); err != nil {
		t.Fatal(err)
	}
	if p := c.Poll(a); p != abi.PollHup|abi.PollOut {
		t.Errorf("poll of a shut listener: %#x, want OUT|HUP as a fresh socket", p)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpAccept, Sock: a}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("accept on a shut listener: %v, want EINVAL", err)
	}
	if _, err := net.DialTimeout("tcp4", bound.String(), time.Second); err == nil {
		t.Error("a shut listener still accepts connections")
	}
}

// TestResets: a reset after the peer's FIN is noticed without a write, and
// closing with unread bytes resets the peer.
func TestResets(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	peer.(*net.TCPConn).CloseWrite()
	if err := c.Wait(func() bool { return c.Poll(cs)&abi.PollRdHup != 0 }); err != nil {
		t.Fatal(err)
	}
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	if err := c.Wait(func() bool { return c.Poll(cs)&abi.PollErr != 0 }); err != nil {
		t.Fatalf("reset after FIN not seen: %v (poll %#x)", err, c.Poll(cs))
	}
	// The kernel reports EPIPE for a reset in CLOSE_WAIT.
	if e := syscall.Errno(atomic.LoadInt32(&c.Sock(cs).So_error)); e != syscall.EPIPE && e != syscall.ECONNRESET {
		t.Errorf("so_error %v, want EPIPE or ECONNRESET", e)
	}

	peer2, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer2.Close()
	cs2, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	peer2.Write([]byte("never read"))
	if err := c.Wait(func() bool { return c.Poll(cs2)&abi.PollIn != 0 }); err != nil {
		t.Fatal(err)
	}
	c.CloseSock(cs2)
	peer2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer of a socket closed with unread data: %v, want ECONNRESET", err)
	}
}

// TestWriteShutdownClose: bytes written before SHUT_WR and an immediate
// CLOSE all reach the peer, then EOF.
func TestWriteShutdownClose(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)
	for round := range 20 {
		peer, err := net.Dial("tcp4", ap.String())
		if err != nil {
			t.Fatal(err)
		}
		cs, _, err := c.Accept(ls)
		if err != nil {
			t.Fatal(err)
		}
		msg := randBytes(10000 + round*997)
		if _, err := c.Write(cs, msg); err != nil {
			t.Fatal(err)
		}
		if round%2 == 0 {
			if _, err := c.Call(abi.Req{Op: abi.OpShutdown, Sock: cs, Arg0: syscall.SHUT_WR}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.CloseSock(cs); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(peer)
		peer.Close()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d: peer got %d of %d bytes, %v", round, len(got), len(msg), err)
		}
	}
}

// TestCompletionBackpressure: a shim that stops taking completions stops
// the daemon (it never overflows the completion ring), and it resumes when
// the shim drains them and rings (FSS_DSLEEP_CMPL).
func TestCompletionBackpressure(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	n := int(c.Seg.Layout.CmplEntries + c.Seg.Layout.ReqEntries)
	ids := make([]uint64, 0, n)
	for range n {
		id, err := c.Post(abi.Req{Op: abi.OpNop})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// The daemon filled the completion ring and sleeps waiting for room.
	waitFor(t, "daemon asleep on a full completion ring", func() bool {
		return atomic.LoadUint32(&c.Hdr.Daemon_sleeping)&abi.DSleepCmpl != 0
	})
	for _, id := range ids {
		cm, err := c.Result(id)
		if err != nil || cm.Result != 0 {
			t.Fatalf("request %d: %+v, %v", id, cm, err)
		}
	}
	echo(t, c)
}

// TestForkServerHandsOff: the classic fork server. The parent accepts,
// "forks", and closes its copy before the child claims it; bytes that had
// already reached the parent's rx FIFO are delivered to the child.
func TestForkServerHandsOff(t *testing.T) {
	e := start(t)
	parent := e.attach(t)
	ls, ap := listen(t, parent)
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs, _, err := parent.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte("request"))
	if err := parent.Wait(func() bool { return parent.Poll(cs)&abi.PollIn != 0 }); err != nil {
		t.Fatal(err)
	}
	cm, err := parent.Call(abi.Req{Op: abi.OpForkPrepare})
	if err != nil {
		t.Fatal(err)
	}
	token := binary.LittleEndian.Uint64(cm.Data[:8])
	parent.CloseSock(cs) // unread "request" sits in the parent's FIFO
	child, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloForkChild))
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	if n, err := child.Inherit(token, ls, cs); err != nil || n != 2 {
		t.Fatalf("inherit: %d, %v", n, err)
	}
	if got := readFull(t, child, cs, 7); string(got) != "request" {
		t.Fatalf("child read %q", got)
	}
	if _, err := child.Write(cs, []byte("response")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "response" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
}

// TestWithoutWakeAck: a client that does not acknowledge wake-ups is woken
// after every change, and works the same.
func TestWithoutWakeAck(t *testing.T) {
	e := start(t)
	c, err := shimtest.Dial(e.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		echo(t, c)
	}
	if seq := atomic.LoadUint32(&c.Hdr.Wake_seq); seq != 0 {
		t.Errorf("wake_seq %d for a client without FSS_HELLO_WAKE_ACK, want 0", seq)
	}
}

// TestWakeCoalescing: while a wake-up is unacknowledged the daemon does not
// write the wake fd again, however many events it publishes.
func TestWakeCoalescing(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	// Pretend a thread sleeps and never acknowledges.
	atomic.AddUint32(&c.Hdr.Shim_waiters, 1)
	before := atomic.LoadUint32(&c.Hdr.Wake_seq)
	for i := range 20 {
		peer.Write([]byte{byte(i)})
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "20 bytes in the rx FIFO", func() bool {
		sh := c.Sock(cs)
		return atomic.LoadUint32(&sh.Rx_tail)-atomic.LoadUint32(&sh.Rx_head) == 20
	})
	if n := atomic.LoadUint32(&c.Hdr.Wake_seq) - before; n != 1 {
		t.Errorf("%d wake-ups for 20 events without an acknowledgement, want 1", n)
	}
	atomic.AddUint32(&c.Hdr.Shim_waiters, ^uint32(0))
	if got := readFull(t, c, cs, 20); got[19] != 19 {
		t.Fatalf("read %v", got)
	}
}

// TestIdleConnectionMemory: an idle connection must not pin the pumps'
// 64 KiB buffers (10,000 keep-alive clients would hold 1.3 GB).
func TestIdleConnectionMemory(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)
	// Warm up: one busy connection fills the pool.
	echo(t, c)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 100
	var peers []net.Conn
	for range n {
		p, err := net.Dial("tcp4", ap.String())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		peers = append(peers, p)
		cs, _, err := c.Accept(ls)
		if err != nil {
			t.Fatal(err)
		}
		p.Write([]byte("x")) // one small exchange, then idle
		readFull(t, c, cs, 1)
		c.Write(cs, []byte("y"))
		p.Read(make([]byte, 1))
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
	t.Logf("heap per idle connection: %d bytes", per)
	if per > 32<<10 {
		t.Errorf("each idle connection holds %d bytes of heap, want < 32 KiB", per)
	}
}

// TestUnacknowledgedWakeRepeated: a wake-up the shim never acknowledges
// (a shim bug: it took the edge without storing wake_ack) is written again
// once it has stayed unacknowledged for a second, so such a shim stalls
// instead of sleeping for good.
func TestUnacknowledgedWakeRepeated(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	atomic.AddUint32(&c.Hdr.Shim_waiters, 1) // a sleeper that never acknowledges
	defer atomic.AddUint32(&c.Hdr.Shim_waiters, ^uint32(0))
	atomic.StoreUint32(&c.Hdr.Wake_ack, atomic.LoadUint32(&c.Hdr.Wake_seq))
	before := atomic.LoadUint32(&c.Hdr.Wake_seq)
	sh := c.Sock(cs)
	wakes := func() uint32 { return atomic.LoadUint32(&c.Hdr.Wake_seq) - before }
	peer.Write([]byte{0})
	// The wake-up follows the bytes into the FIFO: wait for it, so that
	// the second event comes more than the patience after it however late
	// a loaded machine ran the first.
	waitFor(t, "the first wake-up", func() bool { return wakes() >= 1 })
	time.Sleep(1100 * time.Millisecond)
	peer.Write([]byte{1})
	waitFor(t, "both bytes in the rx FIFO", func() bool {
		return atomic.LoadUint32(&sh.Rx_tail)-atomic.LoadUint32(&sh.Rx_head) == 2
	})
	// A second wake-up for an event more than the patience after the
	// first, never acknowledged; waitFor fails after its 10 s if it
	// never comes.
	waitFor(t, "a second wake-up for the event a second later", func() bool { return wakes() == 2 })
	if n := wakes(); n != 2 {
		t.Errorf("%d wake-ups for two events a second apart, never acknowledged; want 2", n)
	}
}

// TestTxRoomOnlyWhenAsked: for a shim that says FSS_HELLO_TX_NOSPACE the
// daemon publishes the room its reads of a tx FIFO free only when the shim
// raised FSS_SF_TX_NOSPACE (it ran short of room, or found the socket not
// writable), and then as soon as the FIFO is writable again; a short answer
// taken from the FIFO wakes nobody. A shim without the flag is shown every
// read, as before it existed.
func TestTxRoomOnlyWhenAsked(t *testing.T) {
	e := start(t)
	// answer writes p and waits until the peer has it: the daemon has read
	// it from the tx FIFO by then.
	answer := func(t *testing.T, c *shimtest.Client, cs uint32, peer net.Conn, p []byte) {
		t.Helper()
		if _, err := c.Write(cs, p); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(p))
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("peer read %d bytes, %v", len(got), err)
		}
	}

	t.Run("flag", func(t *testing.T) {
		c, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck|abi.HelloTxNospace))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs, peer := accepted(t, c)
		sh := c.Sock(cs)

		seq := atomic.LoadUint32(&sh.Ev_seq)
		for range 5 {
			answer(t, c, cs, peer, []byte("HTTP/1.1 200 OK\r\n\r\n"))
		}
		if d := atomic.LoadUint32(&sh.Ev_seq) - seq; d != 0 {
			t.Errorf("%d readiness changes published for 5 short answers nobody waited to write, want 0", d)
		}

		// A writer that runs short raises the flag (shimtest's Write, as
		// the shim's send): 1 MiB through the 16 KiB FIFO completes only
		// if every wait for room is answered.
		out := randBytes(1 << 20)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(cs, out)
			errc <- err
		}()
		got := make([]byte, len(out))
		peer.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, out) {
			t.Fatal("bytes sent through the tx FIFO differ from those received")
		}
		if atomic.LoadUint32(&sh.Ev_seq) == seq {
			t.Error("no room published to a writer that waited for it")
		}

		// The flag raised after the room came (the shim's race): the kick
		// that follows it makes the daemon publish, and clear the flag.
		waitFor(t, "the tx FIFO drained", func() bool {
			return atomic.LoadUint32(&sh.Tx_head) == atomic.LoadUint32(&sh.Tx_tail)
		})
		atomic.OrUint32(&sh.S_flags, abi.SFTxNospace)
		seq = atomic.LoadUint32(&sh.Ev_seq)
		abi.SetBit(c.Seg.KickMap(), cs&0xffff)
		c.Doorbell()
		waitFor(t, "room published after a kick under FSS_SF_TX_NOSPACE", func() bool {
			return atomic.LoadUint32(&sh.Ev_seq) != seq
		})
		if f := atomic.LoadUint32(&sh.S_flags); f&abi.SFTxNospace != 0 {
			t.Errorf("s_flags %#x after the daemon published the room, want FSS_SF_TX_NOSPACE cleared", f)
		}
	})

	t.Run("no flag", func(t *testing.T) {
		c := e.attach(t)
		cs, peer := accepted(t, c)
		sh := c.Sock(cs)
		seq := atomic.LoadUint32(&sh.Ev_seq)
		answer(t, c, cs, peer, []byte("HTTP/1.1 200 OK\r\n\r\n"))
		waitFor(t, "the read of the answer published", func() bool {
			return atomic.LoadUint32(&sh.Ev_seq) != seq
		})
	})
}
