package stack

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Packet capture. XDP steers fsstack's frames past the kernel, so tcpdump
// on the interface never sees them; a capture taps the shards instead:
//
//	rx: AF_XDP rx ring --Receive--> [tap: every frame of the batch] --> parseSegment, GRO, netstack
//	tx: netstack --WritePackets--> frames in UMEM --post--> [tap: every frame posted] --> kick
//
// Each shard's link endpoint holds an atomic pointer to the captures that
// want its frames (nil when none run): with no capture the hot path pays
// one atomic load per receive batch and one per transmit post. A running
// capture copies each matching frame into its own bounded channel and
// never blocks the shard: when the reader falls behind, frames are
// counted as dropped. Pure ACKs the link endpoint holds (delayed ACK) are
// seen when they are posted, and not at all when a later segment carries
// them, so the capture shows what left, not what netstack wrote.

// Direction says whether a captured frame was received or sent.
type Direction uint8

const (
	// In is a frame a shard received from its AF_XDP rx ring.
	In Direction = iota
	// Out is a frame a shard posted on its AF_XDP tx ring.
	Out
)

func (d Direction) String() string {
	if d == Out {
		return "out"
	}
	return "in"
}

// DefaultCaptureBuffer is how many frames a capture holds for its reader
// when CaptureOptions.Buffer is 0.
const DefaultCaptureBuffer = 4096

// CaptureOptions says what a capture records. The zero value records
// every frame of every shard, whole.
type CaptureOptions struct {
	// Shards restricts the capture to these shards. If nil, every shard.
	Shards []int
	// Match, if set, keeps only the frames (Ethernet, IPv4, TCP) for
	// which it returns true. It runs on the shard's receive goroutine
	// and under the transmit lock: it must be quick, must not block and
	// must not keep frame. capture.Filter.Match is one.
	Match func(frame []byte) bool
	// Buffer is how many frames wait for the reader before further ones
	// are dropped. If 0, DefaultCaptureBuffer.
	Buffer int
	// SnapLen keeps at most this many bytes of each frame. If 0, the whole
	// frame.
	SnapLen int
}

// CapturedFrame is one frame a shard received or sent.
type CapturedFrame struct {
	Time  time.Time
	Shard int
	Dir   Direction
	// Data is the Ethernet frame, cut to CaptureOptions.SnapLen; the
	// reader owns it.
	Data []byte
	// Len is the frame's length on the wire (len(Data) unless cut).
	Len int
}

// Capture is a running capture. Read its frames from Frames until the
// channel closes; Close stops it. Safe for concurrent use.
type Capture struct {
	st      *Stack
	opts    CaptureOptions
	frames  chan CapturedFrame
	dropped atomic.Uint64
	matched atomic.Uint64

	// mu orders the taps' sends (read-locked) before Close's close of
	// frames (write-locked); closed is guarded by it.
	mu     sync.RWMutex
	closed bool
}

// ErrNoShard is wrapped by the error Capture returns for a shard number
// the stack does not have.
var ErrNoShard = errors.New("no such shard")

// Capture starts recording the frames the shards receive and send. Several
// captures may run at once; each sees every frame it asks for. It fails for
// a shard number outside 0..Queues()-1, and with ErrClosed after Close.
func (s *Stack) Capture(opts CaptureOptions) (*Capture, error) {
	for _, id := range opts.Shards {
		if id < 0 || id >= len(s.shards) {
			return nil, fmt.Errorf("%w %d: this stack has shards 0-%d", ErrNoShard, id, len(s.shards)-1)
		}
	}
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultCaptureBuffer
	}
	if opts.SnapLen < 0 {
		opts.SnapLen = 0
	}
	opts.Shards = slices.Clone(opts.Shards)
	c := &Capture{st: s, opts: opts, frames: make(chan CapturedFrame, opts.Buffer)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.captures == nil {
		s.captures = make(map[*Capture]struct{})
	}
	s.captures[c] = struct{}{}
	s.publishTapsLocked()
	return c, nil
}

// Frames returns the channel the captured frames arrive on. It is closed
// by Close (and by the stack's Close).
func (c *Capture) Frames() <-chan CapturedFrame { return c.frames }

// Dropped returns how many matching frames were not recorded because the
// reader was slow (the buffer was full).
func (c *Capture) Dropped() uint64 { return c.dropped.Load() }

// Matched returns how many frames matched, recorded or dropped.
func (c *Capture) Matched() uint64 { return c.matched.Load() }

// Close stops the capture: no frame is added after it returns, and Frames
// closes once the reader has taken those already buffered. Idempotent.
func (c *Capture) Close() error {
	c.st.mu.Lock()
	if _, ok := c.st.captures[c]; ok {
		delete(c.st.captures, c)
		c.st.publishTapsLocked()
	}
	c.st.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.frames)
	}
	return nil
}

// wants reports whether the capture records shard id.
func (c *Capture) wants(id int) bool {
	return c.opts.Shards == nil || slices.Contains(c.opts.Shards, id)
}

// record copies frame into the capture's buffer, or counts it dropped.
func (c *Capture) record(shard int, dir Direction, now time.Time, frame []byte) {
	if c.opts.Match != nil && !c.opts.Match(frame) {
		return
	}
	c.matched.Add(1)
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return
	}
	n := len(frame)
	if c.opts.SnapLen > 0 && n > c.opts.SnapLen {
		n = c.opts.SnapLen
	}
	f := CapturedFrame{Time: now, Shard: shard, Dir: dir, Data: append([]byte(nil), frame[:n]...), Len: len(frame)}
	select {
	case c.frames <- f:
	default:
		c.dropped.Add(1)
	}
}

// tapList is what one shard's link endpoint taps: the captures that want
// its frames. Immutable once published; replaced whole.
type tapList struct {
	shard int
	caps  []*Capture
}

// tap records frame in every capture of the list.
func (t *tapList) tap(dir Direction, frame []byte) {
	now := time.Now()
	for _, c := range t.caps {
		c.record(t.shard, dir, now, frame)
	}
}

// publishTapsLocked gives every shard the list of captures that want its
// frames (nil: none, the hot path's fast case). Called with s.mu held.
func (s *Stack) publishTapsLocked() {
	for _, sh := range s.shards {
		var caps []*Capture
		for c := range s.captures {
			if c.wants(sh.id) {
				caps = append(caps, c)
			}
		}
		if len(caps) == 0 {
			sh.ep.taps.Store(nil)
			continue
		}
		sh.ep.taps.Store(&tapList{shard: sh.id, caps: caps})
	}
}

// closeCaptures ends every capture (the stack is closing).
func (s *Stack) closeCaptures() {
	s.mu.Lock()
	caps := make([]*Capture, 0, len(s.captures))
	for c := range s.captures {
		caps = append(caps, c)
	}
	s.mu.Unlock()
	for _, c := range caps {
		c.Close()
	}
}
