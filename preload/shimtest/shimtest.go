// Package shimtest is a Go implementation of the shim's side of the
// protocol in preload/include/fsstack_abi.h, for tests of the daemon (and
// as an executable reference for the C shim). It is not the shim: it runs
// in a Go process and has no fd table, no interposition and no fork.
//
// A Client is safe for use by one goroutine at a time, except Close.
package shimtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsstack/fsstack/preload/abi"
)

// Client is one attached "process".
type Client struct {
	Conn     *net.UnixConn
	ID       uint32
	Seg      *abi.Segment
	Hdr      *abi.SegHdr
	mem      []byte
	doorbell int
	wake     int
	reqs     *abi.Producer[abi.Req]
	cmpls    *abi.Consumer[abi.Cmpl]
	nextID   uint64
	early    map[uint64]abi.Cmpl
	socks    map[uint32]*sock
	// txNospace: the hello said FSS_HELLO_TX_NOSPACE, so Write raises
	// FSS_SF_TX_NOSPACE before it waits for room, as the shim does.
	txNospace bool

	// Timeout bounds every wait. If 0, 10 s.
	Timeout time.Duration
}

type sock struct {
	rx *abi.FIFOConsumer
	tx *abi.FIFOProducer
	sh *abi.Sock
}

// Hello returns the bytes of a well-formed hello for pid.
func Hello(pid int32, flags uint32) []byte {
	h := abi.Hello{Version: abi.ABIVersion, Size: abi.SizeofHello, Pid: pid, Flags: flags}
	copy(h.Magic[:], "FSSA")
	b, _ := binary.Append(nil, binary.LittleEndian, &h)
	return b
}

// RefusedError is an attach the daemon refused with Status (-errno).
type RefusedError struct{ Status int32 }

func (e *RefusedError) Error() string {
	return fmt.Sprintf("attach refused: %v", syscall.Errno(-e.Status))
}

// Dial connects to the daemon's socket and sends hello (Hello(os.Getpid(),
// 0) if nil), then reads the reply.
func Dial(path string, hello []byte) (*Client, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	c, err := Attach(conn, hello)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// ReadReply reads a reply and its fds from conn.
func ReadReply(conn *net.UnixConn) (abi.HelloReply, []int, error) {
	var r abi.HelloReply
	buf := make([]byte, abi.SizeofHelloReply)
	oob := make([]byte, unix.CmsgSpace(4*abi.AttachNFDs))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return r, nil, fmt.Errorf("read attach reply: %w", err)
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return r, nil, fmt.Errorf("parse attach fds: %w", err)
		}
		for _, m := range msgs {
			f, err := unix.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, f...)
			}
		}
	}
	if n != abi.SizeofHelloReply {
		closeAll(fds)
		return r, nil, fmt.Errorf("attach reply of %d bytes, want %d", n, abi.SizeofHelloReply)
	}
	if _, err := binary.Decode(buf, binary.LittleEndian, &r); err != nil {
		closeAll(fds)
		return r, nil, err
	}
	return r, fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Attach runs the handshake on an open connection.
