//go:build linux

package afxdp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
	"golang.org/x/net/ipv4"
)

// BenchmarkVethPPS measures small-frame throughput from the client end of
// a 1-queue veth lab to the server end, for AF_XDP and, in the same run,
// for the kernel's UDP path (sendmmsg/recvmmsg) as the yardstick. Each
// reports rx-pps, tx-pps and %lost. Both AF_XDP ends run in copy mode.
//
//	afxdp:      client Socket q0 --Submit (sendto)--> veth --> XDP steer
//	            --> XSKMAP[0] --> server Socket q0 --Receive/Release
//	kernel-udp: client UDP sendmmsg --> veth --> server UDP recvmmsg
func BenchmarkVethPPS(b *testing.B) {
	requireRoot(b)
	b.Run("afxdp", benchAFXDP)
	b.Run("kernel-udp", benchKernelUDP)
}

func newBenchLab(b *testing.B) *netlab.Lab {
	lab, err := netlab.New(netlab.Options{Queues: 1, Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lab.Close() })
	return lab
}

func reportPPS(b *testing.B, sent int, got uint64, elapsed time.Duration) {
	b.ReportMetric(float64(got)/elapsed.Seconds(), "rx-pps")
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "tx-pps")
	b.ReportMetric(100*float64(uint64(sent)-min(got, uint64(sent)))/float64(sent), "%lost")
	b.ReportMetric(0, "ns/op") // per-op time is meaningless here; pps says it
}

func benchAFXDP(b *testing.B) {
	lab := newBenchLab(b)
	var steer *Steering
	var srv, cli *Socket
	b.Cleanup(func() {
		for _, c := range []interface{ Close() error }{cli, srv, steer} {
			if c != nil {
				c.Close()
			}
		}
	})
	err := netlab.Do(lab.ServerNS, func() (err error) {
		if steer, err = LoadSteering(SteeringOptions{Queues: 1}); err != nil {
			return err
		}
		if _, err := steer.Attach(lab.ServerIndex, AttachNative); err != nil {
			return err
		}
		if srv, err = Open(lab.ServerIndex, 0, SocketConfig{}); err != nil {
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
	if err := netlab.Do(lab.ClientNS, func() (err error) {
		cli, err = Open(lab.ClientIndex, 0, SocketConfig{})
		return err
	}); err != nil {
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
	time.Sleep(20 * time.Millisecond) // let the receiver drain what is in flight
	close(stop)
	got := <-received
	elapsed := time.Since(start)
	b.StopTimer()
	reportPPS(b, b.N, got, elapsed)
}

func benchKernelUDP(b *testing.B) {
	lab := newBenchLab(b)
	var srv, cli *net.UDPConn
	if err := netlab.Do(lab.ServerNS, func() error {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.ServerAddr, 9999)))
		srv = c
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	srv.SetReadBuffer(8 << 20)
	if err := netlab.Do(lab.ClientNS, func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(lab.ServerAddr, 9999)))
		cli = c
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer cli.Close()

	received := make(chan uint64)
	go func() {
		pc := ipv4.NewPacketConn(srv)
		msgs := make([]ipv4.Message, 64)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		var n uint64
		for {
			srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			k, err := pc.ReadBatch(msgs, 0)
			n += uint64(k)
			if err != nil {
				received <- n // a quiet 20 ms: the sender is done
				return
			}
		}
	}()

	payload := make([]byte, 18) // 14+20+8+18 = a 60-byte frame, as small as afxdp's
	pc := ipv4.NewPacketConn(cli)
	msgs := make([]ipv4.Message, 64)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{payload}
	}
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		k, err := pc.WriteBatch(msgs[:min(len(msgs), b.N-sent)], 0)
		if err != nil {
			b.Fatal(err)
		}
		sent += k
	}
	got := <-received
	elapsed := time.Since(start) - 20*time.Millisecond
	b.StopTimer()
	reportPPS(b, b.N, got, elapsed)
}

// BenchmarkSteeringProgram measures the steering program's own cost per
// frame in the kernel (BPF_PROG_TEST_RUN with repeat) for each path. With
// no sockets, "owned" frames take the full path including the redirect
// lookup and fall back to XDP_PASS.
func BenchmarkSteeringProgram(b *testing.B) {
	requireRoot(b)
	s, err := LoadSteering(SteeringOptions{Queues: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	configureSteering(b, s)
	syn := func(dst netip.AddrPort) []byte {
		return frameSpec{src: netip.AddrPortFrom(peerAddr, 5555), dst: dst, flags: TCPFlagSYN}.build()
	}
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"owned-port", syn(netip.AddrPortFrom(ownedAddr, 9999))},
		{"any-addr-port", syn(netip.AddrPortFrom(otherAddr, 80))},
		{"ephemeral", syn(netip.AddrPortFrom(ownedAddr, 40500))},
		{"unowned-port", syn(netip.AddrPortFrom(ownedAddr, 22))},
		{"unowned-addr", syn(netip.AddrPortFrom(peerAddr, 9999))},
		{"arp", frameSpec{etherType: 0x0806, src: netip.AddrPortFrom(peerAddr, 1), dst: netip.AddrPortFrom(ownedAddr, 1)}.build()},
	} {
		b.Run(c.name, func(b *testing.B) {
			_, d, err := s.prog.Benchmark(c.frame, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "ns/frame")
		})
	}
}
