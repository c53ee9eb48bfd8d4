package afxdp

// Socket data path (portable part; the kernel calls are in socket_linux.go).
//
//	RX:  fill ring --kernel writes frame--> rx ring --Receive--> caller
//	     caller --Release--> fill ring (kick with recvfrom if need_wakeup)
//	TX:  free list --TxFrame--> caller writes frame --Submit--> tx ring
//	     (kick with sendto if need_wakeup) --kernel sends--> comp ring
//	     --reaped by Submit/TxFrame/Flush--> free list
//
// UMEM layout: frames [0, NumFrames/2) are rx frames and circulate between
// the fill ring, the rx ring and the caller; frames [NumFrames/2, NumFrames)
// are tx frames and circulate between the free list, the caller, the tx
// ring and the completion ring. The two halves never mix, so the RX and TX
// sides share no mutable state and can run on different goroutines.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
)

// Desc describes one frame in a Socket's UMEM: Addr is the offset of the
// first byte of the frame, Len its length.
type Desc struct {
	Addr uint64
	Len  uint32
}

// SocketConfig configures Open. The zero value is usable.
type SocketConfig struct {
	// NumFrames is the number of UMEM frames. Half are rx frames (kept on
	// the fill ring), half tx frames (a free list). If 0, 4096. Must be
	// even and at least 2.
	NumFrames int
	// FrameSize is the size of one UMEM frame in bytes: a power of two
	// from 2048 to the page size (4096 on x86-64). If 0, 2048. The kernel
	// puts received data XDP_PACKET_HEADROOM (256) bytes into an rx
	// frame, so the largest frame a socket receives is FrameSize-256
	// bytes (1792 by default: MTU up to 1778); larger frames are dropped
	// (RxDropped). Tx frames may use all FrameSize bytes.
	FrameSize int
	// RingSize is the number of entries of the rx and tx rings (a power
	// of two). If 0, 2048. The fill and completion rings get at least
	// NumFrames/2 entries so every rx frame fits on the fill ring and
	// every tx frame on the completion ring.
	RingSize int
	// ZeroCopy requests XDP_ZEROCOPY; Open fails if the driver cannot. If
	// false, the kernel picks (copy mode on veth and virtio).
	ZeroCopy bool
	// TxChecksum asks for the kernel's transmit checksum offload through
	// AF_XDP tx metadata (Linux 6.11+), used with SetTxChecksum: in copy
	// mode the kernel then hands the device a partial checksum, which
	// the NIC completes or, on a device without checksum offload, the
	// kernel completes in software before the frame leaves. Ignored
	// (TxChecksumOn reports false) with ZeroCopy, where it would depend on
	// the driver, and on kernels without tx metadata. Every tx frame then
	// starts TxMetadataLen bytes into its UMEM frame.
	TxChecksum bool
	// BusyPoll sets SO_PREFER_BUSY_POLL, SO_BUSY_POLL (BusyPollTimeout)
	// and SO_BUSY_POLL_BUDGET (BusyPollBudget) on the socket (Linux 5.11+).
	// Receive then calls recvfrom whenever the rx ring is empty: that
	// runs the device's NAPI poll on the caller's thread. The device
	// should also get napi_defer_hard_irqs and gro_flush_timeout, which
	// are device settings outside this package. If false, none of them is
	// set and Receive wakes the kernel only when it asks (need_wakeup).
	BusyPoll bool
}

// Default sizes (see SocketConfig).
const (
	BusyPollTimeout  = 20 // µs, SO_BUSY_POLL
	BusyPollBudget   = 64 // frames per busy poll, SO_BUSY_POLL_BUDGET
	DefaultNumFrames = 4096
	DefaultFrameSize = 2048
	DefaultRingSize  = 2048
)

// withDefaults fills zero fields and validates the rest.
func (c SocketConfig) withDefaults() (SocketConfig, error) {
	if c.NumFrames == 0 {
		c.NumFrames = DefaultNumFrames
	}
	if c.FrameSize == 0 {
		c.FrameSize = DefaultFrameSize
	}
	if c.RingSize == 0 {
		c.RingSize = DefaultRingSize
	}
	switch {
	case c.NumFrames < 2 || c.NumFrames%2 != 0 || c.NumFrames > 1<<24:
		return c, fmt.Errorf("afxdp: NumFrames %d: want an even number in 2..%d", c.NumFrames, 1<<24)
	case c.FrameSize < 2048 || c.FrameSize > pageSize || !isPow2(c.FrameSize):
		return c, fmt.Errorf("afxdp: FrameSize %d: want a power of two in 2048..%d (the page size)", c.FrameSize, pageSize)
	case c.RingSize < 1 || c.RingSize > 1<<24 || !isPow2(c.RingSize):
		return c, fmt.Errorf("afxdp: RingSize %d: want a power of two in 1..%d", c.RingSize, 1<<24)
	}
	return c, nil
}

