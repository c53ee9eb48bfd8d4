package daemon_test

import (
	"bytes"
	"encoding/binary"
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

// slowPeer dials ap with a 4 KiB receive buffer and reads nothing until
// told to, so that the daemon's send to it blocks (its tx pump is stuck
// in a write) while the shim keeps writing into the tx FIFO.
func slowPeer(t *testing.T, ap string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	c, err := d.Dial("tcp4", ap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// fillUntilStuck writes stream[from:] into id's tx FIFO, never more than
// fits, until the FIFO has stayed full for a while: the daemon then holds
// a chunk in a write the peer does not take and the FIFO behind it is
// full. It returns the new position in stream.
func fillUntilStuck(t *testing.T, c *shimtest.Client, id uint32, stream []byte, from int) int {
	t.Helper()
	sh := c.Sock(id)
	size := uint32(c.Seg.Layout.TxFIFO)
	pos := from
	stuckSince := time.Time{}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		free := size - (atomic.LoadUint32(&sh.Tx_tail) - atomic.LoadUint32(&sh.Tx_head))
		if free == 0 {
			if stuckSince.IsZero() {
				stuckSince = time.Now()
			} else if time.Since(stuckSince) > 200*time.Millisecond {
				return pos
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		stuckSince = time.Time{}
		n := min(int(free), len(stream)-pos)
		if n == 0 {
			t.Fatalf("wrote all %d bytes of the stream and the daemon still takes more", len(stream))
		}
		if _, err := c.Write(id, stream[pos:pos+n]); err != nil {
			t.Fatalf("write at %d: %v", pos, err)
		}
		pos += n
	}
	t.Fatalf("tx FIFO never stayed full (%d bytes written)", pos-from)
	return pos
}

// expectStream reads the peer to EOF and checks it got exactly want.
func expectStream(t *testing.T, peer *net.TCPConn, want []byte) {
	t.Helper()
	peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("peer read after %d of %d bytes: %v", len(got), len(want), err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("peer got %d bytes then EOF, want %d; first difference at byte %d", len(got), len(want), i)
	}
}

// TestTxDrainedBeforeFIN: whatever a socket's references left in their tx
// FIFOs reaches the peer, in order and before the FIN, however the
// writers let go of the socket while the daemon's send is blocked
// (a slow peer) and the FIFO behind it is full: SHUT_WR then CLOSE, CLOSE
// alone, SHUT_WR then the process's exit (no CLOSE), and a fork child that
// writes the tail after its parent closed its reference. This is the
// sequence of a server finishing a download on a soft stop or a reload.
// On the kernel backend; TestOnStackTxDrainedBeforeFIN runs it on the
// sharded stack.
func TestTxDrainedBeforeFIN(t *testing.T) {
	stream := randBytes(32 << 20)
	for _, how := range txEndings {
		t.Run(how, func(t *testing.T) {
			testTxDrained(t, start(t), how, stream, loopback, func(ap string) *net.TCPConn { return slowPeer(t, ap) })
		})
	}
}

var txEndings = []string{"shutdown-close", "close", "shutdown-exit", "fork-child-finishes"}

func testTxDrained(t *testing.T, e *env, how string, stream []byte, at netip.AddrPort, dial func(ap string) *net.TCPConn) {
	c, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	ap, err := c.Listen(ls, at, 16)
	if err != nil {
		t.Fatal(err)
	}
	peer := dial(ap.String())
	cs, _, err := c.Accept(ls)
	if err != nil {
		t.Fatal(err)
	}
	n := fillUntilStuck(t, c, cs, stream, 0)
	t.Logf("%d bytes written before the tx FIFO stayed full", n)
	shut := func(cl *shimtest.Client) {
		if _, err := cl.Call(abi.Req{Op: abi.OpShutdown, Sock: cs, Arg0: syscall.SHUT_WR}); err != nil {
			t.Fatal(err)
		}
	}
	switch how {
	case "shutdown-close":
		shut(c)
		if err := c.CloseSock(cs); err != nil {
			t.Fatal(err)
		}
	case "close":
		if err := c.CloseSock(cs); err != nil {
			t.Fatal(err)
		}
	case "shutdown-exit":
		shut(c)
		c.Close() // EOF on the control connection: the daemon detaches everything
		closed = true
	case "fork-child-finishes":
		cm, err := c.Call(abi.Req{Op: abi.OpForkPrepare})
		if err != nil {
			t.Fatal(err)
		}
		token := binary.LittleEndian.Uint64(cm.Data[:8])
		child, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloForkChild|abi.HelloWakeAck))
		if err != nil {
			t.Fatal(err)
		}
		defer child.Close()
		if k, err := child.Inherit(token, ls, cs); err != nil || k != 2 {
			t.Fatalf("inherit: %d, %v", k, err)
		}
		// The parent lets go while the daemon's send is blocked and its
		// FIFO is full; the child writes the rest.
		if err := c.CloseSock(cs); err != nil {
			t.Fatal(err)
		}
		tail := stream[n : n+3000]
		if _, err := child.Write(cs, tail); err != nil {
			t.Fatal(err)
		}
		n += len(tail)
		shut(child)
		if err := child.CloseSock(cs); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown ending %q", how)
	}
	expectStream(t, peer, stream[:n])
}
