package stack

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestCloseReleasesEverything starts a stack, uses it, closes it with a
// connection still open, and checks that file descriptors and goroutines
// return to where they were and that the interface has no XDP program.
func TestCloseReleasesEverything(t *testing.T) {
	lab := newLab(t)
	d := newNSDialer(t, lab.ClientNS, 1)
	runtime.GC()
	fds0, gr0 := countFDs(t), runtime.NumGoroutine()

	s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen("tcp", ":7400")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := d.dial(lab.ServerAddr.String() + ":7400")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	io.WriteString(sc, "x")

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung with a connection open")
	}
	if _, err := sc.Write([]byte("after close")); err == nil {
		// The connection's endpoint was aborted by Close.
		t.Log("write after Close did not fail at once")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Listen("tcp", ":7401"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Listen after Close: %v, want ErrClosed", err)
	}

	c.Close() // the client's kernel socket is not the stack's to release

	out, _ := lab.Cmd(lab.ServerNS, "ip", "link", "show", lab.ServerIf).CombinedOutput()
	if len(out) == 0 || strings.Contains(string(out), "xdp") {
		t.Fatalf("interface after Close:\n%s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		fds, gr := countFDs(t), runtime.NumGoroutine()
		if fds <= fds0 && gr <= gr0+2 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("after Close: %d fds (was %d), %d goroutines (was %d)\n%s", fds, fds0, gr, gr0, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDialUnresolvableNeighbour dials an address on the subnet that no
// host answers ARP for: the dial fails with EHOSTUNREACH instead of
// hanging or sending SYNs nowhere.
func TestDialUnresolvableNeighbour(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := s.DialContext(ctx, "tcp", "198.18.0.99:80")
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("dial to a silent neighbour: %v, want EHOSTUNREACH", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v", el)
	}
	// A context that ends first wins.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err = s.DialContext(ctx2, "tcp", "198.18.0.98:80")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial with a short deadline: %v", err)
	}
	// Bad arguments.
	if _, err := s.DialContext(context.Background(), "udp", "198.18.0.2:80"); err == nil {
		t.Fatal("udp dial accepted")
	}
	if _, err := s.DialContext(context.Background(), "tcp", "[::1]:80"); err == nil {
		t.Fatal("IPv6 dial accepted")
	}
	if _, err := s.Listen("tcp", "10.9.9.9:80"); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("listen on a foreign address: %v", err)
	}
	if _, err := s.Listen("tcp", ":61000"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("listen inside the reserved range: %v", err)
	}
	l1, err := s.Listen("tcp", ":7500")
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	if _, err := s.Listen("tcp", ":7500"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second listen on a port: %v", err)
	}
	l0, err := s.Listen("tcp", ":0")
	if err != nil || l0.Addr().(*net.TCPAddr).Port == 0 {
		t.Fatalf("listen on port 0: %v %v", l0, err)
	}
	l0.Close()
}
