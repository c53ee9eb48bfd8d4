//go:build linux

package afxdp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// BenchmarkVethPPS sends 64-byte TCP frames (to the steered port) from an
// AF_XDP socket on the client end's queue 0 to the server end, where the
// steering program redirects them to the server socket of queue 0, and
// reports frames per second received. Both ends run in copy mode.
//
//	client Socket q0 --TxFrame/Submit (sendto)--> veth --> XDP steer
//	  --> XSKMAP[0] --> server Socket q0 --Receive/Release--> count
func BenchmarkVethPPS(b *testing.B) {
	requireRoot(b)
	lab, err := netlab.New(netlab.Options{Queues: 1, Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer lab.Close()
	var steer *Steering
	var srv, cli *Socket
	defer func() {
		for _, c := range []interface{ Close() error }{cli, srv, steer} {
			if c != nil {
				c.Close()
			}
		}
	}()
	err = netlab.Do(lab.ServerNS, func() error {
		ifc, err := net.InterfaceByName(lab.ServerIf)
		if err != nil {
			return err
		}
		if steer, err = LoadSteering(SteeringOptions{Queues: 1}); err != nil {
			return err
		}
		if _, err := steer.Attach(ifc.Index, AttachNative); err != nil {
			return err
		}
		if srv, err = Open(ifc.Index, 0, SocketConfig{}); err != nil {
			return err
		}
		if err := steer.SetSocket(0, srv); err != nil {
			return err
		}
		if err := steer.AddAddr(lab.ServerAddr); err != nil {
			return err
		}
		return steer.AddPort(lab.ServerAddr, 9999)
	})
	if err != nil {
		b.Fatal(err)
	}
	err = netlab.Do(lab.ClientNS, func() error {
		ifc, err := net.InterfaceByName(lab.ClientIf)
		if err != nil {
			return err
		}
		cli, err = Open(ifc.Index, 0, SocketConfig{})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	frame := frameSpec{srcMAC: lab.ClientMAC, dstMAC: lab.ServerMAC, flags: TCPFlagACK,
		src: netip.AddrPortFrom(lab.ClientAddr, 40000), dst: netip.AddrPortFrom(lab.ServerAddr, 9999),
		payload: make([]byte, 10)}.build()

	received := make(chan uint64)
	stop := make(chan struct{})
	go func() {
		descs := make([]Desc, 64)
		var n uint64
		for {
			select {
			case <-stop:
				received <- n
				return
			default:
			}
			k := srv.Receive(descs)
			n += uint64(k)
			srv.Release(descs[:k])
		}
	}()

	b.ResetTimer()
	start := time.Now()
	batch := make([]Desc, 0, 64)
	for sent := 0; sent < b.N; {
		batch = batch[:0]
		for len(batch) < cap(batch) && sent+len(batch) < b.N {
			d, buf, ok := cli.TxFrame()
			if !ok {
				break
			}
			d.Len = uint32(copy(buf, frame))
			batch = append(batch, d)
		}
		n := cli.Submit(batch)
		cli.Discard(batch[n:])
		sent += n
	}
	// Let the receiver drain what is in flight.
	time.Sleep(20 * time.Millisecond)
	close(stop)
	got := <-received
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "rx-pps")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tx-pps")
	b.ReportMetric(100*float64(uint64(b.N)-min(got, uint64(b.N)))/float64(b.N), "%lost")
	ss, _ := srv.Stats()
	cs, _ := cli.Stats()
	st, _ := steer.Stats()
	b.Logf("server socket %+v", ss)
	b.Logf("client socket %+v", cs)
	b.Logf("steering %+v", st)
}