// fqSize is the size of the fill and completion rings for c.
func (c SocketConfig) fqSize() int {
	n := c.RingSize
	if h := pow2Ceil(c.NumFrames / 2); h > n {
		n = h
	}
	return n
}

// pageSize bounds FrameSize: the kernel rejects aligned UMEM chunks larger
// than a page.
var pageSize = os.Getpagesize()

func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }

func pow2Ceil(n int) int {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}

// SocketStats are a Socket's counters: the kernel's XDP_STATISTICS and
// fsstack's own.
type SocketStats struct {
	// Kernel counters (XDP_STATISTICS).
	RxDropped            uint64 // dropped for reasons other than invalid desc
	RxInvalidDescs       uint64
	TxInvalidDescs       uint64
	RxRingFull           uint64 // rx ring was full when a frame arrived
	RxFillRingEmptyDescs uint64 // no frame on the fill ring when one arrived
	TxRingEmptyDescs     uint64

	// Own counters.
	RxFrames     uint64 // frames handed out by Receive
	TxFrames     uint64 // frames posted by Submit
	TxCompleted  uint64 // tx frames reaped from the completion ring
	RxKicks      uint64 // recvfrom wake-ups for the fill ring
	TxKicks      uint64 // sendto wake-ups for the tx ring
	TxKickErrors uint64 // sendto wake-ups that failed with a real error
}

// kernel is what the data path needs from the kernel: the two wake-ups.
// socket_linux.go implements it with recvfrom/sendto; tests with fakes.
type kernel interface {
	// wakeRx asks the kernel to refill from the fill ring (recvfrom).
	wakeRx() error
	// wakeTx asks the kernel to send what is on the tx ring (sendto). It
	// returns errTxRetry when the kernel stopped early (copy mode sends
	// at most 32 frames per call) and the caller may call again.
	wakeTx() error
}

// errTxRetry: the kernel took part of the tx ring, call wakeTx again.
var errTxRetry = errors.New("afxdp: tx wake-up incomplete")

// Socket is one AF_XDP socket bound to one (interface, queue), with its own
// UMEM and four rings.
//
// Threading: the RX methods (Receive, Frame of an rx Desc, Release) are
// called by one goroutine at a time; the TX methods (TxFrame, Submit,
// Flush, Discard) by one goroutine at a time, which may be a different
// one. Stats may be called from any goroutine. Close must not run
// concurrently with the data path methods: it unmaps the memory they use.
// After Close they do nothing (Receive and Submit return 0, TxFrame !ok,
// Frame nil); byte slices obtained before Close must not be touched.
type Socket struct {
	fd      int
	ifindex int
	queue   int
	cfg     SocketConfig // with defaults applied
	zc      bool         // bound in zero-copy mode
	txMeta  uint64       // tx metadata bytes before each tx frame (TxChecksum); 0: none

	umem      []byte // NumFrames*FrameSize bytes; frame contents only
	frameMask uint64 // ^(FrameSize-1): Desc.Addr -> frame base

	sys         kernel
	kernelStats func() (SocketStats, error)
	txStart     uint64 // first byte of the tx half of the UMEM

	closeOnce sync.Once
	closeErr  error
	closeFn   func() error
	closed    atomic.Bool // set before Close unmaps anything

	// The RX and TX sides run on different cores: keep their hot state
	// on separate cache lines.
	_ [64]byte

	// RX side state: owned by the RX goroutine.
	fill              fillRing
	rx                rxRing
	fillWait          []uint64 // rx frames that did not fit on the fill ring yet
	rxFrames, rxKicks atomic.Uint64
	_                 [64]byte

	// TX side state: owned by the TX goroutine.
	tx                    txRing
	comp                  compRing
	txFree                []uint64 // free tx frame addresses (a stack)
	reapBuf               []uint64 // scratch for completion reaping
	txFrames, txCompleted atomic.Uint64
	txKicks, txKickErrors atomic.Uint64
	_                     [64]byte
}

