package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
	"github.com/fsstack/fsstack/stack"
)

// stackLab makes a lab with queues queues and a sharded stack serving its
// server end; both go when the test ends. It needs root and fails without
// it, as a missing kernel feature would.
func stackLab(t *testing.T, name string, queues int) (*netlab.Lab, *stack.Stack) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, XDP, AF_XDP); run the tests as root")
	}
	lab, err := netlab.New(netlab.Options{Queues: queues, Name: name})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	st, err := stack.New(stack.Config{Interface: lab.ServerIf, Queues: queues, NetNS: lab.ServerNS})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return lab, st
}

// TestOnStack serves a shim client from the real sharded stack (AF_XDP on
// a 4-queue veth between two namespaces): a listener and a connect out,
// data both ways, driven from the peer namespace's kernel stack. It needs
// root and fails without it, as a missing kernel feature would.
func TestOnStack(t *testing.T) {
	lab, st := stackLab(t, "shd", 4)
	e := startWith(t, st)
	c := e.attach(t)

	// Passive: the shim listens on the stack; the peer namespace dials.
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	ap, err := c.Listen(ls, netip.AddrPortFrom(lab.ServerAddr, 18555), 64)
	if err != nil {
		t.Fatal(err)
	}
	in, out := randBytes(256<<10), randBytes(256<<10)
	peerErr := make(chan error, 1)
	go func() {
		peerErr <- netlab.Do(lab.ClientNS, func() error {
			conn, err := net.DialTimeout("tcp4", ap.String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			go conn.Write(in)
			got := make([]byte, len(out))
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(conn, got); err != nil {
				return err
			}
			if !bytes.Equal(got, out) {
				return io.ErrUnexpectedEOF
			}
			return nil
		})
	}()
	cs, from, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	if from.Addr() != lab.ClientAddr {
		t.Errorf("accepted from %v, want the client namespace %v", from, lab.ClientAddr)
	}
	if got := readFull(t, c, cs, len(in)); !bytes.Equal(got, in) {
		t.Fatal("bytes from the peer differ")
	}
	if _, err := c.Write(cs, out); err != nil {
		t.Fatal(err)
	}
	if err := <-peerErr; err != nil {
		t.Fatalf("peer: %v", err)
	}
	c.CloseSock(cs)
	c.CloseSock(ls)

	// Active: the shim connects out through the stack to a kernel
	// listener in the peer namespace.
	var kln net.Listener
	if err := netlab.Do(lab.ClientNS, func() (err error) {
		kln, err = net.Listen("tcp4", netip.AddrPortFrom(lab.ClientAddr, 18556).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := kln.Accept()
		if err == nil {
			accepted <- conn
		}
		close(accepted)
	}()
	s, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(s, netip.AddrPortFrom(lab.ClientAddr, 18556)); err != nil {
		t.Fatalf("connect through the stack: %v", err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("the kernel listener accepted nothing")
	}
	defer peer.Close()
	if _, err := c.Write(s, []byte("from the stack")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 14)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "from the stack" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	peer.Write([]byte("back"))
	if got := readFull(t, c, s, 4); string(got) != "back" {
		t.Fatalf("shim read %q", got)
	}
	c.CloseSock(s)
}

// TestOnStackBindAndReset: on the stack backend, bind reserves the address
// at once (a picked port shows in getsockname before listen, a second bind
// to it fails with EADDRINUSE, a foreign address with EADDRNOTAVAIL), and
// a reset that arrives after the peer's FIN marks the socket failed with
// the kernel's EPIPE without anything being written.
func TestOnStackBindAndReset(t *testing.T) {
	lab, st := stackLab(t, "shb", 2)
	c := startWith(t, st).attach(t)

	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: ls, Data: shimtest.Addr(netip.AddrPortFrom(lab.ServerAddr, 0))}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	cm, err := c.Call(abi.Req{Op: abi.OpGetsockname, Sock: ls})
	if err != nil {
		t.Fatal(err)
	}
	bound := shimtest.DecodeAddr(cm.Data)
	if bound.Port() == 0 || bound.Addr() != lab.ServerAddr {
		t.Fatalf("getsockname after bind to port 0: %v, want the address with its picked port", bound)
	}
	other, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: other, Data: shimtest.Addr(bound)}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second bind to %v: %v, want EADDRINUSE", bound, err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: other, Data: shimtest.Addr(netip.MustParseAddrPort("192.0.2.1:0"))}); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("bind to a foreign address: %v, want EADDRNOTAVAIL", err)
	}
	c.CloseSock(other)
	if _, err := c.Call(abi.Req{Op: abi.OpListen, Sock: ls, Arg0: 8}); err != nil {
		t.Fatalf("listen: %v", err)
	}

	// The peer namespace connects, sends its FIN, then resets.
	peerc := make(chan net.Conn, 1)
	go func() {
		var conn net.Conn
		netlab.Do(lab.ClientNS, func() (err error) {
			conn, err = net.DialTimeout("tcp4", bound.String(), 5*time.Second)
			return err
		})
		peerc <- conn
	}()
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-peerc
	if peer == nil {
		t.Fatal("the peer could not connect")
	}
	defer peer.Close()
	events := func() uint32 { _, ev := abi.StateEvents(c.Sock(cs)); return ev }
	peer.(*net.TCPConn).CloseWrite()
	if err := c.Wait(func() bool { return events()&abi.EvRdEOF != 0 }); err != nil {
		t.Fatalf("no EOF after the peer's FIN: %v", err)
	}
	if events()&abi.EvErr != 0 {
		t.Fatal("ERR before any reset")
	}
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	if err := c.Wait(func() bool { return events()&abi.EvErr != 0 }); err != nil {
		t.Fatalf("the reset after the FIN was not noticed (events %#x): %v", events(), err)
	}
	if e := atomic.LoadInt32(&c.Sock(cs).So_error); e != int32(syscall.EPIPE) {
		t.Errorf("so_error after a reset in CLOSE_WAIT = %d, want EPIPE as the kernel's", e)
	}
	c.CloseSock(cs)
	c.CloseSock(ls)
}

// TestOnStackTxDrainedBeforeFIN is TestTxDrainedBeforeFIN on the sharded
// stack, the backend of fsstack up, with the slow peer in the lab's
// client namespace.
func TestOnStackTxDrainedBeforeFIN(t *testing.T) {
	lab, st := stackLab(t, "shx", 4)
	stream := randBytes(32 << 20)
	for i, how := range txEndings {
		t.Run(how, func(t *testing.T) {
			at := netip.AddrPortFrom(lab.ServerAddr, uint16(18600+i))
			testTxDrained(t, startWith(t, st), how, stream, at, func(ap string) *net.TCPConn {
				var c *net.TCPConn
				if err := netlab.Do(lab.ClientNS, func() error { c = slowPeer(t, ap); return nil }); err != nil {
					t.Fatal(err)
				}
				return c
			})
		})
	}
}

// TestOnStackShortAnswers: on the stack backend the client loop sends
// short answers itself and the tx pump starts only when the send side must
// wait (decision 22). Whichever of them sends, the peer gets every byte in
// order: 200 request/answer rounds on one connection, a last answer
// written just before the close, then, on a second connection, an answer
// longer than the loop sends itself, written just before the close.
func TestOnStackShortAnswers(t *testing.T) {
	lab, st := stackLab(t, "sha", 4)
	c := startWith(t, st).attach(t)
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	ap, err := c.Listen(ls, netip.AddrPortFrom(lab.ServerAddr, 18570), 64)
	if err != nil {
		t.Fatal(err)
	}
	dial := func() net.Conn {
		t.Helper()
		var conn net.Conn
		if err := netlab.Do(lab.ClientNS, func() (err error) {
			conn, err = net.DialTimeout("tcp4", ap.String(), 5*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		return conn
	}

	const rounds = 200
	peer := dial()
	defer peer.Close()
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 100+i) }
	for i := 0; i < rounds; i++ {
		if _, err := peer.Write([]byte("req!")); err != nil {
			t.Fatalf("round %d: peer write: %v", i, err)
		}
		if got := readFull(t, c, cs, 4); string(got) != "req!" {
			t.Fatalf("round %d: shim read %q", i, got)
		}
		if _, err := c.Write(cs, answer(i)); err != nil {
			t.Fatalf("round %d: shim write: %v", i, err)
		}
		got := make([]byte, len(answer(i)))
		if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, answer(i)) {
			t.Fatalf("round %d: peer read %d bytes, %v; want the answer", i, len(got), err)
		}
	}
	last := randBytes(3000)
	if _, err := c.Write(cs, last); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseSock(cs); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(peer); err != nil || !bytes.Equal(got, last) {
		t.Fatalf("after the close the peer read %d bytes, %v; want the last answer (%d bytes), then EOF", len(got), err, len(last))
	}

	peer2 := dial()
	defer peer2.Close()
	cs2, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	long := randBytes(40 << 10)
	for off := 0; off < len(long); {
		n, err := c.Write(cs2, long[off:])
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if err := c.CloseSock(cs2); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(peer2); err != nil || !bytes.Equal(got, long) {
		t.Fatalf("the peer read %d bytes, %v; want the %d-byte answer, then EOF", len(got), err, len(long))
	}
	c.CloseSock(ls)
}

// TestOnStackConnsRunNoGoroutine: on the stack backend a connection's
// receive side runs on readiness, served by one worker per shard (decision
// 26), not on a goroutine of its own, and an answer that netstack's send
// buffer takes whole leaves from the client loop, straight from the tx
// FIFO, without the tx pump, however long: 100 open connections, each
// with a request read and an answer of 20–30 KiB written, add fewer
// goroutines than a tenth of their number to the process, and every byte
// arrives in order.
func TestOnStackConnsRunNoGoroutine(t *testing.T) {
	const conns = 100
	lab, st := stackLab(t, "shg", 4)
	c := startOpts(t, daemon.Options{Backend: st, Layout: abi.Layout{Socks: 128, RxFIFO: 16 << 10, TxFIFO: 64 << 10, ReqEntries: 16, CmplEntries: 16}}).attach(t)
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	ap, err := c.Listen(ls, netip.AddrPortFrom(lab.ServerAddr, 18580), conns)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	peers, socks := acceptPeers(t, lab, c, ls, conns, func() (net.Conn, error) {
		return net.DialTimeout("tcp4", ap.String(), 5*time.Second)
	})
	for i, p := range peers {
		s := socks[i]
		answer := randBytes(20<<10 + 100*i)
		if _, err := c.Write(s, answer); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(answer))
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(p, got); err != nil || !bytes.Equal(got, answer) {
			t.Fatalf("peer %d read %d bytes, %v; want its answer", i, len(got), err)
		}
	}
	if added := runtime.NumGoroutine() - before; added >= conns/10 {
		t.Errorf("%d open connections added %d goroutines; want fewer than %d (a worker per shard)", conns, added, conns/10)
	}
	for _, s := range socks {
		c.CloseSock(s)
	}
	for i, p := range peers {
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := p.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("peer %d after the close: %d bytes, %v; want EOF", i, n, err)
		}
	}
	c.CloseSock(ls)
}

