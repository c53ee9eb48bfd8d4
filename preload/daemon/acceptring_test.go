package daemon_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// ringClient attaches a client that takes accepted connections from its
// listeners' accept rings (FSS_HELLO_ACCEPT_RING).
func (e *env) ringClient(t *testing.T, flags uint32) *shimtest.Client {
	t.Helper()
	c, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck|abi.HelloAcceptRing|flags))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sharedListener makes a listener held by two ring clients, a parent and
// the fork child that inherited it (the workers of one server).
func (e *env) sharedListener(t *testing.T) (parent, child *shimtest.Client, ls uint32, ap netip.AddrPort) {
	t.Helper()
	parent = e.ringClient(t, 0)
	ls, ap = listen(t, parent)
	cm, err := parent.Call(abi.Req{Op: abi.OpForkPrepare})
	if err != nil {
		t.Fatal(err)
	}
	child = e.ringClient(t, abi.HelloForkChild)
	if n, err := child.Inherit(binary.LittleEndian.Uint64(cm.Data[:8]), ls); err != nil || n != 1 {
		t.Fatalf("inherit: %d, %v", n, err)
	}
	return parent, child, ls, ap
}

// ringedListener makes a ring client's listener with a thread waiting for
// it (as if asleep in epoll_wait on it) and a connection from peer in its
// accept ring.
func (e *env) ringedListener(t *testing.T) (c *shimtest.Client, ls uint32, peer net.Conn) {
	t.Helper()
	c = e.ringClient(t, 0)
	ls, ap := listen(t, c)
	atomic.AddInt32(&c.Sock(ls).Accept_waiters, 1)
	peer = dial(t, ap)
	ringed(t, c, ls, 1)
	return c, ls, peer
}

// echoes checks that bytes flow both ways between the shim's connection
// cs and its kernel peer.
func echoes(t *testing.T, c *shimtest.Client, cs uint32, peer net.Conn) {
	t.Helper()
	if _, err := peer.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, c, cs, 4); !bytes.Equal(got, []byte("ping")) {
		t.Fatalf("shim read %q", got)
	}
	if _, err := c.Write(cs, []byte("pong")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "pong" {
		t.Fatalf("peer read %q, %v", got, err)
	}
}

// dial connects a kernel socket to ap, closed at the end of the test.
func dial(t *testing.T, ap netip.AddrPort) net.Conn {
	t.Helper()
	peer, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	return peer
}

// ringed waits until listener ls's accept ring holds n records.
func ringed(t *testing.T, c *shimtest.Client, ls uint32, n int) {
	t.Helper()
	sh := c.Sock(ls)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if atomic.LoadUint32(&sh.Rx_tail)-atomic.LoadUint32(&sh.Rx_head) == uint32(n*abi.AcceptRecSize) {
			return
		}
	}
	t.Fatalf("timed out waiting for %d records in the accept ring: rx %d-%d, accept_pending %d, waiters %d",
		n, atomic.LoadUint32(&sh.Rx_tail), atomic.LoadUint32(&sh.Rx_head), atomic.LoadUint32(&sh.Accept_pending), atomic.LoadInt32(&sh.Accept_waiters))
}

