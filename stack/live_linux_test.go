package stack

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// sinkReport is what sinkServe answers a connection with once the peer has
// finished sending: the bytes it read and their digest.
type sinkReport struct {
	n     uint64
	sum   [32]byte
	local netip.AddrPort // the address the connection was made to
	err   error
}

// sinkServe reads every connection ln accepts to its end, answers with the
// byte count (8 bytes, big endian) and the SHA-256 of what it read, and
// reports the same on reports.
func sinkServe(ln net.Listener, reports chan<- sinkReport) {
	serveEach(ln, func(c net.Conn) {
		r := sinkReport{local: c.LocalAddr().(*net.TCPAddr).AddrPort()}
		h := sha256.New()
		var n int64
		n, r.err = io.Copy(h, c)
		r.n = uint64(n)
		copy(r.sum[:], h.Sum(nil))
		if r.err == nil {
			var out [40]byte
			binary.BigEndian.PutUint64(out[:8], r.n)
			copy(out[8:], r.sum[:])
			_, r.err = c.Write(out[:])
		}
		reports <- r
	})
}

// sinkFinish half-closes c, reads the sink's answer and compares it with
// what was written (n bytes hashed into h).
func sinkFinish(c net.Conn, n uint64, h hash.Hash) error {
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return fmt.Errorf("close write after %d bytes: %w", n, err)
	}
	var in [40]byte
	if _, err := io.ReadFull(c, in[:]); err != nil {
		return fmt.Errorf("read the sink's count after sending %d bytes: %w", n, err)
	}
	got := binary.BigEndian.Uint64(in[:8])
	if sum := h.Sum(nil); got != n || string(in[8:]) != string(sum) {
		return fmt.Errorf("sent %d bytes (digest %x), the sink read %d (digest %x)", n, sum[:4], got, in[8:12])
	}
	return nil
}

// stream writes a deterministic byte stream on c, a chunk at a time with a
// pause between chunks (traffic that keeps flowing without taking the
// machine), until stop is closed; then it finishes with the sink.
func stream(c net.Conn, seed int64, stop <-chan struct{}) (uint64, error) {
	rng := rand.New(rand.NewSource(seed))
	h := sha256.New()
	buf := make([]byte, 16<<10)
	var n uint64
	for {
		select {
		case <-stop:
			return n, sinkFinish(c, n, h)
		default:
		}
		rng.Read(buf)
		if _, err := c.Write(buf); err != nil {
			return n, fmt.Errorf("write after %d bytes: %w", n, err)
		}
		h.Write(buf)
		n += uint64(len(buf))
		time.Sleep(time.Millisecond)
	}
}

// until polls cond until it holds; the bound only stops a test whose
// condition never comes true, it is not what the test measures.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ipIn(t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %v: %v: %s", ns, args, err, out)
	}
}