func Attach(conn *net.UnixConn, hello []byte) (*Client, error) {
	if hello == nil {
		hello = Hello(int32(os.Getpid()), 0)
	}
	if _, err := conn.Write(hello); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	r, fds, err := ReadReply(conn)
	if err != nil {
		return nil, err
	}
	if string(r.Magic[:]) != "FSSR" {
		closeAll(fds)
		return nil, fmt.Errorf("reply magic %q", r.Magic[:])
	}
	if r.Status != 0 {
		closeAll(fds)
		return nil, &RefusedError{Status: r.Status}
	}
	if len(fds) != abi.AttachNFDs {
		closeAll(fds)
		return nil, fmt.Errorf("attach reply carried %d fds, want %d", len(fds), abi.AttachNFDs)
	}
	mem, err := unix.Mmap(fds[abi.FDSegment], 0, int(r.Seg_size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	unix.Close(fds[abi.FDSegment])
	if err != nil {
		closeAll(fds[1:])
		return nil, fmt.Errorf("map segment: %w", err)
	}
	seg, err := abi.AttachSegment(mem)
	if err != nil {
		unix.Munmap(mem)
		closeAll(fds[1:])
		return nil, err
	}
	c := &Client{Conn: conn, ID: r.Client_id, Seg: seg, Hdr: seg.Hdr(), mem: mem,
		doorbell: fds[abi.FDDoorbell], wake: fds[abi.FDWake],
		early: make(map[uint64]abi.Cmpl), socks: make(map[uint32]*sock)}
	if len(hello) >= abi.HelloMinSize { // flags: the hello's last word of its minimum
		c.txNospace = binary.LittleEndian.Uint32(hello[abi.HelloMinSize-4:])&abi.HelloTxNospace != 0
	}
	rr, re := seg.ReqRing()
	cr, ce := seg.CmplRing()
	c.reqs, c.cmpls = abi.NewProducer(rr, re), abi.NewConsumer(cr, ce)
	return c, nil
}

// Close closes the connection (the daemon drops the client) and unmaps.
func (c *Client) Close() error {
	err := c.Conn.Close()
	unix.Munmap(c.mem)
	unix.Close(c.doorbell)
	unix.Close(c.wake)
	return err
}

func (c *Client) timeout() time.Duration {
	if c.Timeout == 0 {
		return 10 * time.Second
	}
	return c.Timeout
}

// ErrGone means the daemon marked the segment FSS_DAEMON_GONE.
var ErrGone = errors.New("daemon gone")

// Wait blocks (on the wake fd, with the shim_waiters handshake) until cond
// holds, the daemon is gone, or the timeout passes.
func (c *Client) Wait(cond func() bool) error {
	deadline := time.Now().Add(c.timeout())
	for {
		if cond() {
			return nil
		}
		atomic.AddUint32(&c.Hdr.Shim_waiters, 1)
		if cond() {
			atomic.AddUint32(&c.Hdr.Shim_waiters, ^uint32(0))
			return nil
		}
		if atomic.LoadUint32(&c.Hdr.Daemon_state) == abi.DaemonGone {
			atomic.AddUint32(&c.Hdr.Shim_waiters, ^uint32(0))
			return ErrGone
		}
		left := time.Until(deadline)
		if left <= 0 {
			atomic.AddUint32(&c.Hdr.Shim_waiters, ^uint32(0))
			return fmt.Errorf("shimtest: timed out after %v", c.timeout())
		}
		// A long poll: a lost wake-up shows as a timeout, not as a slow
		// test that still passes.
		fds := []unix.PollFd{{Fd: int32(c.wake), Events: unix.POLLIN}}
		unix.Poll(fds, int(left/time.Millisecond)+1)
		var b [8]byte
		unix.Read(c.wake, b[:]) // this test shim drains; the C shim may use EPOLLET instead
		// Acknowledge before re-checking (FSS_HELLO_WAKE_ACK).
		atomic.StoreUint32(&c.Hdr.Wake_ack, atomic.LoadUint32(&c.Hdr.Wake_seq))
		atomic.AddUint32(&c.Hdr.Shim_waiters, ^uint32(0))
	}
}

// Doorbell writes the doorbell regardless of daemon_sleeping.
func (c *Client) Doorbell() {
	var one = [8]byte{1}
	unix.Write(c.doorbell, one[:])
}

// ringDoorbell rings as the shim does: the caller whose compare-and-swap
// clears daemon_sleeping writes the doorbell, nobody else.
func (c *Client) ringDoorbell(mask uint32) {
	for {
		v := atomic.LoadUint32(&c.Hdr.Daemon_sleeping)
		if v&mask == 0 {
			return
		}
		if atomic.CompareAndSwapUint32(&c.Hdr.Daemon_sleeping, v, 0) {
			var one = [8]byte{1}
			unix.Write(c.doorbell, one[:])
			return
		}
	}
}

// Post sends a request without waiting and returns its id.
func (c *Client) Post(req abi.Req) (uint64, error) {
	c.nextID++
	req.Id = c.nextID
	var ok bool
	err := c.Wait(func() bool {
		var err error
		ok, err = c.reqs.Push(&req)
		return ok || err != nil
	})
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, abi.ErrCorrupt
	}
	c.ringDoorbell(abi.DSleepReq | abi.DSleepCmpl)
	return req.Id, nil
}

// Result waits for the completion of request id.
func (c *Client) Result(id uint64) (abi.Cmpl, error) {
	var out abi.Cmpl
	found := false
	err := c.Wait(func() bool {
		if cm, ok := c.early[id]; ok {
			delete(c.early, id)
			out, found = cm, true
			return true
		}
		for {
			var cm abi.Cmpl
			ok, err := c.cmpls.Pop(&cm)
			if err != nil || !ok {
				return false
			}
			c.ringDoorbell(abi.DSleepCmpl)
			if cm.Id == id {
				out, found = cm, true
				return true
			}
			c.early[cm.Id] = cm
		}
	})
	if err != nil {
		return out, err
	}
	if !found {
		return out, fmt.Errorf("no completion for request %d", id)
	}
	return out, nil
}

// Call posts req and waits for its completion. A negative result is
// returned as a syscall.Errno error beside the completion.
func (c *Client) Call(req abi.Req) (abi.Cmpl, error) {
	id, err := c.Post(req)
	if err != nil {
		return abi.Cmpl{}, err
	}
	cm, err := c.Result(id)
	if err != nil {
		return cm, err
	}
	if cm.Result < 0 {
		return cm, syscall.Errno(-cm.Result)
	}
	return cm, nil
}

// Addr encodes an fss_sockaddr for a request.
func Addr(ap netip.AddrPort) [32]byte {
	var b [32]byte
	binary.LittleEndian.PutUint16(b[0:2], syscall.AF_INET)
	binary.BigEndian.PutUint16(b[2:4], ap.Port())
	a := ap.Addr().As4()
	copy(b[8:12], a[:])
	return b
}

// DecodeAddr decodes an fss_sockaddr from a completion.
func DecodeAddr(b [32]byte) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[8:12])), binary.BigEndian.Uint16(b[2:4]))
}

