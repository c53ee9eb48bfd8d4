package daemon_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// FuzzRequests feeds arbitrary request messages to the daemon through a
// real attach. Whatever the messages, the daemon answers each one with a
// completion that echoes its id and op, or drops the client (ids outside
// the table); it never panics, and every client and socket is released at
// the end. Addresses are forced to loopback: a connect goes only to this
// test's own listeners or to a closed port.
func FuzzRequests(f *testing.F) {
	e := start(f)
	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	closedPort := uint16(closed.Addr().(*net.TCPAddr).Port)
	closed.Close()

	seed := func(ops ...[16]byte) []byte {
		var b []byte
		for _, o := range ops {
			b = append(b, o[:]...)
		}
		return b
	}
	f.Add(seed([16]byte{abi.OpSocket}, [16]byte{abi.OpBind, 0}, [16]byte{abi.OpListen, 0, 8},
		[16]byte{abi.OpSocket}, [16]byte{abi.OpConnect, 0, 0, 0, 0, 1}, [16]byte{abi.OpAccept, 0}))
	f.Add(seed([16]byte{abi.OpSocket}, [16]byte{abi.OpDup, 0}, [16]byte{abi.OpClose, 0}, [16]byte{abi.OpClose, 0}, [16]byte{abi.OpClose, 0}))
	f.Add(seed([16]byte{abi.OpSocket}, [16]byte{abi.OpSetsockopt, 0, 9, 1, 13, 3}, [16]byte{abi.OpGetsockopt, 0, 9, 1, 8}))
	f.Add(seed([16]byte{abi.OpForkPrepare}, [16]byte{abi.OpForkCommit, 0, 7}, [16]byte{abi.OpForkInherit}))
	f.Add(seed([16]byte{abi.OpGetsockname, 2, 0, 0, 0, 0, 0xff, 0xff}))

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := shimtest.Dial(e.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Timeout = 5 * time.Second
		var ids []uint32
		var ports []uint16
		for ; len(in) >= 16; in = in[16:] {
			m := in[:16]
			req := abi.Req{Op: uint32(m[0]) % (abi.OpMax + 2), Arg0: int32(int8(m[2])), Arg1: int32(m[3]), Arg2: int32(int8(m[4])), Flags: uint32(m[15])}
			pick := func() uint32 {
				if len(ids) == 0 {
					return 0
				}
				return ids[int(m[6])%len(ids)]
			}
			switch m[1] % 5 {
			case 0, 1:
				req.Sock = pick()
			case 2:
				req.Sock = binary.LittleEndian.Uint32(m[6:10]) // anything, maybe outside the table
			case 3:
				req.Sock = pick() ^ 0x10000 // wrong generation
			}
			switch req.Op {
			case abi.OpBind:
				req.Data = shimtest.Addr(netip.MustParseAddrPort("127.0.0.1:0"))
			case abi.OpConnect:
				port := closedPort
				if len(ports) > 0 && m[5]%2 == 1 {
					port = ports[int(m[5])%len(ports)]
				}
				req.Data = shimtest.Addr(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
			case abi.OpForkCommit:
				req.Arg0 = -1 // never watch an unrelated pid
				copy(req.Data[:], m[5:15])
			default:
				copy(req.Data[:], m[5:15])
			}
			if m[5]&0x80 != 0 {
				binary.LittleEndian.PutUint16(req.Data[0:2], uint16(m[14])) // odd families
				copy(req.Data[8:12], []byte{127, 0, 0, 1})
			}
			id, err := c.Post(req)
			if errors.Is(err, shimtest.ErrGone) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cm, err := c.Result(id)
			if errors.Is(err, shimtest.ErrGone) {
				if req.Sock&0xffff < c.Seg.Layout.Socks {
					t.Fatalf("dropped after a request with an in-table id: %+v", req)
				}
				return
			}
			if err != nil {
				t.Fatalf("no completion for %+v: %v", req, err)
			}
			if cm.Id != id || cm.Op != req.Op {
				t.Fatalf("completion %+v for request %+v", cm, req)
			}
			if req.Sock&0xffff >= c.Seg.Layout.Socks && req.Op != abi.OpNop && req.Op != abi.OpSocket && req.Op < abi.OpForkPrepare {
				t.Fatalf("request with out-of-table id %#x answered (%d) instead of dropping the client", req.Sock, cm.Result)
			}
			if cm.Result >= 0 && (req.Op == abi.OpSocket || req.Op == abi.OpAccept) {
				ids = append(ids, cm.Sock)
			}
			if cm.Result >= 0 && req.Op == abi.OpListen {
				if g, err := c.Call(abi.Req{Op: abi.OpGetsockname, Sock: req.Sock}); err == nil {
					ports = append(ports, shimtest.DecodeAddr(g.Data).Port())
				}
			}
		}
	})
}
