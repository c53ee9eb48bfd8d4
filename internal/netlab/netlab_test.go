//go:build linux

package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func TestMain(m *testing.M) {
	// Start the runtime poller first: its epoll and event fds live forever.
	if c, err := net.ListenPacket("udp4", "127.0.0.1:0"); err == nil {
		c.Close()
	}
	before := openFDs()
	goroutines := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		after := openFDs()
		var leaked []string
		for fd, target := range after {
			if _, ok := before[fd]; !ok {
				leaked = append(leaked, fd+" -> "+target)
			}
		}
		if len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "netlab: file descriptors leaked: %v\n", leaked)
			code = 1
		}
	}
	if code == 0 {
		// Goroutines of finished tests may take a moment to exit.
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > goroutines {
			buf := make([]byte, 1<<20)
			fmt.Fprintf(os.Stderr, "%s: %d goroutines leaked:\n%s\n", "netlab", n-goroutines, buf[:runtime.Stack(buf, true)])
			code = 1
		}
	}
	os.Exit(code)
}

func openFDs() map[string]string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory fd itself, already closed
		}
		m[e.Name()] = target
	}
	return m
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netlab tests need root (network namespaces, veth)")
	}
}

func TestLab(t *testing.T) {
	requireRoot(t)
	l, err := New(Options{Queues: 4, Name: "test", MTU: 2000})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	if len(l.ServerIf) > 15 || len(l.ClientIf) > 15 {
		t.Errorf("interface names too long: %q %q", l.ServerIf, l.ClientIf)
	}
	if len(l.ServerMAC) != 6 || len(l.ClientMAC) != 6 {
		t.Errorf("MACs not set: %v %v", l.ServerMAC, l.ClientMAC)
	}

	for _, e := range []struct{ ns, ifname string }{{l.ServerNS, l.ServerIf}, {l.ClientNS, l.ClientIf}} {
		h, err := netns.GetFromPath(NSPath(e.ns))
		if err != nil {
			t.Fatal(err)
		}
		nh, err := netlink.NewHandleAt(h)
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		link, err := nh.LinkByName(e.ifname)
		nh.Close()
		if err != nil {
			t.Fatalf("%s in %s: %v", e.ifname, e.ns, err)
		}
		if want := map[string]int{l.ServerIf: l.ServerIndex, l.ClientIf: l.ClientIndex}[e.ifname]; link.Attrs().Index != want || want == 0 {
			t.Errorf("%s: ifindex %d, Lab says %d", e.ifname, link.Attrs().Index, want)
		}
		if mtu := link.Attrs().MTU; mtu != 2000 {
			t.Errorf("%s: MTU %d, want 2000", e.ifname, mtu)
		}
		if a := link.Attrs(); a.NumRxQueues != 4 || a.NumTxQueues != 4 {
			t.Errorf("%s: %d rx / %d tx queues, want 4/4", e.ifname, a.NumRxQueues, a.NumTxQueues)
		}
	}

	// Cmd runs inside the namespace.
	out, err := l.Cmd(l.ServerNS, "ip", "-4", "addr", "show", "dev", l.ServerIf).CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "198.18.0.1/24") {
		t.Errorf("server address missing: %s", out)
	}

	t.Run("ping", func(t *testing.T) { ping(t, l) })
	t.Run("tcp", func(t *testing.T) { tcpEcho(t, l) })

	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for _, ns := range []string{l.ServerNS, l.ClientNS} {
		if _, err := os.Stat(NSPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s left behind: %v", ns, err)
		}
	}
	// The veth never existed in our namespace; make sure it does not now.
	for _, name := range []string{l.ServerIf, l.ClientIf} {
		if _, err := net.InterfaceByName(name); err == nil {
			t.Errorf("interface %s visible after Close", name)
		}
	}
	if err := Do(l.ServerNS, func() error { return nil }); err == nil {
		t.Error("Do in a removed namespace succeeded")
	}
}

// TestRoutedLab: the client reaches the server through the router, the
// router's link to the client has the narrower MTU, and Close removes all
// three namespaces.
func TestRoutedLab(t *testing.T) {
	requireRoot(t)
	l, err := New(Options{Queues: 2, Name: "rtd", Routed: true, RouterClientMTU: 1280})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.ClientAddr != RoutedClientAddr || l.RouterNS == "" {
		t.Fatalf("client %v, router namespace %q", l.ClientAddr, l.RouterNS)
	}
	for _, e := range []struct {
		ns, ifname string
		mtu        int
	}{{l.ServerNS, l.ServerIf, 1500}, {l.RouterNS, l.RouterServerIf, 1500}, {l.RouterNS, l.RouterClientIf, 1280}, {l.ClientNS, l.ClientIf, 1500}} {
		out, err := l.Cmd(e.ns, "ip", "link", "show", "dev", e.ifname).CombinedOutput()
		if err != nil {
			t.Fatalf("ip link show %s in %s: %v: %s", e.ifname, e.ns, err, out)
		}
		if !strings.Contains(string(out), fmt.Sprintf(" mtu %d ", e.mtu)) {
			t.Errorf("%s: want MTU %d: %s", e.ifname, e.mtu, out)
		}
	}
	t.Run("ping", func(t *testing.T) { ping(t, l) })
	t.Run("tcp", func(t *testing.T) { tcpEcho(t, l) })
	t.Run("tcp6", func(t *testing.T) { tcpEchoTo(t, l, "tcp6", l.ServerAddr6) })
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, ns := range []string{l.ServerNS, l.RouterNS, l.ClientNS} {
		if _, err := os.Stat(NSPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s left behind: %v", ns, err)
		}
	}
}