// TestLiveAddressAndRoute adds an address and a route to the stack's
// interface while two connections (one the stack accepted, one it dialled)
// carry data, uses them, removes them again, and checks that the two
// connections lost nothing.
func TestLiveAddressAndRoute(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	added := netip.MustParseAddr("198.18.0.77") // on the stack's interface, the lab's subnet
	far := netip.MustParseAddr("198.18.9.1")    // on the client's lo, reached through the client
	farNet := netip.MustParsePrefix("198.18.9.0/24")

	reports := make(chan sinkReport, 8)
	go sinkServe(mustListen(t, s, ":7500"), reports)
	kernelReports := make(chan sinkReport, 8)
	go sinkServe(listenIn(t, lab.ClientNS, lab.ClientAddr.String()+":7501"), kernelReports)

	// The flows that must not notice: one accepted by the stack, one it
	// dialled.
	stop := make(chan struct{})
	type flowResult struct {
		name string
		n    uint64
		err  error
	}
	results := make(chan flowResult, 2)
	d := newNSDialer(t, lab.ClientNS, 1)
	in, err := d.dial(lab.ServerAddr.String() + ":7500")
	if err != nil {
		t.Fatalf("dial the stack: %v", err)
	}
	defer in.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.DialContext(ctx, "tcp", lab.ClientAddr.String()+":7501")
	if err != nil {
		t.Fatalf("dial the kernel peer: %v", err)
	}
	defer out.Close()
	var flows sync.WaitGroup
	for _, f := range []struct {
		name string
		c    net.Conn
		seed int64
	}{{"accepted flow", in, 11}, {"dialled flow", out, 12}} {
		flows.Add(1)
		go func() {
			defer flows.Done()
			n, err := stream(f.c, f.seed, stop)
			results <- flowResult{f.name, n, err}
		}()
	}
	stopFlows := sync.OnceFunc(func() { close(stop); flows.Wait() })
	defer stopFlows()

	steered := func(a netip.Addr) bool {
		tb, err := s.sys.steering.Tables()
		if err != nil {
			t.Fatalf("read steering tables: %v", err)
		}
		return slices.Contains(tb.Addrs, a)
	}
	onShards := func(a netip.Addr) (n int) {
		for _, sh := range s.shards {
			for _, pa := range sh.st.AllAddresses()[nicID] {
				if pa.AddressWithPrefix.Address == tcpip.AddrFrom4(a.As4()) {
					n++
				}
			}
		}
		return n
	}
	routed := func(p netip.Prefix) (n int) {
		for _, sh := range s.shards {
			for _, r := range sh.st.GetRouteTable() {
				if r.Destination.ID() == tcpip.AddrFrom4(p.Addr().As4()) && r.Destination.Prefix() == p.Bits() {
					n++
				}
			}
		}
		return n
	}
	sinkDial := func(dial func() (net.Conn, error), msg string) error {
		c, err := dial()
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		h := sha256.New()
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		h.Write([]byte(msg))
		return sinkFinish(c, uint64(len(msg)), h)
	}
	dialFar := func(ctx context.Context) (net.Conn, error) {
		return s.DialContext(ctx, "tcp", far.String()+":7601")
	}

	// Before: neither the address nor the route is known.
	if s.OwnsAddr(added) || steered(added) || onShards(added) != 0 {
		t.Fatalf("%v known before it was added", added)
	}
	ipIn(t, lab.ClientNS, "addr", "add", far.String()+"/32", "dev", "lo")
	go sinkServe(listenIn(t, lab.ClientNS, far.String()+":7601"), kernelReports)
	if err := sinkDial(func() (net.Conn, error) { return dialFar(context.Background()) }, "x"); err == nil {
		t.Fatalf("dial %v before the route exists: succeeded", far)
	}

	// Add the address: every shard takes it, the steering program steers
	// it, and a new connection to it is the stack's.
	ipIn(t, lab.ServerNS, "addr", "add", added.String()+"/24", "dev", lab.ServerIf)
	until(t, "the added address on every shard and in the steering map", func() bool {
		return s.OwnsAddr(added) && steered(added) && onShards(added) == len(s.shards)
	})
	if err := sinkDial(func() (net.Conn, error) { return d.dial(added.String() + ":7500") }, "to the added address"); err != nil {
		t.Fatalf("connect to the added address %v: %v", added, err)
	}
	// The listener on ":7500" is dual-stack: an IPv4 connection's local
	// address shows v4-mapped, as on a Linux AF_INET6 socket.
	if r := <-reports; r.err != nil || r.local.Addr().Unmap() != added {
		t.Fatalf("the stack's listener served %v (err %v), want a connection to %v", r.local, r.err, added)
	}
	ln, err := s.Listen("tcp", added.String()+":7502")
	if err != nil {
		t.Fatalf("listen on the added address: %v", err)
	}
	ln.Close()

	// Add the route: every shard routes through the client to far.
	ipIn(t, lab.ServerNS, "route", "add", farNet.String(), "via", lab.ClientAddr.String(), "dev", lab.ServerIf)
	until(t, "the added route on every shard", func() bool { return routed(farNet) == len(s.shards) })
	if err := sinkDial(func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return dialFar(ctx)
	}, "through the added route"); err != nil {
		t.Fatalf("connect through the added route to %v: %v", far, err)
	}
	if r := <-kernelReports; r.err != nil || r.local.Addr() != far {
		t.Fatalf("the peer served %v (err %v), want a connection to %v", r.local, r.err, far)
	}

	// Remove both: the shards forget them, steering hands the address
	// back to the kernel, and neither a connection to it nor a listener
	// on it is accepted any more.
	ipIn(t, lab.ServerNS, "route", "del", farNet.String(), "via", lab.ClientAddr.String(), "dev", lab.ServerIf)
	until(t, "the route gone from every shard", func() bool { return routed(farNet) == 0 })
	if err := sinkDial(func() (net.Conn, error) { return dialFar(context.Background()) }, "x"); err == nil {
		t.Fatalf("dial %v after its route was removed: succeeded", far)
	}
	ipIn(t, lab.ServerNS, "addr", "del", added.String()+"/24", "dev", lab.ServerIf)
	until(t, "the removed address gone from the shards and the steering map", func() bool {
		return !s.OwnsAddr(added) && !steered(added) && onShards(added) == 0
	})
	if _, err := s.Listen("tcp", added.String()+":7502"); err == nil {
		t.Fatalf("listen on the removed address %v: succeeded", added)
	}
	var c net.Conn
	d.run(func() { c, err = net.DialTimeout("tcp", added.String()+":7500", time.Second) })
	if err == nil {
		c.Close()
		t.Fatalf("connect to the removed address %v: accepted", added)
	}

	// The flows kept going through all of it and lost nothing.
	stopFlows()
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
		} else {
			t.Logf("%s: %d bytes, digests match", r.name, r.n)
		}
	}
	for _, ch := range []chan sinkReport{reports, kernelReports} {
		if r := <-ch; r.err != nil {
			t.Errorf("sink of %v: %v", r.local, r.err)
		}
	}
	if t.Failed() {
		t.Log("stack stats:", s.Stats())
	}
}
