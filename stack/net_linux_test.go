package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/nettest"
	"golang.org/x/sys/unix"

	"github.com/fsstack/fsstack/internal/netlab"
)

// The tests in this file run the real data path: a multi-queue veth pair
// between two namespaces made per test, the steering program attached,
// one AF_XDP socket per queue. They need root; without it they fail, as a
// missing kernel feature would.

const labQueues = 4

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network tests need root (network namespaces, XDP, AF_XDP); run 'make test' as root")
	}
}

func newLab(t testing.TB) *netlab.Lab {
	t.Helper()
	requireRoot(t)
	lab, err := netlab.New(netlab.Options{Queues: labQueues, Name: "st"})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab
}

func newLabStack(t testing.TB, lab *netlab.Lab) *Stack {
	t.Helper()
	s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// nsDialer dials from inside a namespace: its workers are goroutines locked
// to threads that entered the namespace and never leave it (the threads
// die with them).
type nsDialer struct {
	reqs chan func()
	wg   sync.WaitGroup
}

func newNSDialer(t testing.TB, ns string, workers int) *nsDialer {
	d := &nsDialer{reqs: make(chan func())}
	for i := 0; i < workers; i++ {
		d.wg.Add(1)
		ready := make(chan error, 1)
		go func() {
			defer d.wg.Done()
			runtime.LockOSThread() // never unlocked: the thread is discarded
			h, err := netns.GetFromPath(netlab.NSPath(ns))
			if err == nil {
				err = netns.Set(h)
				h.Close()
			}
			ready <- err
			if err != nil {
				return
			}
			for f := range d.reqs {
				f()
			}
		}()
		if err := <-ready; err != nil {
			t.Fatalf("enter %s: %v", ns, err)
		}
	}
	t.Cleanup(func() { close(d.reqs); d.wg.Wait() })
	return d
}

// run executes f on one of the namespace's threads.
func (d *nsDialer) run(f func()) {
	done := make(chan struct{})
	d.reqs <- func() { f(); close(done) }
	<-done
}

func (d *nsDialer) dial(addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	d.run(func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) })
	return c, err
}

// pair dials addr from the namespace and returns the connection ln
// accepted for it (an fsstack Conn) and the dialled kernel socket.
func (d *nsDialer) pair(ln net.Listener, addr string) (accepted, peer net.Conn, err error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	peer, err = d.dial(addr)
	if err != nil {
		return nil, nil, err
	}
	select {
	case r := <-ch:
		if r.err != nil {
			peer.Close()
			return nil, nil, r.err
		}
		return r.c, peer, nil
	case <-time.After(5 * time.Second):
		peer.Close()
		return nil, nil, fmt.Errorf("no connection accepted for %s within 5s", addr)
	}
}

func listenIn(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := netlab.Do(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// mustListen listens on the stack and closes the listener when the test
// ends.
func mustListen(t testing.TB, s *Stack, addr string) net.Listener {
	t.Helper()
	ln, err := s.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveText serves body over HTTP on ln until the test ends.
func serveText(t testing.TB, ln net.Listener, body string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// answerEach writes msg on every connection ln accepts and closes it.
func answerEach(ln net.Listener, msg string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, msg)
		c.Close()
	}
}

// serveEach runs handle on a goroutine of its own for every connection ln
// accepts, closing the connection when handle returns, until ln is
// closed.
func serveEach(ln net.Listener, handle func(c net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// echoEach echoes every connection ln accepts until its peer closes.
func echoEach(ln net.Listener) {
	serveEach(ln, func(c net.Conn) { io.Copy(c, c) })
}

// curl fetches the server's / from the client namespace.
func curl(lab *netlab.Lab) ([]byte, error) {
	return lab.Cmd(lab.ClientNS, "curl", "-sS", "--max-time", "10", "http://"+lab.ServerAddr.String()+"/").CombinedOutput()
}

func TestHTTPServerAnswersCurl(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":80")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from fsstack shard %d\n", r.Context().Value(shardKey{}))
	}), ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, shardKey{}, c.(*Conn).Shard())
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for i := 0; i < 5; i++ {
		out, err := curl(lab)
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		if !strings.HasPrefix(string(out), "hello from fsstack shard ") {
			t.Fatalf("curl got %q", out)
		}
	}
	var rx uint64
	for _, st := range s.Stats() {
		rx += st.RxPackets
	}
	if rx == 0 {
		t.Fatal("curl was answered but no shard received a frame: the kernel served it")
	}
}

type shardKey struct{}

