package daemon_test

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
)

// twoShards is the kernel backend made to look sharded: a connection's
// shard is its peer port's parity.
type twoShards struct{ daemon.KernelBackend }

type shardedLn struct{ net.Listener }

func (shardedLn) Shards() int { return 2 }

func (l shardedLn) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return shardConn{c}, nil
}

type shardConn struct{ net.Conn }

func (c shardConn) Shard() int { return c.RemoteAddr().(*net.TCPAddr).Port % 2 }

func (b twoShards) Listen(network, address string) (net.Listener, error) {
	ln, err := b.KernelBackend.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return shardedLn{ln}, nil
}

// TestAcceptPrefersOwnShard: a worker on CPU q takes shard q's connections
// first, then the other shard's (none stranded).
func TestAcceptPrefersOwnShard(t *testing.T) {
	e := startWith(t, twoShards{})
	c := e.attach(t)
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	// No bind: twoShards is not a Binder, LISTEN goes through Listen.
	if _, err := c.Call(abi.Req{Op: abi.OpListen, Sock: ls, Arg0: 16}); err != nil {
		t.Fatal(err)
	}
	cm, _ := c.Call(abi.Req{Op: abi.OpGetsockname, Sock: ls})
	port := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), decodePort(cm.Data))

	var peers []net.Conn
	want := map[int]int{} // shard -> count
	for range 6 {
		p, err := net.Dial("tcp4", port.String())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		peers = append(peers, p)
		want[p.LocalAddr().(*net.TCPAddr).Port%2]++
	}
	if err := c.Wait(func() bool { return c.Sock(ls).Accept_pending == 6 }); err != nil {
		t.Fatalf("6 connections never queued: %v", err)
	}
	var order []int32
	for range 6 {
		cm, err := c.Call(abi.Req{Op: abi.OpAccept, Sock: ls, Flags: abi.ReqCPU, Arg0: 3}) // CPU 3: shard 1
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, cm.Val0)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpAccept, Sock: ls, Flags: abi.ReqCPU, Arg0: 3}); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("seventh accept: %v, want EAGAIN", err)
	}
	// Shard 1's connections first, then shard 0's.
	for i, s := range order {
		exp := int32(0)
		if i < want[1] {
			exp = 1
		}
		if s != exp {
			t.Fatalf("accept order by shard %v; want %d from shard 1 first, then %d from shard 0", order, want[1], want[0])
		}
	}
	st := e.d.Stats()
	if st.AcceptLocal != uint64(want[1]) || st.AcceptRemote != uint64(want[0]) {
		t.Errorf("stats local %d remote %d, want %d and %d", st.AcceptLocal, st.AcceptRemote, want[1], want[0])
	}
}

func decodePort(b [32]byte) uint16 { return uint16(b[2])<<8 | uint16(b[3]) }
