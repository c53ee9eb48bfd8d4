package stack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/fsstack/fsstack/internal/netlab"
)

// echoPeer answers each connection with a line naming the peer as the
// accepting side sees it (netip form, so a v4-mapped address shows as
// such), then echoes everything until the peer half-closes.
func echoPeer(ln net.Listener) {
	serveEach(ln, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort())
		io.Copy(c, c)
	})
}

// exchange sends n random bytes over c, half-closes, and checks that the
// same bytes come back after the peer's line, which it returns.
func exchange(c net.Conn, n int) (string, error) {
	defer c.Close()
	data := make([]byte, n)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read peer line: %w", err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("read echo after %d bytes: %w", len(got), err)
	}
	if err := <-errc; err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return "", fmt.Errorf("echo differs: %d bytes back of %d", len(got), n)
	}
	return strings.TrimSpace(line), nil
}

// TestIPv6DualStack: a listener on [::] serves kernel clients over IPv6
// and IPv4 (an IPv4 client shows v4-mapped), byte-exact both ways, on
// several shards; the link-local address the kernel adds after its DAD
// reaches the stack while it runs.
func TestIPv6DualStack(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	if !s.OwnsAddr(lab.ServerAddr6) || s.OwnsAddr(lab.ClientAddr6) || !s.Reaches(lab.ClientAddr6) || s.Reaches(netip.IPv6Loopback()) {
		t.Fatalf("OwnsAddr/Reaches for IPv6 wrong: own %v, peer %v, reach peer %v, reach ::1 %v",
			s.OwnsAddr(lab.ServerAddr6), s.OwnsAddr(lab.ClientAddr6), s.Reaches(lab.ClientAddr6), s.Reaches(netip.IPv6Loopback()))
	}
	ln, err := s.Listen("tcp", "[::]:7600")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if got := ln.Addr().String(); got != "[::]:7600" {
		t.Fatalf("listener address %s", got)
	}
	shards := make(chan int, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			shards <- c.(*Conn).Shard()
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort())
				io.Copy(c, c)
			}()
		}
	}()

	d := newNSDialer(t, lab.ClientNS, 8)
	const perFamily = 12
	var wg sync.WaitGroup
	errs := make(chan error, 2*perFamily)
	for i := 0; i < 2*perFamily; i++ {
		v6 := i%2 == 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			network, addr, wantPeer := "tcp4", lab.ServerAddr.String()+":7600", "[::ffff:"+lab.ClientAddr.String()+"]:"
			if v6 {
				network, addr, wantPeer = "tcp6", "["+lab.ServerAddr6.String()+"]:7600", "["+lab.ClientAddr6.String()+"]:"
			}
			var c net.Conn
			var err error
			d.run(func() { c, err = net.DialTimeout(network, addr, 5*time.Second) })
			if err != nil {
				errs <- fmt.Errorf("%s dial %s: %w", network, addr, err)
				return
			}
			line, err := exchange(c, 256<<10)
			if err != nil {
				errs <- fmt.Errorf("%s: %w", network, err)
				return
			}
			if !strings.HasPrefix(line, wantPeer) {
				errs <- fmt.Errorf("%s: the stack saw peer %s, want %s...", network, line, wantPeer)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	used := map[int]bool{}
	for len(shards) > 0 {
		used[<-shards] = true
	}
	if len(used) < 2 {
		t.Errorf("%d connections all accepted on shard(s) %v", 2*perFamily, used)
	}

	// The kernel's link-local address: tentative while its DAD runs, then
	// followed like any added address.
	ll := linkLocal(t, lab.ServerNS, lab.ServerIf)
	deadline := time.Now().Add(10 * time.Second)
	for !s.OwnsAddr(ll) {
		if time.Now().After(deadline) {
			t.Fatalf("link-local %s never reached the stack", ll)
		}
		time.Sleep(50 * time.Millisecond)
	}
	addr := net.JoinHostPort(ll.WithZone(lab.ClientIf).String(), "7600")
	var c net.Conn
	d.run(func() { c, err = net.DialTimeout("tcp6", addr, 5*time.Second) })
	if err != nil {
		t.Fatalf("dial link-local %s: %v", addr, err)
	}
	if _, err := exchange(c, 64<<10); err != nil {
		t.Fatalf("link-local: %v", err)
	}
}

// linkLocal returns the fe80:: address of ifname in ns.
func linkLocal(t *testing.T, ns, ifname string) netip.Addr {
	t.Helper()
	h, err := netns.GetFromPath(netlab.NSPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	link, err := nl.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := nl.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.IsLinkLocalUnicast() {
			return ip
		}
	}
	t.Fatalf("%s has no link-local address", ifname)
	return netip.Addr{}
}

// TestIPv6OnlyAndIPv4Only: "tcp6" serves IPv6 only and "tcp4" IPv4 only;
// the other family's SYN stays with the kernel, which refuses it.
func TestIPv6OnlyAndIPv4Only(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln6, err := s.Listen("tcp6", "[::]:7601")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln6.Close() })
	go echoPeer(ln6)
	ln4, err := s.Listen("tcp4", "0.0.0.0:7602")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln4.Close() })
	go echoPeer(ln4)
	lnA, err := s.Listen("tcp", "["+lab.ServerAddr6.String()+"]:7603")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lnA.Close() })
	go echoPeer(lnA)

	d := newNSDialer(t, lab.ClientNS, 1)
	try := func(network, addr string) error {
		var c net.Conn
		var err error
		d.run(func() { c, err = net.DialTimeout(network, addr, 5*time.Second) })
		if err != nil {
			return err
		}
		_, err = exchange(c, 1000)
		return err
	}
	v6, v4 := "["+lab.ServerAddr6.String()+"]", lab.ServerAddr.String()
	for _, c := range []struct {
		network, addr string
		ok            bool
	}{
		{"tcp6", v6 + ":7601", true},
		{"tcp4", v4 + ":7601", false},
		{"tcp4", v4 + ":7602", true},
		{"tcp6", v6 + ":7602", false},
		{"tcp6", v6 + ":7603", true},
	} {
		err := try(c.network, c.addr)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s %s: %v", c.network, c.addr, err)
		case !c.ok && !errors.Is(err, syscall.ECONNREFUSED):
			t.Errorf("%s %s: %v, want connection refused", c.network, c.addr, err)
		}
	}
	for _, c := range []struct{ network, addr string }{
		{"tcp4", "[::]:7604"}, {"tcp6", "0.0.0.0:7604"}, {"tcp6", "[::ffff:198.18.0.1]:7604"}, {"tcp6", "[fd00:f5::9]:7604"},
	} {
		if ln, err := s.Listen(c.network, c.addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%s, %s) succeeded", c.network, c.addr)
		}
	}
}