func TestShortConnectionsSpreadOverShards(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln, err := s.Listen("tcp", lab.ServerAddr.String()+":7000")
	if err != nil {
		t.Fatal(err)
	}
	const conns = 1000
	var perShard [labQueues]atomic.Int64
	var mismatched atomic.Int64
	go func() {
		for {
			c, err := ln.(*Listener).AcceptFrom(-1)
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// The shard that received the SYN is the one the flow
				// directory names (or, for a flow it never had to
				// record, the connection's own shard).
				la := c.LocalAddr().(*net.TCPAddr).AddrPort()
				ra := c.RemoteAddr().(*net.TCPAddr).AddrPort()
				key := flowKey{localAddr: la.Addr().As16(), remoteAddr: ra.Addr().As16(), localPort: la.Port(), remotePort: ra.Port()}
				if owner, ok := s.dir.owner(key); !ok || owner != c.Shard() {
					mismatched.Add(1)
				}
				perShard[c.Shard()].Add(1)
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				fmt.Fprintf(c, "%d", c.Shard())
			}()
		}
	}()

	d := newNSDialer(t, lab.ClientNS, 8)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, 32)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := d.dial(lab.ServerAddr.String() + ":7000")
			if err == nil {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = c.Write([]byte("hello"))
				if err == nil {
					var b []byte
					b, err = io.ReadAll(c)
					if err == nil && len(b) != 1 {
						err = fmt.Errorf("reply %q", b)
					}
				}
				c.Close()
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d connections failed; first: %v", n, conns, firstErr.Load())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var total int64
		for i := range perShard {
			total += perShard[i].Load()
		}
		if total == conns || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	used := 0
	var total int64
	for q := range perShard {
		n := perShard[q].Load()
		total += n
		if n > 0 {
			used++
		}
	}
	t.Logf("connections per shard: %v", func() (v []int64) {
		for q := range perShard {
			v = append(v, perShard[q].Load())
		}
		return
	}())
	if total != conns {
		t.Fatalf("server accepted %d connections, want %d", total, conns)
	}
	if used < 2 {
		t.Fatalf("all connections landed on %d shard(s); want a spread over at least 2 of %d", used, labQueues)
	}
	if m := mismatched.Load(); m != 0 {
		t.Fatalf("%d connections live on a shard other than the one that received their SYN", m)
	}
	// Each shard completed exactly the handshakes of the connections it
	// handed to the application.
	for _, st := range s.Stats() {
		if int64(st.Accepted) != perShard[st.Shard].Load() {
			t.Errorf("shard %d: %d handshakes completed, %d connections accepted from it", st.Shard, st.Accepted, perShard[st.Shard].Load())
		}
	}
}

func TestDialKernelServer(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	kl := listenIn(t, lab.ClientNS, lab.ClientAddr.String()+":7100")
	go echoEach(kl)
	const dials = 40
	shards := map[int]int{}
	for i := 0; i < dials; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := s.DialContext(ctx, "tcp", lab.ClientAddr.String()+":7100")
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		msg := fmt.Sprintf("ping %d", i)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo %d: %q %v", i, got, err)
		}
		lp := c.LocalAddr().(*net.TCPAddr).Port
		owner, ok := s.plan.owner(uint16(lp))
		if !ok || owner != c.(*Conn).Shard() {
			t.Fatalf("dial %d: local port %d does not encode shard %d", i, lp, c.(*Conn).Shard())
		}
		shards[c.(*Conn).Shard()]++
		c.Close()
	}
	var connected, handoffs uint64
	for _, st := range s.Stats() {
		connected += st.Connected
		handoffs += st.Handoffs
	}
	t.Logf("dials per shard %v, segments handed off %d", shards, handoffs)
	if connected != dials {
		t.Fatalf("stats count %d active opens, want %d", connected, dials)
	}
	if len(shards) < 2 {
		t.Fatalf("every dial used one shard: %v", shards)
	}

	// A closed port is refused, as on the kernel.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.DialContext(ctx, "tcp", lab.ClientAddr.String()+":7101")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial closed port: %v, want ECONNREFUSED", err)
	}
}