// FD returns the socket's file descriptor (for poll/epoll: readable when
// the rx ring is not empty).
func (s *Socket) FD() int { return s.fd }

// Queue returns the queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// Ifindex returns the interface index the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// ZeroCopy reports whether the kernel bound the socket in zero-copy mode.
func (s *Socket) ZeroCopy() bool { return s.zc }

// TxChecksumOn reports whether the socket's tx frames may ask the kernel
// for a checksum (SocketConfig.TxChecksum, granted).
func (s *Socket) TxChecksumOn() bool { return s.txMeta != 0 }

// TxMetadataLen is the size of struct xsk_tx_metadata as this package
// lays it out before each tx frame (flags, then the checksum request;
// 8-byte aligned as the kernel wants).
const TxMetadataLen = 24

// Tx metadata constants (linux/if_xdp.h).
const (
	xdpTxMetadata        = 1 << 1 // xdp_desc.options: metadata precedes the frame
	xdpTxmdFlagsChecksum = 1 << 1 // xsk_tx_metadata.flags
	xdpUmemTxMetadataLen = 1 << 2 // xdp_umem_reg.flags
)

// SetTxChecksum asks the kernel to compute the checksum of d's frame
// from byte start (counted from the frame's first byte) to its end and
// store it at start+offset, as a NIC's checksum offload does. The frame
// must hold the pseudo-header sum there (not complemented). d must come
// from TxFrame and not be posted yet. It returns false, and asks nothing,
// if the socket has no tx checksum (TxChecksumOn).
func (s *Socket) SetTxChecksum(d Desc, start, offset uint16) bool {
	if s.txMeta == 0 || d.Addr < s.txMeta || d.Addr > uint64(len(s.umem)) {
		return false
	}
	m := s.umem[d.Addr-s.txMeta : d.Addr]
	binary.LittleEndian.PutUint64(m[0:8], xdpTxmdFlagsChecksum)
	binary.LittleEndian.PutUint16(m[8:10], start)
	binary.LittleEndian.PutUint16(m[10:12], offset)
	return true
}

// RxFrames returns the number of UMEM frames set aside for receiving.
func (s *Socket) RxFrames() int { return s.cfg.NumFrames / 2 }

// FillLevel returns how many free frames the kernel has on the fill ring
// to receive into: the frames it can still deliver before it drops for an
// empty fill ring. RX goroutine only.
func (s *Socket) FillLevel() int {
	if s.closed.Load() {
		return 0
	}
	return int(s.fill.pending())
}

// FrameSize returns the UMEM frame size.
func (s *Socket) FrameSize() int { return s.cfg.FrameSize }

// initData sets up the data-path state once the rings and UMEM are mapped
// and puts every rx frame on the fill ring.
func (s *Socket) initData() error {
	n := s.cfg.NumFrames
	fs := uint64(s.cfg.FrameSize)
	s.frameMask = ^(fs - 1)
	s.txStart = uint64(n/2) * fs
	rxFrames := make([]uint64, n/2)
	for i := range rxFrames {
		rxFrames[i] = uint64(i) * fs
	}
	if got := s.fill.put(rxFrames); got != len(rxFrames) {
		return fmt.Errorf("afxdp: fill ring took %d of %d rx frames", got, len(rxFrames))
	}
	s.txFree = make([]uint64, 0, n/2)
	for i := n - 1; i >= n/2; i-- {
		s.txFree = append(s.txFree, uint64(i)*fs)
	}
	s.reapBuf = make([]uint64, 64)
	return nil
}

// Receive fills descs with received frames and returns how many. It never
// blocks; wait for FD to become readable when it returns 0. The frames
// belong to the caller until it gives them back with Release.
func (s *Socket) Receive(descs []Desc) int {
	if s.closed.Load() {
		return 0
	}
	if len(s.fillWait) > 0 {
		s.refill(nil)
	}
	n := s.rx.get(descs)
	if n == 0 {
		// Nothing received: make sure the kernel is not waiting for us.
		// With busy polling, recvfrom is what runs the device's NAPI
		// poll, so call it whenever the ring is empty.
		if s.cfg.BusyPoll || s.fill.needWakeup() {
			s.rxKicks.Add(1)
			_ = s.sys.wakeRx() // best effort; the next call retries
		}
		return 0
	}
	s.rxFrames.Add(uint64(n))
	return n
}

