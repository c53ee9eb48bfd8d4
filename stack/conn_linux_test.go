//go:build linux

package stack

import (
	"bytes"
	"errors"
	"io"
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

// TestConnTryWrite: TryWrite takes what the send buffer holds and returns
// at once with a short count and no error when it is full (the peer reads
// nothing); the peer then reads exactly the bytes it took, in order, and a
// TryWrite after Close reports net.ErrClosed.
func TestConnTryWrite(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7211")
	d := newNSDialer(t, lab.ClientNS, 1)
	c, peer, err := d.pair(ln, lab.ServerAddr.String()+":7211")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	tw := c.(*Conn)
	big := make([]byte, 64<<20) // far past any send buffer and peer window
	for i := range big {
		big[i] = byte(i * 7)
	}
	start := time.Now()
	n, err := tw.TryWrite(big)
	if err != nil {
		t.Fatalf("TryWrite: %v", err)
	}
	if n <= 0 || n >= len(big) {
		t.Fatalf("TryWrite took %d of %d bytes; want a short count once the buffer is full", n, len(big))
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("TryWrite took %v: it must not wait", el)
	}
	c.Close()
	if _, err := tw.TryWrite([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("TryWrite after Close: %v, want net.ErrClosed", err)
	}
	peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, 0, n)
	buf := make([]byte, 256<<10)
	for {
		k, err := peer.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			break
		}
	}
	if len(got) != n {
		t.Fatalf("peer read %d bytes, want the %d TryWrite took", len(got), n)
	}
	for i := range got {
		if got[i] != big[i] {
			t.Fatalf("byte %d: %#x, want %#x", i, got[i], big[i])
		}
	}
}

// TestHoldTx: what a writer sends while the stack's kicks are held leaves
// at the release, whole and in order, and the hold ends with it (a write
// after the release is not held).
func TestHoldTx(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7212")
	d := newNSDialer(t, lab.ClientNS, 1)
	c, peer, err := d.pair(ln, lab.ServerAddr.String()+":7212")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	defer c.Close()
	var want []byte
	release := s.HoldTx()
	for i := 0; i < 20; i++ {
		b := bytes.Repeat([]byte{byte('a' + i)}, 100)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	release()
	for _, sh := range s.shards {
		if n := sh.ep.held.Load(); n != 0 {
			t.Fatalf("shard %d: %d holds left after the release", sh.id, n)
		}
	}
	after := []byte("after the release")
	if _, err := c.Write(after); err != nil {
		t.Fatal(err)
	}
	want = append(want, after...)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("peer read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("peer read %q..., want the held writes then %q", got[:20], after)
	}
}

// capWriter takes up to room bytes, then says io.ErrShortWrite.
type capWriter struct {
	room int
	got  []byte
}

func (w *capWriter) Write(p []byte) (int, error) {
	short := len(p) > w.room
	if short {
		p = p[:w.room]
	}
	w.got = append(w.got, p...)
	w.room -= len(p)
	if short {
		return len(p), io.ErrShortWrite
	}
	return len(p), nil
}

// TestConnReadinessAndDirect: the calls a reader and writer without
// goroutines of their own use (the shim daemon's). Notify calls back when
// bytes arrive; TryRead with nothing there returns 0 and no error;
// TryReadTo hands over exactly what its writer takes, in order, leaving
// the rest for the next call, and reports io.EOF after the peer's FIN once
// every byte was read. TryWriteFrom takes from its reader what the send
// buffer holds and leaves the rest there: the peer reads exactly those
// bytes.
func TestConnReadinessAndDirect(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7212")
	d := newNSDialer(t, lab.ClientNS, 1)
	nc, peer, err := d.pair(ln, lab.ServerAddr.String()+":7212")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c := nc.(*Conn)
	ready := make(chan struct{}, 1)
	stop := c.Notify(func() {
		select {
		case ready <- struct{}{}:
		default:
		}
	})
	defer stop()
	if n, err := c.TryRead(make([]byte, 10)); n != 0 || err != nil {
		t.Fatalf("TryRead with nothing there: %d, %v; want 0, nil", n, err)
	}
	in := make([]byte, 100<<10)
	for i := range in {
		in[i] = byte(i * 13)
	}
	go func() {
		peer.Write(in)
		peer.(*net.TCPConn).CloseWrite()
	}()
	var got []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := &capWriter{room: 3000}
		n, err := c.TryReadTo(w)
		if n != len(w.got) {
			t.Fatalf("TryReadTo returned %d, its writer took %d", n, len(w.got))
		}
		got = append(got, w.got...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("TryReadTo: %v", err)
		}
		if n == 0 {
			select {
			case <-ready:
			case <-time.After(time.Until(deadline)):
				t.Fatalf("no readiness callback after %d of %d bytes", len(got), len(in))
			}
		}
	}
	if !bytes.Equal(got, in) {
		t.Fatalf("TryReadTo handed over %d bytes, not the peer's %d in order", len(got), len(in))
	}

	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	r := bytes.NewReader(big)
	n, err := c.TryWriteFrom(r, len(big))
	if err != nil || n <= 0 || n >= len(big) {
		t.Fatalf("TryWriteFrom: %d of %d bytes, %v; want a short count once the buffer is full", n, len(big), err)
	}
	if r.Len() != len(big)-n {
		t.Fatalf("TryWriteFrom took %d bytes but read %d from its reader", n, len(big)-r.Len())
	}
	c.Close()
	peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	out, _ := io.ReadAll(peer)
	if !bytes.Equal(out, big[:n]) {
		t.Fatalf("peer read %d bytes, want the %d TryWriteFrom took, in order", len(out), n)
	}
}
