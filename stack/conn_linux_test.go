//go:build linux

package stack

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestConnErrors: a Conn's errors are net.TCPConn's: a deadline's matches
// os.ErrDeadlineExceeded and is a timeout, a Read blocked when Close runs
// returns net.ErrClosed, and a peer's reset matches ECONNRESET (or EPIPE
// for a write) with errors.Is. A deadline set again and again reuses one
// timer and still fires on time.
func TestConnErrors(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7210")
	d := newNSDialer(t, lab.ClientNS, 1)
	accept := func() (net.Conn, net.Conn) {
		t.Helper()
		c, peer, err := d.pair(ln, lab.ServerAddr.String()+":7210")
		if err != nil {
			t.Fatal(err)
		}
		return c, peer
	}

	c, peer := accept()
	defer peer.Close()
	for i := 0; i < 1000; i++ { // as net/http does per request
		c.SetReadDeadline(time.Now().Add(time.Hour))
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline: %v, want a timeout matching os.ErrDeadlineExceeded", err)
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > 5*time.Second {
		t.Errorf("the deadline fired after %v, want 50ms", el)
	}
	c.SetReadDeadline(time.Time{})
	peer.Write([]byte("x"))
	b := make([]byte, 1)
	if n, err := c.Read(b); n != 1 || err != nil {
		t.Fatalf("Read after the deadline was cleared: %d %v", n, err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Read(b); done <- err }()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read blocked when Close ran: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked Read")
	}
	if _, err := c.Write(b); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}

	c, peer = accept()
	defer c.Close()
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // a reset
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(b); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Read after the peer's reset: %v, want ECONNRESET", err)
	}
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = c.Write([]byte("after the reset"))
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Errorf("Write after the peer's reset: %v, want ECONNRESET or EPIPE", werr)
	}
}
