//go:build linux

package afxdp_test

import (
	"log"
	"net"
	"net/netip"

	"github.com/fsstack/fsstack/afxdp"
	"golang.org/x/sys/unix"
)

// Steer TCP port 8080 of 192.0.2.10 on eth1's queue 0 into an AF_XDP
// socket, then echo every frame back with the MACs swapped.
func Example() {
	ifc, err := net.InterfaceByName("eth1")
	if err != nil {
		log.Fatal(err)
	}
	steer, err := afxdp.LoadSteering(afxdp.SteeringOptions{Queues: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer steer.Close()
	sock, err := afxdp.Open(ifc.Index, 0, afxdp.SocketConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer sock.Close()
	if err := steer.SetSocket(0, sock); err != nil {
		log.Fatal(err)
	}
	steer.AddAddr(netip.MustParseAddr("192.0.2.10"))
	steer.AddPort(netip.IPv4Unspecified(), 8080)
	if _, err := steer.Attach(ifc.Index, afxdp.AttachAuto); err != nil {
		log.Fatal(err)
	}

	rx := make([]afxdp.Desc, 64)
	tx := make([]afxdp.Desc, 0, 64)
	for {
		n := sock.Receive(rx)
		if n == 0 {
			// Sleep until the rx ring has frames.
			unix.Poll([]unix.PollFd{{Fd: int32(sock.FD()), Events: unix.POLLIN}}, -1)
			continue
		}
		tx = tx[:0]
		for _, d := range rx[:n] {
			in := sock.Frame(d)
			out, buf, ok := sock.TxFrame()
			if !ok {
				break // every tx frame in flight: drop the rest
			}
			out.Len = uint32(copy(buf, in))
			copy(buf[0:6], in[6:12]) // dst MAC = old src
			copy(buf[6:12], in[0:6])
			tx = append(tx, out)
		}
		sock.Release(rx[:n]) // rx frames back to the kernel
		posted := sock.Submit(tx)
		sock.Discard(tx[posted:]) // what did not fit on the tx ring
	}
}
