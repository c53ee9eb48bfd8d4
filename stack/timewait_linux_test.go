package stack

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/fsstack/fsstack/internal/netlab"
)

// TestTimeWaitTableAnswersFIN: the server closes first, so its end takes
// TIME_WAIT; netstack keeps the endpoint for 200 ms here and the
// time-wait table keeps the rest of the 10 s period. netstack's ACK of
// the client's FIN is lost (its frames to the client that carry only an
// ACK are dropped for 800 ms), so the client sends its FIN again (after
// about 0.2 s, then 0.6 s), and one of those finds netstack's endpoint
// gone. The table must answer it with that ACK: the client's end then
// closes cleanly. Without the table netstack finds no connection and
// resets it (the test fails so).
// A new connection from the same client port then opens (a SYN with a
// higher sequence number is a new incarnation), and both sides' TIME_WAIT
// figures are seen. Over IPv4 and IPv6.
func TestTimeWaitTableAnswersFIN(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "IPv4"
		if v6 {
			name = "IPv6"
		}
		t.Run(name, func(t *testing.T) { testTimeWaitTable(t, v6) })
	}
}

func testTimeWaitTable(t *testing.T, v6 bool) {
	lab := newLab(t)
	var clientPort atomic.Int32
	var dropUntil atomic.Int64 // UnixNano
	var dropped atomic.Int32
	cfg := Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS, TimeWait: 10 * time.Second,
		netstackTimeWait: 200 * time.Millisecond,
		dropTx: func(f []byte) bool {
			info, ok := parseSegment(f)
			// The frame is parsed as if received: its "local" port is the
			// client's.
			if !ok || info.flags != tcpFlagAck || int32(info.flow.localPort) != clientPort.Load() ||
				time.Now().UnixNano() >= dropUntil.Load() || info.payloadLen() != 0 {
				return false
			}
			dropped.Add(1)
			return true
		}}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	ln := mustListen(t, s, ":7610")
	go answerEach(ln, "bye")
	network, addr, client := "tcp4", lab.ServerAddr.String()+":7610", lab.ClientAddr
	if v6 {
		network, addr, client = "tcp6", "["+lab.ServerAddr6.String()+"]:7610", lab.ClientAddr6
	}
	resets := func() (n uint64) {
		for _, st := range s.Stats() {
			n += st.Resets
		}
		return n
	}
	tw := func() (entries int64, acks uint64) {
		for _, st := range s.Stats() {
			entries += st.TimeWait
			acks += st.TimeWaitAcks
		}
		return entries, acks
	}
	resets0 := resets()

	d := newNSDialer(t, lab.ClientNS, 1)
	var port int
	d.run(func() {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err != nil {
			t.Errorf("dial: %v", err)
			return
		}
		port = c.LocalAddr().(*net.TCPAddr).Port
		clientPort.Store(int32(port))
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c) // to the server's FIN
		if err != nil || string(b) != "bye" {
			t.Errorf("read: %q, %v", b, err)
		}
		if st := clientState(t, lab, v6, port); st != "08" {
			t.Errorf("client's end after the server's FIN: state %q; want 08 (CLOSE_WAIT)", st)
		}
		dropUntil.Store(time.Now().Add(800 * time.Millisecond).UnixNano())
		c.Close()
	})
	if t.Failed() {
		return
	}
	// The client's end leaves LAST_ACK once an ACK of its FIN arrives.
	deadline := time.Now().Add(6 * time.Second)
	for clientState(t, lab, v6, port) != "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if st := clientState(t, lab, v6, port); st != "" {
		t.Fatalf("the client's end of port %d is still in state %s after 6 s", port, st)
	}
	entries, acks := tw()
	if dropped.Load() == 0 {
		t.Fatal("no ACK of the client's FIN was dropped: the test lost nothing")
	}
	if acks == 0 {
		t.Errorf("the time-wait table sent no ACK (%d ACKs dropped)", dropped.Load())
	}
	if n := resets() - resets0; n != 0 {
		t.Errorf("the server sent %d resets: the client's retransmitted FIN found no connection", n)
	}
	if entries != 1 {
		t.Errorf("time-wait table: %d entries; want the one connection", entries)
	}
	for _, sh := range s.shards {
		for _, ep := range sh.st.RegisteredEndpoints() {
			if e, ok := ep.(*tcp.Endpoint); ok && e.EndpointState() == tcp.StateTimeWait {
				t.Errorf("shard %d: netstack still keeps a TIME_WAIT endpoint after 200 ms", sh.id)
			}
		}
	}

	// The same 4-tuple again: the table gives way to the new SYN.
	d.run(func() {
		nd := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: client.AsSlice(), Port: port},
			Control: func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) {
					syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
				})
			}}
		c, err := nd.Dial(network, addr)
		if err != nil {
			t.Errorf("dial again from port %d: %v", port, err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
			t.Errorf("read again: %q, %v", b, err)
		}
	})
	if n := resets() - resets0; n != 0 {
		t.Errorf("the server sent %d resets", n)
	}
}

