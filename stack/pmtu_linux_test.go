package stack

import (
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// pmtuSize is what TestPMTUDiscovery sends: several MiB, so the transfer
// runs well past the first too-big segments.
const pmtuSize = 8 << 20

// TestPMTUDiscovery sends from fsstack to a client behind a router whose
// link to the client has a smaller MTU (1280) than both ends' links
// (1500): the client advertises an MSS of 1460, the router answers
// fsstack's full-sized segments (DF set) with ICMP "fragmentation needed",
// and the transfer completes, byte-exact, only if those errors reach the
// owning shard's netstack and it lowers the flow's MSS.
func TestPMTUDiscovery(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) { testPMTU(t, false) })
	t.Run("ipv6", func(t *testing.T) { testPMTU(t, true) })
}

// testPMTU is TestPMTUDiscovery over IPv4 (ICMP fragmentation needed) or
// IPv6 (ICMPv6 packet too big; the router never fragments IPv6).
func testPMTU(t *testing.T, v6 bool) {
	requireRoot(t)
	lab, err := netlab.New(netlab.Options{Queues: labQueues, Name: "pmtu", Routed: true, RouterClientMTU: 1280})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	s := newLabStack(t, lab)

	body := pattern(pmtuSize, 3)
	want := sha256.Sum256(body)
	ln := mustListen(t, s, ":7700")
	go serveEach(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		c.Write(body)
	})

	d := newNSDialer(t, lab.ClientNS, 1)
	dst := netip.AddrPortFrom(lab.ServerAddr, 7700)
	if v6 {
		dst = netip.AddrPortFrom(lab.ServerAddr6, 7700)
	}
	c, err := d.dial(dst.String())
	if err != nil {
		t.Fatalf("dial through the router: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("after %d of %d bytes: %v", n, pmtuSize, err)
	}
	var got [32]byte
	copy(got[:], h.Sum(nil))
	if n != pmtuSize || got != want {
		t.Fatalf("received %d bytes (digest %x), want %d (digest %x)", n, got[:4], pmtuSize, want[:4])
	}
	var tooBig uint64
	for _, sh := range s.shards {
		if v6 {
			tooBig += sh.st.Stats().ICMP.V6.PacketsReceived.PacketTooBig.Value()
		} else {
			tooBig += sh.st.Stats().ICMP.V4.PacketsReceived.DstUnreachable.Value()
		}
	}
	if tooBig == 0 {
		t.Fatal("the transfer completed but no shard's netstack received a too-big error: the path was not narrower than the MSS")
	}
	t.Logf("%d bytes byte-exact; the shards received %d too-big errors", n, tooBig)
}