// TestOnStackSlowReaders: on the stack backend the bytes of connections
// whose peers read slowly (a 64 KiB receive buffer, 16 KiB a millisecond)
// all arrive in order when netstack's send buffers fill and the tx pumps
// take over from the client loop: 10 connections written 4 MiB each,
// then EOF after the close.
func TestOnStackSlowReaders(t *testing.T) {
	const conns, size = 10, 4 << 20
	lab, st := stackLab(t, "shs", 4)
	c := startOpts(t, daemon.Options{Backend: st, Layout: abi.Layout{Socks: 64, RxFIFO: 16 << 10, TxFIFO: 64 << 10, ReqEntries: 16, CmplEntries: 16}}).attach(t)
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	ap, err := c.Listen(ls, netip.AddrPortFrom(lab.ServerAddr, 18581), conns)
	if err != nil {
		t.Fatal(err)
	}
	pattern := func(i int) []byte {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(i*31 + j*7 + j>>12)
		}
		return b
	}
	peers, socks := acceptPeers(t, lab, c, ls, conns, func() (net.Conn, error) {
		d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
			return serr
		}}
		return d.Dial("tcp4", ap.String())
	})
	peerErr := make(chan error, conns)
	for i, p := range peers {
		go func() {
			want := pattern(i)
			got := make([]byte, 0, size)
			buf := make([]byte, 16<<10)
			p.SetReadDeadline(time.Now().Add(60 * time.Second))
			for len(got) < size {
				n, err := p.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					peerErr <- fmt.Errorf("peer %d: %v after %d bytes", i, err, len(got))
					return
				}
				time.Sleep(time.Millisecond)
			}
			if !bytes.Equal(got, want) {
				peerErr <- fmt.Errorf("peer %d: the bytes differ from what its socket was written", i)
				return
			}
			if n, err := p.Read(buf); n != 0 || err != io.EOF {
				peerErr <- fmt.Errorf("peer %d after the close: %d bytes, %v; want EOF", i, n, err)
				return
			}
			peerErr <- nil
		}()
	}
	for i, s := range socks {
		if _, err := c.Write(s, pattern(i)); err != nil {
			t.Fatalf("write to peer %d: %v", i, err)
		}
	}
	for _, s := range socks {
		c.CloseSock(s)
	}
	for range peers {
		if err := <-peerErr; err != nil {
			t.Fatal(err)
		}
	}
	c.CloseSock(ls)
}