// clientState returns the TCP state (hex, as /proc/net/tcp or tcp6 shows
// it) of the client namespace's socket on local port port, or "" if there
// is none.
func clientState(t *testing.T, lab *netlab.Lab, v6 bool, port int) string {
	t.Helper()
	file := "/proc/net/tcp"
	if v6 {
		file = "/proc/net/tcp6"
	}
	out, err := lab.Cmd(lab.ClientNS, "cat", file).Output()
	if err != nil {
		t.Fatalf("read the client's /proc/net/tcp: %v", err)
	}
	want := ":" + strings.ToUpper(strconv.FormatInt(int64(port), 16))
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) {
			return f[3]
		}
	}
	return ""
}

// TestTimeWaitActiveOpenPorts: a connection fsstack opened and closed
// first keeps its 4-tuple from new dials for a second after the peer's
// FIN, as netstack's own TIME_WAIT reuse rule does, although netstack lets
// the endpoint go after 200 ms (the time-wait table holds the tuple in
// netstack's port manager). With one ephemeral port a shard, a dial 400 ms
// after the close finds no port; one after 1.4 s reuses it.
func TestTimeWaitActiveOpenPorts(t *testing.T) {
	lab := newLab(t)
	s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS, TimeWait: 5 * time.Second,
		EphemeralPorts: PortRange{First: 50100, Last: 50100 + labQueues - 1}})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	kl := listenIn(t, lab.ClientNS, lab.ClientAddr.String()+":7630")
	go serveEach(kl, func(c net.Conn) { io.Copy(io.Discard, c) }) // closes after fsstack's FIN
	addr := lab.ClientAddr.String() + ":7630"
	dial := func(wait time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, err := s.DialContext(ctx, "tcp4", addr)
		if err != nil {
			return err
		}
		c.Write([]byte("x"))
		return c.Close() // fsstack closes first: its end takes TIME_WAIT
	}
	entries := func() (n int64) {
		for _, st := range s.Stats() {
			n += st.TimeWait
		}
		return n
	}
	for i := 0; i < labQueues; i++ {
		if err := dial(3 * time.Second); err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for entries() < labQueues && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := entries(); n != labQueues {
		t.Fatalf("%d connections in the time-wait table; want %d", n, labQueues)
	}
	t0 := time.Now()
	time.Sleep(400 * time.Millisecond)
	for _, sh := range s.shards {
		for _, ep := range sh.st.RegisteredEndpoints() {
			if e, ok := ep.(*tcp.Endpoint); ok && e.EndpointState() == tcp.StateTimeWait {
				t.Errorf("shard %d: netstack still keeps a TIME_WAIT endpoint after 400 ms", sh.id)
			}
		}
	}
	if err := dial(time.Second); err == nil {
		t.Errorf("a dial %v after the close reused a TIME_WAIT connection's 4-tuple", time.Since(t0).Round(time.Millisecond))
	}
	time.Sleep(time.Until(t0.Add(1400 * time.Millisecond)))
	if err := dial(3 * time.Second); err != nil {
		t.Errorf("a dial %v after the close: %v", time.Since(t0).Round(time.Millisecond), err)
	}
}
