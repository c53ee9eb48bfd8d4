package daemon_test

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
	"github.com/fsstack/fsstack/stack"
)

// TestOnStack serves a shim client from the real sharded stack (AF_XDP on
// a 4-queue veth between two namespaces): a listener and a connect out,
// data both ways, driven from the peer namespace's kernel stack. It needs
// root and fails without it, as a missing kernel feature would.
func TestOnStack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, XDP, AF_XDP); run the tests as root")
	}
	lab, err := netlab.New(netlab.Options{Queues: 4, Name: "shd"})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	st, err := stack.New(stack.Config{Interface: lab.ServerIf, Queues: 4, NetNS: lab.ServerNS})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { st.Close() })
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
