package stack

import (
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestFirstPacketToNewNeighbour: a SYN-ACK to a client the server's kernel
// has not resolved is held while the kernel resolves it, then sent, not
// dropped (which cost the client a SYN retransmission: a second). The
// client is given a permanent neighbour entry for the server, so it sends
// its SYN without an ARP request and the server's kernel learns nothing
// from it: fsstack's first answer always finds the next hop unresolved.
func TestFirstPacketToNewNeighbour(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7700")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	out, err := exec.Command("ip", "-n", lab.ServerNS, "-br", "link", "show", "dev", lab.ServerIf).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		t.Fatalf("ip -br link: %q", out)
	}
	mac := f[2]
	if out, err := exec.Command("ip", "-n", lab.ClientNS, "neigh", "replace", lab.ServerAddr.String(),
		"lladdr", mac, "dev", lab.ClientIf, "nud", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("ip neigh replace: %v: %s", err, out)
	}
	d := newNSDialer(t, lab.ClientNS, 1)
	var got []byte
	d.run(func() {
		var c net.Conn
		c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(context.Background(), "tcp4", lab.ServerAddr.String()+":7700")
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err = io.ReadAll(c)
	})
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	var held, dropped, retrans uint64
	for i, sh := range s.Stats() {
		held += sh.TxHeld
		dropped += sh.TxDropped
		retrans += s.shards[i].st.Stats().TCP.Retransmits.Value()
	}
	if held == 0 {
		t.Errorf("no packet was held for the unresolved client (the path under test did not run)")
	}
	if dropped != 0 || retrans != 0 {
		t.Errorf("%d frames dropped, %d segments retransmitted; want none: the first answer waits for the neighbour", dropped, retrans)
	}
}