func TestAcceptRing(t *testing.T) {
	e := start(t)

	t.Run("filled for a waiting process", func(t *testing.T) {
		c, ls, peer := e.ringedListener(t)
		if c.Poll(ls)&abi.PollIn == 0 {
			t.Error("a listener whose ring holds a connection is not readable")
		}
		if n := atomic.LoadUint32(&c.Sock(ls).Accept_pending); n != 0 {
			t.Errorf("accept_pending %d with the connection in the ring, want 0 (no other process woken)", n)
		}
		cs, from, ok, err := c.TakeAccept(ls)
		if err != nil || !ok {
			t.Fatalf("take: %v %v", ok, err)
		}
		if from.String() != peer.LocalAddr().String() {
			t.Errorf("record's peer %v, want %v", from, peer.LocalAddr())
		}
		if c.Poll(ls)&abi.PollIn != 0 {
			t.Error("listener still readable with the ring and the queue empty")
		}
		echoes(t, c, cs, peer)
		if st := e.d.Stats(); st.AcceptRing == 0 {
			t.Errorf("stats: %+v, want accept_ring > 0", st)
		}
	})

	t.Run("shared queue for a process not waiting", func(t *testing.T) {
		c := e.ringClient(t, 0)
		ls, ap := listen(t, c)
		peer := dial(t, ap)
		waitFor(t, "accept_pending", func() bool { return atomic.LoadUint32(&c.Sock(ls).Accept_pending) == 1 })
		if _, _, ok, _ := c.TakeAccept(ls); ok {
			t.Fatal("a connection went into the ring of a process that does not wait for it")
		}
		cs, _, _, err := c.AcceptWaiting(ls) // the round trip (or a ring filled while it waits)
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		echoes(t, c, cs, peer)
	})

	// An ACCEPT takes one queued connection and moves the others into the
	// caller's ring, without an edge: they were readable already.
	t.Run("an accept tops up the ring quietly", func(t *testing.T) {
		c := e.ringClient(t, 0)
		ls, ap := listen(t, c)
		peers := []net.Conn{dial(t, ap), dial(t, ap), dial(t, ap)}
		sh := c.Sock(ls)
		waitFor(t, "accept_pending", func() bool { return atomic.LoadUint32(&sh.Accept_pending) == 3 })
		seq := atomic.LoadUint32(&sh.Ev_seq)
		cs, _, err := c.Accept(ls) // the round trip, not counted as waiting
		if err != nil {
			t.Fatalf("first accept: %v", err)
		}
		ringed(t, c, ls, 2)
		if d := atomic.LoadUint32(&sh.Ev_seq) - seq; d != 0 {
			t.Errorf("%d edges for connections moved from the queue into the ring, want 0", d)
		}
		if n := atomic.LoadUint32(&sh.Accept_pending); n != 0 {
			t.Errorf("accept_pending %d, want 0", n)
		}
		ids := []uint32{cs}
		for range 2 {
			id, _, ok, err := c.TakeAccept(ls)
			if err != nil || !ok {
				t.Fatalf("take: %v %v", ok, err)
			}
			ids = append(ids, id)
		}
		for i, p := range peers { // accepted in the order they connected
			if _, err := p.Write([]byte{byte('a' + i)}); err != nil {
				t.Fatal(err)
			}
		}
		for i, id := range ids {
			if got := readFull(t, c, id, 1); got[0] != byte('a'+i) {
				t.Errorf("accept %d got the connection of peer %c", i, got[0])
			}
		}
	})

	t.Run("a client without the flag gets no ring", func(t *testing.T) {
		c := e.attach(t)
		ls, ap := listen(t, c)
		atomic.AddInt32(&c.Sock(ls).Accept_waiters, 1)
		dial(t, ap)
		waitFor(t, "accept_pending", func() bool { return atomic.LoadUint32(&c.Sock(ls).Accept_pending) == 1 })
		if u := atomic.LoadUint32(&c.Sock(ls).Rx_tail); u != 0 {
			t.Fatalf("rx_tail %d: records for a shim that cannot read them", u)
		}
	})

	// A process that closes its listener with connections still in its
	// ring hands them to the listener's other holder: none is lost.
	t.Run("untaken records go to another holder", func(t *testing.T) {
		parent, child, ls, ap := e.sharedListener(t)
		atomic.AddInt32(&parent.Sock(ls).Accept_waiters, 2) // two threads asleep on it
		peers := []net.Conn{dial(t, ap), dial(t, ap)}
		for _, p := range peers {
			p.Write([]byte("ping"))
		}
		ringed(t, parent, ls, 2)
		before := e.d.Stats().AcceptReclaimed
		if err := parent.CloseSock(ls); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for range peers {
			cs, from, _, err := child.AcceptWaiting(ls)
			if err != nil {
				t.Fatal(err)
			}
			seen[from.String()] = true
			if got := readFull(t, child, cs, 4); string(got) != "ping" {
				t.Fatalf("the child read %q from a reclaimed connection", got)
			}
		}
		for _, p := range peers {
			if !seen[p.LocalAddr().String()] {
				t.Errorf("connection from %v never reached the child", p.LocalAddr())
			}
		}
		if got := e.d.Stats().AcceptReclaimed - before; got != 2 {
			t.Errorf("accept_reclaimed went up by %d, want 2", got)
		}
	})

	// With several holders a ring holds no more records than its process
	// has threads waiting: the rest stays in the shared queue, where an
	// idle worker takes it while the first is busy.
	t.Run("several holders: a record per waiting thread", func(t *testing.T) {
		parent, child, ls, ap := e.sharedListener(t)
		atomic.AddInt32(&parent.Sock(ls).Accept_waiters, 1)
		peers := []net.Conn{dial(t, ap), dial(t, ap), dial(t, ap)}
		ringed(t, parent, ls, 1)
		waitFor(t, "accept_pending", func() bool { return atomic.LoadUint32(&child.Sock(ls).Accept_pending) == 2 })
		ringed(t, parent, ls, 1) // still one
		for range 2 {            // through the shared queue, or its own ring once it waits
			cs, _, _, err := child.AcceptWaiting(ls)
			if err != nil {
				t.Fatalf("the idle worker's accept: %v", err)
			}
			child.CloseSock(cs)
		}
		ringed(t, parent, ls, 1) // still only the one its thread waited for
		if _, _, ok, _ := parent.TakeAccept(ls); !ok {
			t.Fatal("the waiting worker's record is gone")
		}
		_ = peers
	})

	// A process that waited and then stays busy elsewhere does not keep a
	// connection from the listener's other holders for long: its record
	// is taken back after FSS_ACCEPT_STEAL_MS.
	t.Run("a record left untaken goes to another holder", func(t *testing.T) {
		parent, child, ls, ap := e.sharedListener(t)
		sh := parent.Sock(ls)
		atomic.AddInt32(&sh.Accept_waiters, abi.AcceptRingMax) // an event loop asleep on it
		peer := dial(t, ap)
		peer.Write([]byte("ping"))
		ringed(t, parent, ls, 1)
		atomic.AddInt32(&sh.Accept_waiters, -abi.AcceptRingMax) // woke, busy elsewhere
		before := e.d.Stats().AcceptStolen
		start := time.Now()
		cs, from, _, err := child.AcceptWaiting(ls)
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited > 5*time.Second {
			t.Errorf("the idle holder waited %v for the connection", waited)
		}
		if from.String() != peer.LocalAddr().String() {
			t.Errorf("the idle holder got %v, want %v", from, peer.LocalAddr())
		}
		if got := readFull(t, child, cs, 4); string(got) != "ping" {
			t.Fatalf("the idle holder read %q", got)
		}
		if _, _, ok, err := parent.TakeAccept(ls); ok || err != nil {
			t.Errorf("the busy process still took the record: %v %v", ok, err)
		}
		if got := e.d.Stats().AcceptStolen - before; got != 1 {
			t.Errorf("accept_stolen went up by %d, want 1", got)
		}
	})

	// FORK_PREPARE holds no connection still in a ring: the child has no
	// fd for it, and a hold would keep it open after the parent closes it.
	t.Run("fork holds no untaken record", func(t *testing.T) {
		parent, ls, peer := e.ringedListener(t)
		cm, err := parent.Call(abi.Req{Op: abi.OpForkPrepare})
		if err != nil {
			t.Fatal(err)
		}
		child := e.ringClient(t, abi.HelloForkChild)
		if n, err := child.Inherit(binary.LittleEndian.Uint64(cm.Data[:8]), ls); err != nil || n != 1 {
			t.Fatalf("the child inherited %d sockets (%v), want 1: the listener, not the ring's connection", n, err)
		}
		cs, _, ok, err := parent.TakeAccept(ls)
		if err != nil || !ok {
			t.Fatalf("take: %v %v", ok, err)
		}
		if err := parent.CloseSock(cs); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := peer.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("peer read after the parent's close: %d, %v; want EOF", n, err)
		}
	})

	// The last holder closes the listener with a record untaken: the
	// connection is reset, as the kernel resets a closed listener's queue.
	t.Run("closed listener resets its ring", func(t *testing.T) {
		c, ls, peer := e.ringedListener(t)
		if err := c.CloseSock(ls); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("peer read after the listener closed: %v, want ECONNRESET", err)
		}
	})
}