// TestIPv6Dial: the stack dials a kernel server over IPv6 (the next hop
// resolved by the kernel's neighbour discovery), from every shard in turn,
// byte-exact both ways.
func TestIPv6Dial(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	var kln net.Listener
	addr := "[" + lab.ClientAddr6.String() + "]:7700"
	if err := netlab.Do(lab.ClientNS, func() (err error) { kln, err = net.Listen("tcp6", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kln.Close() })
	go echoPeer(kln)

	const conns = 8
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	shards := make(chan int, conns)
	for i := 0; i < conns; i++ {
		network := []string{"tcp6", "tcp"}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := s.DialContext(ctx, network, addr)
			if err != nil {
				errs <- fmt.Errorf("dial %s %s: %w", network, addr, err)
				return
			}
			la := c.LocalAddr().(*net.TCPAddr).AddrPort()
			if q, ok := s.plan.owner(la.Port()); !ok || q != c.(*Conn).Shard() || la.Addr() != lab.ServerAddr6 {
				errs <- fmt.Errorf("local %s on shard %d: the port plan says %d (%v)", la, c.(*Conn).Shard(), q, ok)
			}
			shards <- c.(*Conn).Shard()
			line, err := exchange(c, 256<<10)
			if err != nil {
				errs <- err
				return
			}
			if line != la.String() {
				errs <- fmt.Errorf("the kernel saw %s, the stack's side is %s", line, la)
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(shards)
	for err := range errs {
		t.Error(err)
	}
	used := map[int]bool{}
	for q := range shards {
		used[q] = true
	}
	if len(used) != labQueues {
		t.Errorf("dials used shards %v, want all %d", used, labQueues)
	}
	if _, err := s.DialContext(context.Background(), "tcp4", addr); err == nil {
		t.Error("tcp4 dial of an IPv6 address succeeded")
	}
}

// TestBindIPv6: Bind with IPv6 addresses (the shim's AF_INET6 sockets): a
// dual-stack [::] serves kernel clients over IPv4 and IPv6 and holds the
// port against 0.0.0.0; an IPv6-only [::] serves IPv6 only, beside a
// 0.0.0.0 bind of the same port; a specific IPv6 address is IPv6 only; a
// dual-stack Bound dials IPv4 and IPv6 kernel servers.
func TestBindIPv6(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	listen := func(addr netip.AddrPort, opts BindOptions) net.Listener {
		t.Helper()
		b, err := s.Bind(addr, opts)
		if err != nil {
			t.Fatalf("Bind(%v, %+v): %v", addr, opts, err)
		}
		ln, err := b.Listen(16)
		if err != nil {
			t.Fatalf("Listen on %v: %v", b.Addr(), err)
		}
		t.Cleanup(func() { ln.Close() })
		go echoPeer(ln)
		return ln
	}
	dual := listen(netip.MustParseAddrPort("[::]:7610"), BindOptions{})
	if _, err := s.Bind(netip.MustParseAddrPort("0.0.0.0:7610"), BindOptions{}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("0.0.0.0 beside a dual-stack [::]: %v, want EADDRINUSE", err)
	}
	listen(netip.MustParseAddrPort("[::]:7611"), BindOptions{V6Only: true})
	listen(netip.MustParseAddrPort("0.0.0.0:7611"), BindOptions{})
	listen(netip.AddrPortFrom(lab.ServerAddr6, 7612), BindOptions{})
	if got := dual.Addr().(*net.TCPAddr).AddrPort(); got != netip.MustParseAddrPort("[::]:7610") {
		t.Errorf("dual-stack listener's address %v", got)
	}

	d := newNSDialer(t, lab.ClientNS, 1)
	try := func(network, addr string) (string, error) {
		var c net.Conn
		var err error
		d.run(func() { c, err = net.DialTimeout(network, addr, 5*time.Second) })
		if err != nil {
			return "", err
		}
		return exchange(c, 1000)
	}
	v6, v4 := "["+lab.ServerAddr6.String()+"]", lab.ServerAddr.String()
	for _, c := range []struct {
		network, addr string
		ok            bool
		peer          string // prefix of the peer the server saw
	}{
		{"tcp6", v6 + ":7610", true, "[" + lab.ClientAddr6.String() + "]:"},
		{"tcp4", v4 + ":7610", true, "[::ffff:" + lab.ClientAddr.String() + "]:"},
		{"tcp6", v6 + ":7611", true, "[" + lab.ClientAddr6.String() + "]:"},
		{"tcp4", v4 + ":7611", true, lab.ClientAddr.String() + ":"},
		{"tcp6", v6 + ":7612", true, "[" + lab.ClientAddr6.String() + "]:"},
		{"tcp4", v4 + ":7612", false, ""},
	} {
		peer, err := try(c.network, c.addr)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s %s: %v", c.network, c.addr, err)
		case c.ok && !strings.HasPrefix(peer, c.peer):
			t.Errorf("%s %s: the server saw %s, want %s...", c.network, c.addr, peer, c.peer)
		case !c.ok && !errors.Is(err, syscall.ECONNREFUSED):
			t.Errorf("%s %s: %v, want connection refused", c.network, c.addr, err)
		}
	}

	// a dual-stack Bound (port 0: from the reserved range) dials both
	// families; an IPv6-only one refuses IPv4
	kernelServer := func(network string, addr netip.AddrPort) netip.AddrPort {
		var kln net.Listener
		if err := netlab.Do(lab.ClientNS, func() (err error) { kln, err = net.Listen(network, addr.String()); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kln.Close() })
		go echoPeer(kln)
		return addr
	}
	srv6 := kernelServer("tcp6", netip.AddrPortFrom(lab.ClientAddr6, 7613))
	srv4 := kernelServer("tcp4", netip.AddrPortFrom(lab.ClientAddr, 7614))
	for _, raddr := range []netip.AddrPort{srv6, srv4, netip.AddrPortFrom(netip.AddrFrom16(srv4.Addr().As16()), srv4.Port())} {
		b, err := s.Bind(netip.MustParseAddrPort("[::]:0"), BindOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := b.DialContext(ctx, raddr)
		cancel()
		if err != nil {
			t.Errorf("dual-stack Bound dial %v: %v", raddr, err)
			continue
		}
		if _, err := exchange(c, 1000); err != nil {
			t.Errorf("dual-stack Bound dial %v: %v", raddr, err)
		}
	}
	b, err := s.Bind(netip.MustParseAddrPort("[::]:0"), BindOptions{V6Only: true})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := b.DialContext(context.Background(), srv4); !errors.Is(err, syscall.ENETUNREACH) {
		if c != nil {
			c.Close()
		}
		t.Errorf("IPv6-only Bound dial of %v: %v, want ENETUNREACH", srv4, err)
	}
}