func ping(t *testing.T, l *Lab) {
	err := Do(l.ClientNS, func() error {
		c, err := icmp.ListenPacket("ip4:icmp", l.ClientAddr.String())
		if err != nil {
			return err
		}
		defer c.Close()
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x1234, Seq: 1, Data: []byte("netlab")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: l.ServerAddr.AsSlice()}); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		for {
			n, peer, err := c.ReadFrom(buf)
			if err != nil {
				return err
			}
			rm, err := icmp.ParseMessage(1, buf[:n])
			if err != nil {
				return err
			}
			if rm.Type == ipv4.ICMPTypeEchoReply && peer.String() == l.ServerAddr.String() {
				return nil
			}
		}
	})
	if err != nil {
		t.Fatalf("ping %s from %s: %v", l.ServerAddr, l.ClientNS, err)
	}
}

func tcpEcho(t *testing.T, l *Lab) { tcpEchoTo(t, l, "tcp4", l.ServerAddr) }

// tcpEchoTo echoes over a connection from the client to addr, a server
// address.
func tcpEchoTo(t *testing.T, l *Lab, network string, addr netip.Addr) {
	var ln net.Listener
	err := Do(l.ServerNS, func() error {
		var err error
		ln, err = net.Listen(network, netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// A plain loop: io.Copy between TCP conns splices through
		// pipes that the runtime caches, which the fd check would flag.
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}()

	var c net.Conn
	err = Do(l.ClientNS, func() error {
		var err error
		c, err = net.DialTimeout(network, ln.Addr().String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), l.ClientNS, err)
	}
	defer c.Close()
	wantClient := l.ClientAddr
	if network == "tcp6" {
		wantClient = l.ClientAddr6
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != wantClient.String() {
		t.Errorf("client address %s, want %s", got, wantClient)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	want := []byte("hello through the veth")
	if _, err := c.Write(want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo %q, want %q", got, want)
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	requireRoot(t)
	l, err := New(Options{Name: "do"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := Do(l.ServerNS, func() error {
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == before {
		t.Fatalf("Do did not switch namespace (%s)", inside)
	}
	// Many goroutines afterwards: none may land in the lab namespace.
	for i := 0; i < 50; i++ {
		done := make(chan string)
		go func() {
			s, _ := os.Readlink("/proc/thread-self/ns/net")
			done <- s
		}()
		if s := <-done; s != before {
			t.Fatalf("goroutine in namespace %s, want %s", s, before)
		}
	}
	wantErr := errors.New("boom")
	if err := Do(l.ClientNS, func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Fatalf("Do error %v, want %v", err, wantErr)
	}
}

func TestChecksumOffload(t *testing.T) {
	requireRoot(t)
	for _, keep := range []bool{false, true} {
		l, err := New(Options{Name: "csum", ChecksumOffload: keep})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range []struct{ ns, ifname string }{{l.ServerNS, l.ServerIf}, {l.ClientNS, l.ClientIf}} {
			var on bool
			if err := Do(e.ns, func() (err error) { on, err = txChecksum(e.ifname, nil); return err }); err != nil {
				t.Fatal(err)
			}
			if on != keep {
				t.Errorf("ChecksumOffload %v: %s has tx checksum offload %v", keep, e.ifname, on)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSweep(t *testing.T) {
	requireRoot(t)
	// A lab of this (live) process survives a sweep.
	l, err := New(Options{Name: "sweep"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// A leftover of a dead process: a namespace named like a lab with a
	// pid that cannot exist (above pid_max's ceiling of 2^22).
	dead := "fs-sweep-9999999-0123abcd-srv"
	if err := newNamed(dead); err != nil {
		t.Fatal(err)
	}
	removed, err := Sweep()
	if err != nil {
		// Leftovers that other runs left hidden under a bind mount of
		// the directory are not this test's; anything else is.
		var other []error
		for _, e := range unwrapJoined(err) {
			if !errors.Is(e, ErrShadowed) {
				other = append(other, e)
			}
		}
		if len(other) > 0 {
			t.Fatal(errors.Join(other...))
		}
		t.Logf("leftovers Sweep cannot reach: %v", err)
	}
	// Leftovers of other crashed runs may be swept too; only the planted
	// one must be among them, and nothing of a live process.
	found := false
	for _, name := range removed {
		switch {
		case name == dead:
			found = true
		case strings.Contains(name, fmt.Sprintf("-%d-", os.Getpid())):
			t.Errorf("Sweep removed %s, a namespace of this live process", name)
		}
	}
	if !found {
		t.Errorf("Sweep removed %v, want it to include %s", removed, dead)
	}
	if _, err := os.Stat(NSPath(dead)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there: %v", dead, err)
	}
	for _, ns := range []string{l.ServerNS, l.ClientNS} {
		if _, err := os.Stat(NSPath(ns)); err != nil {
			t.Errorf("live lab namespace %s swept: %v", ns, err)
		}
	}
	if _, err := New(Options{Name: "bad-name"}); err == nil {
		t.Error("name with '-' accepted")
	}
}

func TestConcurrentLabs(t *testing.T) {
	requireRoot(t)
	const n = 4
	labs := make([]*Lab, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			labs[i], errs[i] = New(Options{Name: "par", Queues: 2})
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, l := range labs {
		if errs[i] != nil {
			t.Errorf("lab %d: %v", i, errs[i])
			continue
		}
		for _, name := range []string{l.ServerNS, l.ClientNS, l.ServerIf, l.ClientIf} {
			if seen[name] {
				t.Errorf("name %s used twice", name)
			}
			seen[name] = true
		}
	}
	// Each lab is its own world: the same addresses, separate links.
	for _, l := range labs {
		if l != nil {
			ping(t, l)
		}
	}
	for _, l := range labs {
		if l != nil {
			if err := l.Close(); err != nil {
				t.Error(err)
			}
		}
	}
}

func unwrapJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