// Frame returns the bytes of d inside the UMEM. It is valid until d is
// released (rx) or submitted/discarded (tx). A d that does not lie inside
// the UMEM yields nil.
func (s *Socket) Frame(d Desc) []byte {
	if s.closed.Load() {
		return nil
	}
	end := d.Addr + uint64(d.Len)
	if end > uint64(len(s.umem)) || end < d.Addr {
		return nil
	}
	return s.umem[d.Addr:end:end]
}

// Release gives rx frames back to the kernel (the fill ring) and wakes the
// kernel if it asked for it. descs must come from Receive.
func (s *Socket) Release(descs []Desc) {
	if s.closed.Load() {
		return
	}
	s.refill(descs)
}

func (s *Socket) refill(descs []Desc) {
	// Addresses go in chunks of up to 64 through a stack buffer.
	var buf [64]uint64
	for len(s.fillWait) > 0 {
		n := s.fill.put(s.fillWait)
		s.fillWait = s.fillWait[n:]
		if n == 0 {
			break
		}
	}
	for len(descs) > 0 {
		k := min(len(descs), len(buf))
		j := 0
		for _, d := range descs[:k] {
			// Only rx frames go on the fill ring: a tx frame there would
			// be owned twice.
			if a := d.Addr & s.frameMask; a < s.txStart {
				buf[j] = a
				j++
			}
		}
		descs = descs[k:]
		k = j
		n := 0
		if len(s.fillWait) == 0 {
			n = s.fill.put(buf[:k])
		}
		s.fillWait = append(s.fillWait, buf[n:k]...)
	}
	if s.fill.needWakeup() {
		s.rxKicks.Add(1)
		_ = s.sys.wakeRx()
	}
}

// TxFrame returns a free tx frame: its descriptor (Len 0) and a buffer of
// FrameSize bytes to write the frame into. ok is false when every tx frame
// is in flight; try again after the kernel completes some.
func (s *Socket) TxFrame() (d Desc, buf []byte, ok bool) {
	if s.closed.Load() {
		return Desc{}, nil, false
	}
	if len(s.txFree) == 0 {
		s.reap()
		if len(s.txFree) == 0 && s.tx.pending() > 0 {
			s.kickTx() // copy mode: the kernel only sends when asked
			s.reap()
		}
		if len(s.txFree) == 0 {
			return Desc{}, nil, false
		}
	}
	a := s.txFree[len(s.txFree)-1]
	s.txFree = s.txFree[:len(s.txFree)-1]
	end := a + uint64(s.cfg.FrameSize)
	if s.txMeta != 0 {
		// The metadata goes first, asking for nothing until
		// SetTxChecksum does (the kernel reads the rest only for the
		// flags set in its first word).
		binary.LittleEndian.PutUint64(s.umem[a:a+8], 0)
		a += s.txMeta
	}
	return Desc{Addr: a}, s.umem[a:end:end], true
}

// reap moves completed tx frames to the free list.
func (s *Socket) reap() {
	for {
		n := s.comp.get(s.reapBuf)
		if n == 0 {
			return
		}
		for _, a := range s.reapBuf[:n] {
			s.txFree = append(s.txFree, a&s.frameMask)
		}
		s.txCompleted.Add(uint64(n))
	}
}

// Submit posts descs (with Len set) to the tx ring and wakes the kernel
// when it needs it. It returns how many were posted, always a prefix of
// descs; the caller still owns the rest (give them back with Discard or
// retry later).
func (s *Socket) Submit(descs []Desc) int {
	n := s.Post(descs)
	if n > 0 {
		s.kickTx()
		// Copy mode completes inside sendto: reap now, once per batch,
		// so frames and TxCompleted come back without waiting for the
		// free list to run dry.
		s.reap()
	}
	return n
}

