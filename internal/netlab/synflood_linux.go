package netlab

import (
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// SYNFlood sends TCP SYNs to dst from a raw socket in namespace ns, as an
// attacker's flood would: from addresses of the lab's subnet that nobody
// owns (198.18.0.100-249), so no SYN-ACK is ever answered, with random
// ports and sequence numbers. It holds at most rate SYNs a second for d,
// never sends more than max, and returns how many it sent. It is for
// tests and stays inside the lab: the destination must be ServerAddr.
func SYNFlood(ns string, dst netip.Addr, port uint16, rate int, d time.Duration, max int) (int, error) {
	if dst != ServerAddr {
		return 0, fmt.Errorf("netlab: SYN flood only to the lab's server %s, not %s", ServerAddr, dst)
	}
	if rate <= 0 {
		return 0, fmt.Errorf("netlab: SYN flood rate %d", rate)
	}
	var sent int
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		sa := unix.SockaddrInet4{Addr: dst.As4()}
		daddr := tcpip.AddrFrom4(dst.As4())
		rng := rand.New(rand.NewSource(1))
		pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+4)
		start := time.Now()
		end := start.Add(d)
		for sent < max && (sent%256 != 0 || time.Now().Before(end)) {
			if sent%256 == 0 {
				if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
			saddr := tcpip.AddrFrom4([4]byte{198, 18, 0, byte(100 + rng.Intn(150))})
			ip := header.IPv4(pkt)
			ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), ID: uint16(sent), TTL: 64,
				Protocol: uint8(header.TCPProtocolNumber), SrcAddr: saddr, DstAddr: daddr})
			ip.SetChecksum(^ip.CalculateChecksum())
			tcp := header.TCP(pkt[header.IPv4MinimumSize:])
			tcp.Encode(&header.TCPFields{SrcPort: uint16(1024 + rng.Intn(60000)), DstPort: port, SeqNum: rng.Uint32(),
				DataOffset: header.TCPMinimumSize + 4, Flags: header.TCPFlagSyn, WindowSize: 65535})
			copy(tcp[header.TCPMinimumSize:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
			tcp.SetChecksum(0)
			xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, saddr, daddr, uint16(len(tcp)))
			tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
			if err := unix.Sendto(fd, pkt, 0, &sa); err != nil && err != unix.ENOBUFS && err != unix.EAGAIN {
				return fmt.Errorf("send SYN: %w", err)
			}
			sent++
		}
		return nil
	})
	return sent, err
}

// FloodLock waits until no other process on the machine holds it and
// returns its release. Tests take it around a flood and the legitimate
// traffic measured during it: the flood's rate is a bound for the
// machine, and two floods at once (go test runs packages in parallel)
// would double it and starve both tests' clients.
func FloodLock() (release func(), err error) {
	path := filepath.Join(os.TempDir(), "fsstack-synflood.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netlab: flood lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netlab: flood lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}