func TestKernelKeepsOtherTraffic(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	mustListen(t, s, ":80")
	kl := listenIn(t, lab.ServerNS, lab.ServerAddr.String()+":8080")
	go answerEach(kl, "kernel")
	d := newNSDialer(t, lab.ClientNS, 1)
	for i := 0; i < 3; i++ {
		c, err := d.dial(lab.ServerAddr.String() + ":8080")
		if err != nil {
			t.Fatalf("kernel port through fsstack's interface: %v", err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "kernel" {
			t.Fatalf("kernel port answered %q", b)
		}
	}
	// ARP: forget the neighbour and ping; the kernel must answer both.
	if out, err := lab.Cmd(lab.ClientNS, "ip", "neigh", "flush", "dev", lab.ClientIf).CombinedOutput(); err != nil {
		t.Fatalf("ip neigh flush: %v %s", err, out)
	}
	if out, err := lab.Cmd(lab.ClientNS, "ping", "-c", "2", "-W", "2", lab.ServerAddr.String()).CombinedOutput(); err != nil {
		t.Fatalf("ping while fsstack runs: %v %s", err, out)
	}
	out, err := lab.Cmd(lab.ClientNS, "ip", "neigh", "show", lab.ServerAddr.String(), "dev", lab.ClientIf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), lab.ServerMAC.String()) {
		t.Fatalf("client did not learn the server's MAC over ARP: %s %v", out, err)
	}
	_ = s
}

// TestConnConformance runs x/net's net.Conn conformance suite on an
// accepted fsstack connection whose peer is a kernel socket.
func TestConnConformance(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7200")
	d := newNSDialer(t, lab.ClientNS, 2)
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2, err = d.pair(ln, lab.ServerAddr.String()+":7200")
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

func TestHalfClose(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7300")
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's FIN
		fmt.Fprintf(c, "got %d bytes", len(b))
	}()
	d := newNSDialer(t, lab.ClientNS, 1)
	c, err := d.dial(lab.ServerAddr.String() + ":7300")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	payload := strings.Repeat("x", 100000)
	io.WriteString(c, payload)
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "got 100000 bytes" {
		t.Fatalf("after half-close: %q %v", b, err)
	}
}

func TestBadConfigAndInterface(t *testing.T) {
	requireRoot(t)
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "--iface") {
		t.Fatalf("empty interface: %v", err)
	}
	_, err := New(Config{Interface: "fsnosuch0"})
	if err == nil || !strings.Contains(err.Error(), "iface fsnosuch0 not found; list with 'ip link'") {
		t.Fatalf("unknown interface: %v", err)
	}
	lab := newLab(t)
	_, err = New(Config{Interface: lab.ServerIf, Queues: 8, NetNS: lab.ServerNS})
	if err == nil || !strings.Contains(err.Error(), "has 4 receive queues, 8 asked") {
		t.Fatalf("too many queues: %v", err)
	}
	_, err = New(Config{Interface: lab.ServerIf, NetNS: "fs-no-such-ns"})
	if err == nil || !strings.Contains(err.Error(), "ip netns list") {
		t.Fatalf("unknown namespace: %v", err)
	}
	// After these failures nothing is attached: the kernel still owns the
	// interface and a stack can start.
	s := newLabStack(t, lab)
	if s.Queues() != labQueues {
		t.Fatalf("queues %d", s.Queues())
	}
	if m := s.XDPMode(); m != XDPNative {
		t.Fatalf("XDP mode on veth %q, want native", m)
	}
}