func (c *Client) track(id uint32) {
	slot := id & 0xffff
	sh := c.Seg.Sock(slot)
	c.socks[id] = &sock{sh: sh,
		rx: abi.NewFIFOConsumer(c.Seg.RxBuf(slot), &sh.Rx_head, &sh.Rx_tail),
		tx: abi.NewFIFOProducer(c.Seg.TxBuf(slot), &sh.Tx_tail, &sh.Tx_head)}
}

// Socket creates an AF_INET stream socket and returns its id.
func (c *Client) Socket() (uint32, error) {
	cm, err := c.Call(abi.Req{Op: abi.OpSocket, Arg0: syscall.AF_INET, Arg1: syscall.SOCK_STREAM})
	if err != nil {
		return 0, err
	}
	c.track(cm.Sock)
	return cm.Sock, nil
}

// Inherit claims a fork token (FORK_INHERIT) and tracks the sockets it
// brings, whose ids must be given.
func (c *Client) Inherit(token uint64, ids ...uint32) (int32, error) {
	var req abi.Req
	req.Op = abi.OpForkInherit
	binary.LittleEndian.PutUint64(req.Data[:8], token)
	cm, err := c.Call(req)
	if err != nil {
		return cm.Result, err
	}
	for _, id := range ids {
		c.track(id)
	}
	return cm.Result, nil
}