// acceptPeers dials n connections from the lab's client namespace to the
// shim's listener ls (dial runs there) and accepts them; socks[i] is the
// socket of peers[i] (each peer sends its name, which the shim reads from
// the socket it accepted: 9 bytes). The peers close when the test ends.
func acceptPeers(t *testing.T, lab *netlab.Lab, c *shimtest.Client, ls uint32, n int, dial func() (net.Conn, error)) (peers []net.Conn, socks []uint32) {
	t.Helper()
	t.Cleanup(func() {
		for _, p := range peers {
			p.Close()
		}
	})
	if err := netlab.Do(lab.ClientNS, func() error {
		for range n {
			p, err := dial()
			if err != nil {
				return err
			}
			peers = append(peers, p)
		}
		return nil
	}); err != nil {
		t.Fatalf("dial: %v", err)
	}
	accepted := make([]uint32, n)
	for i := range accepted {
		var err error
		if accepted[i], _, err = c.Accept(ls); err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
	}
	for i, p := range peers {
		fmt.Fprintf(p, "conn %03d\n", i)
	}
	byName := make(map[string]uint32)
	for _, s := range accepted {
		byName[string(readFull(t, c, s, 9))] = s
	}
	socks = make([]uint32, n)
	for i := range peers {
		s, ok := byName[fmt.Sprintf("conn %03d\n", i)]
		if !ok {
			t.Fatalf("no socket read peer %d's name", i)
		}
		socks[i] = s
	}
	return peers, socks
}