// TestMalformedFrames sends broken frames that still match the steering
// program (TCP to an owned port) and checks the stack drops and counts
// them and keeps serving.
func TestMalformedFrames(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	serveText(t, mustListen(t, s, ":80"), "ok")

	var frames [][]byte
	src, dst := lab.ClientAddr.As4(), lab.ServerAddr.As4()
	base := func() []byte {
		f := buildFrame(src, dst, 40000, 80, tcpFlagSyn, 0)
		copy(f[0:6], lab.ServerMAC)
		copy(f[6:12], lab.ClientMAC)
		return f
	}
	f := base()
	f[14+20+12] = 15 << 4 // TCP data offset past the segment
	frames = append(frames, f)
	f = base()
	binary.BigEndian.PutUint16(f[16:], 30) // IP total length shorter than its headers
	frames = append(frames, f)
	f = base()
	binary.BigEndian.PutUint16(f[16:], 1400) // IP total length past the frame
	frames = append(frames, f)
	frames = append(frames, base()[:14+20+8]) // truncated TCP header

	err := netlab.Do(lab.ClientNS, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(lab.ClientIf)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], lab.ServerMAC)
		for i := 0; i < 50; i++ {
			for _, fr := range frames {
				if err := unix.Sendto(fd, fr, 0, sa); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send raw frames: %v", err)
	}
	out, err := curl(lab)
	if err != nil || string(out) != "ok" {
		t.Fatalf("after malformed frames: %q %v", out, err)
	}
	var dropped uint64
	for _, st := range s.Stats() {
		dropped += st.RxDropped
	}
	t.Logf("frames dropped by the shards: %d", dropped)
	if dropped == 0 {
		t.Fatal("no malformed frame reached a shard's drop counter; the test sends nothing the steering program takes")
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestKilledProcessGivesPortBack runs a stack in a child process, kills it
// with SIGKILL, and checks that the kernel serves the port again at once:
// the steering program goes away with the process that attached it.
func TestKilledProcessGivesPortBack(t *testing.T) {
	lab := newLab(t)
	kl := listenIn(t, lab.ServerNS, lab.ServerAddr.String()+":9000")
	go answerEach(kl, "kernel")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "FSSTACK_TEST_HELPER=serve", "FSSTACK_TEST_IFACE="+lab.ServerIf, "FSSTACK_TEST_NS="+lab.ServerNS)
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper: %q %v", line, err)
	}
	d := newNSDialer(t, lab.ClientNS, 1)
	get := func() (string, error) {
		c, err := d.dial(lab.ServerAddr.String() + ":9000")
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		return string(b), err
	}
	if got, err := get(); got != "fsstack" {
		t.Fatalf("while the helper runs, port 9000 answered %q (%v), want fsstack", got, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := get()
		if got == "kernel" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after kill -9, port 9000 answered %q (%v), want the kernel", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := lab.Cmd(lab.ServerNS, "ip", "link", "show", lab.ServerIf).CombinedOutput()
	if strings.Contains(string(out), "xdp") {
		t.Fatalf("XDP program still attached after the process died:\n%s", out)
	}
}

// helperServe is the child process of TestKilledProcessGivesPortBack,
// started through TestMain.
func helperServe() {
	s, err := New(Config{Interface: os.Getenv("FSSTACK_TEST_IFACE"), Queues: labQueues, NetNS: os.Getenv("FSSTACK_TEST_NS")})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	ln, err := s.Listen("tcp", ":9000")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		io.WriteString(c, "fsstack")
		c.Close()
	}
}

func TestMain(m *testing.M) {
	if os.Getenv("FSSTACK_TEST_HELPER") == "serve" {
		helperServe()
		return
	}
	os.Exit(m.Run())
}

// TestSecondStackOnBusyInterface: when every queue of the interface is
// already served, a second stack fails with a clear error and the first
// keeps serving.
func TestSecondStackOnBusyInterface(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	serveText(t, mustListen(t, s, ":80"), "first")

	_, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS})
	if err == nil {
		t.Fatal("a second stack started on an interface whose queues are all taken")
	}
	t.Logf("second stack: %v", err)
	if !strings.Contains(err.Error(), lab.ServerIf) {
		t.Errorf("error does not name the interface: %v", err)
	}
	out, err := curl(lab)
	if err != nil || string(out) != "first" {
		t.Fatalf("first stack after a failed second start: %q %v", out, err)
	}
}

// TestConnOptions: SetLinger(0) resets instead of closing gracefully, as on
// the kernel; the other net.TCPConn setters are accepted.
func TestConnOptions(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7600")
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fc := c.(*Conn)
		if err := fc.SetKeepAlive(true); err != nil {
			t.Error(err)
		}
		if err := fc.SetKeepAlivePeriod(30 * time.Second); err != nil {
			t.Error(err)
		}
		if err := fc.SetKeepAlivePeriod(0); err == nil {
			t.Error("zero keep-alive period accepted")
		}
		if err := fc.SetNoDelay(true); err != nil {
			t.Error(err)
		}
		fc.SetLinger(0)
		io.WriteString(fc, "bye")
		time.Sleep(100 * time.Millisecond)
		fc.Close()
	}()
	d := newNSDialer(t, lab.ClientNS, 1)
	c, err := d.dial(lab.ServerAddr.String() + ":7600")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 3)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(b)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the server's linger-0 close: %v, want ECONNRESET", err)
	}
}