// Listen binds to ap and listens; it returns the bound address.
func (c *Client) Listen(id uint32, ap netip.AddrPort, backlog int32) (netip.AddrPort, error) {
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: id, Data: Addr(ap)}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("bind: %w", err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpListen, Sock: id, Arg0: backlog}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen: %w", err)
	}
	cm, err := c.Call(abi.Req{Op: abi.OpGetsockname, Sock: id})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	return DecodeAddr(cm.Data), nil
}

// Sock returns the shared slot of a socket.
func (c *Client) Sock(id uint32) *abi.Sock { return c.Seg.Sock(id & 0xffff) }

// Poll returns fss_sock_poll for a socket.
func (c *Client) Poll(id uint32) uint32 { return abi.Poll(c.Sock(id), c.Seg.Layout.TxFIFO) }

// Accept waits for a connection and accepts it.
func (c *Client) Accept(id uint32) (uint32, netip.AddrPort, error) {
	for {
		if err := c.Wait(func() bool { return c.Poll(id)&abi.PollIn != 0 }); err != nil {
			return 0, netip.AddrPort{}, err
		}
		cm, err := c.Call(abi.Req{Op: abi.OpAccept, Sock: id})
		if errors.Is(err, syscall.EAGAIN) {
			continue
		}
		if err != nil {
			return 0, netip.AddrPort{}, err
		}
		c.track(cm.Sock)
		return cm.Sock, DecodeAddr(cm.Data), nil
	}
}

// TakeAccept takes one record from listener id's accept ring
// (FSS_HELLO_ACCEPT_RING) without a round trip; ok is false when the ring
// is empty.
func (c *Client) TakeAccept(id uint32) (sock uint32, peer netip.AddrPort, ok bool, err error) {
	s := c.socks[id]
	buf := c.Seg.RxBuf(id & 0xffff)
	for {
		u, err := s.rx.Used()
		if err != nil || u == 0 {
			return 0, netip.AddrPort{}, false, err
		}
		// Claim the record against the daemon's take-back, as the C
		// shim does (FSS_ACCEPT_STOLEN), then consume it.
		head := atomic.LoadUint32(&s.sh.Rx_head)
		w := (*uint32)(unsafe.Pointer(&buf[head%uint32(len(buf))]))
		id := atomic.LoadUint32(w)
		mine := id != 0 && id != abi.AcceptStolen && atomic.CompareAndSwapUint32(w, id, 0)
		var rec abi.AcceptRec
		b := unsafe.Slice((*byte)(unsafe.Pointer(&rec)), abi.AcceptRecSize)
		if n, err := s.rx.Read(b); err != nil || n != len(b) {
			return 0, netip.AddrPort{}, false, fmt.Errorf("shimtest: accept record of %d bytes: %v", n, err)
		}
		if !mine {
			continue // taken back for another holder
		}
		var raw [32]byte
		copy(raw[:], unsafe.Slice((*byte)(unsafe.Pointer(&rec.Peer)), abi.SizeofSockaddr))
		c.track(id)
		return id, DecodeAddr(raw), true, nil
	}
}

// AcceptWaiting is Accept as the C shim's: counted in the listener's
// accept_waiters while it runs, taking from the accept ring first.
func (c *Client) AcceptWaiting(id uint32) (uint32, netip.AddrPort, bool, error) {
	sh := c.Sock(id)
	atomic.AddInt32(&sh.Accept_waiters, 1)
	defer atomic.AddInt32(&sh.Accept_waiters, -1)
	for {
		if sock, peer, ok, err := c.TakeAccept(id); ok || err != nil {
			return sock, peer, true, err
		}
		if atomic.LoadUint32(&sh.Accept_pending) > 0 {
			cm, err := c.Call(abi.Req{Op: abi.OpAccept, Sock: id})
			if err == nil {
				c.track(cm.Sock)
				return cm.Sock, DecodeAddr(cm.Data), false, nil
			}
			if !errors.Is(err, syscall.EAGAIN) {
				return 0, netip.AddrPort{}, false, err
			}
		}
		if err := c.Wait(func() bool { return c.Poll(id)&abi.PollIn != 0 }); err != nil {
			return 0, netip.AddrPort{}, false, err
		}
	}
}