// Post publishes descs (with Len set) on the tx ring without waking the
// kernel and returns how many were posted, always a prefix of descs (the
// caller still owns the rest). Frames posted this way leave only after a
// KickTx (or a Submit, Flush or poll(2) of FD): callers that post from
// several places per pass kick once for all of them. TX side.
func (s *Socket) Post(descs []Desc) int {
	if s.closed.Load() {
		return 0
	}
	txStart := s.txStart
	for i := range descs {
		d := &descs[i]
		base := d.Addr & s.frameMask
		if d.Len == 0 || base < txStart || base >= uint64(len(s.umem)) ||
			d.Addr-base+uint64(d.Len) > uint64(s.cfg.FrameSize) {
			// Not inside one tx frame of ours: post only the valid prefix.
			descs = descs[:i]
			break
		}
	}
	var opts uint32
	if s.txMeta != 0 {
		opts = xdpTxMetadata
	}
	n := s.tx.put(descs, opts)
	if n > 0 {
		s.txFrames.Add(uint64(n))
	}
	return n
}

// TxPending returns how many posted tx entries the kernel has not taken
// yet. Any goroutine.
func (s *Socket) TxPending() int {
	if s.closed.Load() {
		return 0
	}
	return int(s.tx.pending())
}

// KickTx asks the kernel to send what is on the tx ring, if it asked to be
// woken. It touches only shared ring indices and the socket's fd, so it
// may run concurrently with the TX goroutine's Post and TxFrame; callers
// of KickTx serialize among themselves. Completions are reaped by the TX
// side (TxFrame, Submit, Flush), not here. It returns false when entries
// stay on the ring (the kernel kept refusing): kick again later.
func (s *Socket) KickTx() bool {
	if s.closed.Load() {
		return true
	}
	for tries := 0; tries < 64; tries++ {
		if s.tx.pending() == 0 || !s.tx.needWakeup() {
			return true
		}
		s.txKicks.Add(1)
		err := s.sys.wakeTx()
		if err == nil {
			return true // copy mode sent all; zero-copy sends on its own
		}
		if !errors.Is(err, errTxRetry) {
			s.txKickErrors.Add(1)
			return true
		}
	}
	return s.tx.pending() == 0
}

// kickTx wakes the kernel for the tx ring if it asked for it. Copy mode
// sends at most a small batch per sendto, so keep kicking while the kernel
// reports progress and entries remain (bounded).
func (s *Socket) kickTx() {
	for tries := 0; tries < 64 && s.tx.needWakeup(); tries++ {
		s.txKicks.Add(1)
		err := s.sys.wakeTx()
		if err == nil {
			return
		}
		if !errors.Is(err, errTxRetry) {
			s.txKickErrors.Add(1)
			return
		}
		if s.tx.pending() == 0 {
			return
		}
		// The completion ring may be what stops the kernel.
		s.reap()
	}
}

// Flush wakes the kernel for tx entries it has not taken yet and reaps
// completions. It returns how many entries are still on the tx ring. A
// kernel that is busy (a full device queue) makes Submit give up kicking
// with frames left on the ring; in copy mode they go out only on the next
// sendto or poll(2) of FD, so a sender that goes idle should Flush (or
// poll FD) until it returns 0. TX side.
func (s *Socket) Flush() int {
	if s.closed.Load() {
		return 0
	}
	if s.tx.pending() > 0 {
		s.kickTx()
	}
	s.reap()
	return int(s.tx.pending())
}

// Discard gives tx frames from TxFrame back to the free list without
// sending them.
func (s *Socket) Discard(descs []Desc) {
	for _, d := range descs {
		if a := d.Addr & s.frameMask; a >= s.txStart && a < uint64(len(s.umem)) {
			s.txFree = append(s.txFree, a)
		}
	}
}

// Stats returns the kernel's and the socket's own counters.
func (s *Socket) Stats() (SocketStats, error) {
	var st SocketStats
	if s.kernelStats != nil {
		k, err := s.kernelStats()
		if err != nil {
			return st, err
		}
		st = k
	}
	st.RxFrames = s.rxFrames.Load()
	st.TxFrames = s.txFrames.Load()
	st.TxCompleted = s.txCompleted.Load()
	st.RxKicks = s.rxKicks.Load()
	st.TxKicks = s.txKicks.Load()
	st.TxKickErrors = s.txKickErrors.Load()
	return st, nil
}

// Close unmaps the rings and the UMEM and closes the socket. It is
// idempotent; later calls return the first call's result.
func (s *Socket) Close() error {
	if s == nil {
		return nil
	}
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.closeFn != nil {
			s.closeErr = s.closeFn()
		}
	})
	return s.closeErr
}