// TestDialOwnAddress: a connection from the stack to one of its own
// addresses loops inside one shard, as the kernel's goes over lo: it is
// accepted by the stack's own listener, carries bytes both ways, and
// nothing of it reaches the wire (the peer namespace's kernel never sees
// the port). A refused port is refused at once, not after address
// resolution of the stack's own address times out.
func TestDialOwnAddress(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, lab.ServerAddr.String()+":7700")
	go serveEach(ln, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(b))
	})
	before := s.Stats()
	for i := 0; i < 2*labQueues; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := s.DialContext(ctx, "tcp", lab.ServerAddr.String()+":7700")
		cancel()
		if err != nil {
			t.Fatalf("dial own address: %v", err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if got := c.RemoteAddr().String(); got != lab.ServerAddr.String()+":7700" {
			t.Errorf("remote address %s", got)
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != lab.ServerAddr.String() {
			t.Errorf("local address %s, want the stack's own", got)
		}
		io.WriteString(c, strings.Repeat("y", 50000))
		c.(*Conn).CloseWrite()
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "got 50000 bytes" {
			t.Fatalf("own-address connection %d: %q %v", i, b, err)
		}
	}
	after := s.Stats()
	var rx uint64
	for q := range after {
		rx += after[q].RxPackets - before[q].RxPackets
	}
	if rx != 0 {
		t.Errorf("%d packets came in over AF_XDP for connections that should loop inside the stack", rx)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.DialContext(ctx, "tcp", lab.ServerAddr.String()+":7701")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial own address, closed port: %v, want ECONNREFUSED", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v", d)
	}

	// Accept takes own-address connections in the order they were made,
	// as the kernel's does (they all live on the loopback shard).
	ol := mustListen(t, s, lab.ServerAddr.String()+":7702")
	var made []string
	for i := 0; i < 3*labQueues; i++ {
		c, err := s.DialContext(ctx, "tcp", lab.ServerAddr.String()+":7702")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		made = append(made, c.LocalAddr().String())
	}
	for i, want := range made {
		a, err := ol.Accept()
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		if got := a.RemoteAddr().String(); got != want {
			t.Fatalf("accept %d: connection from %s, want %s (the order they were made)", i, got, want)
		}
	}
}

// TestWaitResetAfterFIN: after the peer's FIN a Read reports only EOF, and
// WaitReset is how a reset that comes later is learnt (the shim daemon
// turns it into POLLERR and EPIPE, as the kernel does). Until the reset it
// blocks; stop ends it with nil.
func TestWaitResetAfterFIN(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7800")
	d := newNSDialer(t, lab.ClientNS, 1)
	a, kc, err := d.pair(ln, lab.ServerAddr.String()+":7800")
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	c := a.(*Conn)
	defer c.Close()
	kc.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer's FIN: %d %v, want EOF", n, err)
	}

	// No reset yet: WaitReset waits until stopped.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.WaitReset(stop) }()
	select {
	case err := <-done:
		t.Fatalf("WaitReset returned %v before any reset", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(stop)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitReset after stop: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitReset did not return after stop")
	}

	// The peer resets (close with SO_LINGER {1,0}).
	go func() { done <- c.WaitReset(make(chan struct{})) }()
	kc.(*net.TCPConn).SetLinger(0)
	kc.Close()
	select {
	case err := <-done:
		// In CLOSE_WAIT the kernel reports EPIPE (tcp_reset), not
		// ECONNRESET.
		if !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("WaitReset after the peer's RST: %v, want EPIPE", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitReset did not see the peer's RST")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("write after the peer's reset succeeded")
	}
}

// TestListenerCloseKeepsConnections: a server that stops listening and
// finishes the requests it has (haproxy's soft stop, nginx's graceful
// quit) keeps its connections: their segments still reach the stack,
// not the kernel (which would reset them), and once the last one is gone
// the port goes back to the kernel.
func TestListenerCloseKeepsConnections(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	addr := lab.ServerAddr.String() + ":7310"
	ln, err := s.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := newNSDialer(t, lab.ClientNS, 1)
	c, err := d.dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	// Both ways after the listener is gone: 2 MiB to a client that reads
	// it only later (its window closes and reopens), and its answer.
	payload := make([]byte, 2<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		sc.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := sc.Write(payload); err != nil {
			done <- fmt.Errorf("server write: %w", err)
			return
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(sc, b); err != nil || string(b) != "done" {
			done <- fmt.Errorf("server read: %q %v", b, err)
			return
		}
		done <- sc.Close()
	}()
	time.Sleep(500 * time.Millisecond)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("client read after the listener closed: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("client got different bytes")
	}
	io.WriteString(c, "done")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("client after the server's close: %q %v, want EOF", b, err)
	}
	c.Close()

	// The port drains back to the kernel once the connection's TIME_WAIT
	// (the server closed first) is over, at the next sweep.
	kl := listenIn(t, lab.ServerNS, addr)
	go answerEach(kl, "kernel")
	wait := DefaultTimeWait + 4*time.Second
	deadline := time.Now().Add(wait)
	for {
		k, err := d.dial(addr)
		if err == nil {
			k.SetDeadline(time.Now().Add(2 * time.Second))
			b, _ := io.ReadAll(k)
			k.Close()
			if string(b) == "kernel" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("port 7310 still not the kernel's %v after the last connection closed (last: %v)", wait, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