// Connect connects and waits for the outcome, as a blocking connect does.
func (c *Client) Connect(id uint32, ap netip.AddrPort) error {
	_, err := c.Call(abi.Req{Op: abi.OpConnect, Sock: id, Data: Addr(ap)})
	if !errors.Is(err, syscall.EINPROGRESS) {
		return err
	}
	sh := c.Sock(id)
	if err := c.Wait(func() bool { return atomic.LoadUint32(&sh.Events)&(abi.EvConnected|abi.EvErr) != 0 }); err != nil {
		return err
	}
	cm, err := c.Call(abi.Req{Op: abi.OpGetsockopt, Sock: id, Arg0: syscall.SOL_SOCKET, Arg1: syscall.SO_ERROR, Arg2: 4})
	if err != nil {
		return err
	}
	if e := binary.LittleEndian.Uint32(cm.Data[:4]); e != 0 {
		return syscall.Errno(e)
	}
	return nil
}

func (c *Client) kick(slot uint32) {
	abi.SetBit(c.Seg.KickMap(), slot)
	c.ringDoorbell(abi.DSleepReq | abi.DSleepCmpl)
}

// Write writes all of p (blocking while the tx FIFO is full), as write(2)
// on a blocking socket.
func (c *Client) Write(id uint32, p []byte) (int, error) {
	s := c.socks[id]
	done := 0
	for done < len(p) {
		if ev := atomic.LoadUint32(&s.sh.Events); ev&(abi.EvWrEOF|abi.EvHup) != 0 {
			return done, syscall.EPIPE
		}
		n, err := s.tx.Write(p[done:])
		if err != nil {
			return done, err
		}
		if n > 0 {
			done += n
			if atomic.LoadUint32(&s.sh.D_flags)&abi.DFTxWait != 0 {
				c.kick(id & 0xffff)
			}
			continue
		}
		if err := c.Wait(func() bool {
			if c.txNospace {
				// The daemon publishes room only when asked; the
				// look at the FIFO comes after the flag.
				atomic.OrUint32(&s.sh.S_flags, abi.SFTxNospace)
			}
			f, _ := s.tx.Free()
			return f > 0 || atomic.LoadUint32(&s.sh.Events)&(abi.EvWrEOF|abi.EvHup) != 0
		}); err != nil {
			return done, err
		}
	}
	return done, nil
}

// Read reads at least one byte (blocking), or returns 0 at EOF, or the
// socket's error.
func (c *Client) Read(id uint32, p []byte) (int, error) {
	s := c.socks[id]
	for {
		n, err := s.rx.Read(p)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			if atomic.LoadUint32(&s.sh.D_flags)&abi.DFRxWait != 0 {
				c.kick(id & 0xffff)
			}
			return n, nil
		}
		ev := atomic.LoadUint32(&s.sh.Events)
		if ev&abi.EvErr != 0 {
			if e := atomic.LoadInt32(&s.sh.So_error); e != 0 {
				return 0, syscall.Errno(e)
			}
		}
		if ev&(abi.EvRdEOF|abi.EvHup) != 0 {
			if u, _ := s.rx.Used(); u == 0 {
				return 0, nil
			}
			continue
		}
		if err := c.Wait(func() bool { return c.Poll(id)&abi.PollIn != 0 }); err != nil {
			return 0, err
		}
	}
}

// CloseSock sends CLOSE.
func (c *Client) CloseSock(id uint32) error {
	_, err := c.Call(abi.Req{Op: abi.OpClose, Sock: id})
	delete(c.socks, id)
	return err
}
