package stack

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Conn's byte path: Read and Write call the netstack endpoint directly and,
// when it would block, wait on a channel that the endpoint's waiter queue
// and the direction's deadline timer both signal.
//
//	Read:  ep.Read --ErrWouldBlock--> wait(rx.ch) <-- readable/HUp/Err
//	                                              <-- rx.timer (deadline)
//	Write: ep.Write --ErrWouldBlock--> wait(tx.ch) <-- writable/HUp/Err
//	                                               <-- tx.timer
//
// Each direction registers its waiter entry once, at its first wait, and
// keeps it until Close; its deadline timer is made once and re-armed by
// every SetDeadline after that. (A server that sets a deadline per request,
// as net/http does, otherwise makes and discards a timer and a channel
// each time.) Errors are translated once (translate in errors.go): they
// match the errno the kernel would report with errors.Is, a deadline's
// matches os.ErrDeadlineExceeded, and a Read or Write after Close reports
// net.ErrClosed, all as net.OpError, as net.TCPConn's do.

// connDir is one direction of a Conn. mu serializes that direction's
// calls, as net.TCPConn does; the fields below it are guarded by it,
// except deadline (atomic: SetDeadline may run beside a blocked call).
type connDir struct {
	mu         sync.Mutex
	ch         chan struct{} // signalled by the waiter entry and the timer
	entry      waiter.Entry
	registered bool

	// deadline is the deadline in Unix nanoseconds; 0: none.
	deadline atomic.Int64
	tmu      sync.Mutex  // guards timer
	timer    *time.Timer // made at the first deadline, re-armed since
}

// signal wakes the direction's waiting call, if any.
func (d *connDir) signal() {
	select {
	case d.ch <- struct{}{}:
	default:
	}
}

// expired reports whether the direction's deadline has passed.
func (d *connDir) expired() bool {
	dl := d.deadline.Load()
	return dl != 0 && time.Now().UnixNano() >= dl
}

// setDeadline sets the deadline and arms the timer for it; a waiting call
// looks at the deadline when the timer signals it.
func (d *connDir) setDeadline(t time.Time) {
	d.tmu.Lock()
	defer d.tmu.Unlock()
	if t.IsZero() {
		d.deadline.Store(0)
		if d.timer != nil {
			d.timer.Stop()
		}
		return
	}
	d.deadline.Store(t.UnixNano())
	wait := time.Until(t)
	if wait <= 0 {
		// Already past: wake a waiting call now, not when the timer
		// goroutine gets to run (net/http aborts its background read
		// this way at the end of every request, and waits for it).
		if d.timer != nil {
			d.timer.Stop()
		}
		d.signal()
		return
	}
	// One moved while a call waits fires at its new time (Reset
	// replaces the old one).
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, d.signal)
	} else {
		d.timer.Reset(wait)
	}
}

// waitLocked blocks until the direction is signalled, registering its
// waiter entry with wq the first time. The caller holds d.mu and tries
// the endpoint again after it returns.
func (d *connDir) waitLocked(wq *waiter.Queue, mask waiter.EventMask) {
	if !d.registered {
		d.entry.Init(waiter.ChannelNotifier(d.ch), mask)
		wq.EventRegister(&d.entry)
		d.registered = true
		return // try once more: an event may have come before the entry
	}
	<-d.ch
}

// unregister drops the direction's waiter entry and stops its timer.
func (d *connDir) unregister(wq *waiter.Queue) {
	d.tmu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.tmu.Unlock()
	if d.registered {
		wq.EventUnregister(&d.entry)
		d.registered = false
	}
}

func (c *Conn) initDirs() {
	c.rx.ch = make(chan struct{}, 1)
	c.tx.ch = make(chan struct{}, 1)
}

// Read reads data from the connection, as net.TCPConn's Read.
func (c *Conn) Read(b []byte) (int, error) { return c.read(b, true) }

// TryRead reads what the connection holds now, without waiting: 0 and a
// nil error say nothing is there yet. At the peer's FIN it returns io.EOF,
// as Read does. A reader that runs on readiness (Notify) instead of a
// goroutine of its own uses it. Deadlines do not apply: it never waits.
func (c *Conn) TryRead(b []byte) (int, error) { return c.read(b, false) }

// TryReadTo is TryRead into w: netstack writes what it holds straight into
// w, a call per chunk, until w returns an error (io.ErrShortWrite says it
// is full; the chunk's bytes it did not take stay in netstack). It returns
// the bytes w took, and not w's error, which its caller knows. A reader
// that moves bytes into memory of its own (the shim daemon's rx FIFOs)
// needs no buffer in between.
func (c *Conn) TryReadTo(w io.Writer) (int, error) {
	c.rx.mu.Lock()
	defer c.rx.mu.Unlock()
	return c.readLocked(w, false, false)
}

// Notify calls fn whenever the connection may have changed for a reader:
// bytes arrived, the peer's FIN, a reset or another error (netstack's
// readable, hang-up and error events). fn runs on netstack's goroutine
// with the endpoint locked, so it must not call the Conn: it hands the
// work to a goroutine of its own (which then calls TryRead). stop removes
// the registration; Close does not.
func (c *Conn) Notify(fn func()) (stop func()) {
	e := waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, func(waiter.EventMask) { fn() })
	c.wq.EventRegister(&e)
	return func() { c.wq.EventUnregister(&e) }
}

// read is Read (wait) and TryRead (!wait: return when nothing is there).
func (c *Conn) read(b []byte, wait bool) (int, error) {
	c.rx.mu.Lock()
	defer c.rx.mu.Unlock()
	w := tcpip.SliceWriter(b)
	return c.readLocked(&w, len(b) == 0, wait)
}

// readLocked has netstack write what it holds into w, waiting for bytes
// if wait is set (and w has room: empty says it has none). Without wait
// a writer that took nothing is nothing read. The caller holds rx.mu.
func (c *Conn) readLocked(w io.Writer, empty, wait bool) (int, error) {
	for {
		if c.closed.Load() {
			return 0, c.opError("read", net.ErrClosed)
		}
		if wait && c.rx.expired() {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		res, terr := c.ep.Read(w, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
			if res.Count != 0 {
				c.ep.ModerateRecvBuf(res.Count)
			}
			return res.Count, nil
		case *tcpip.ErrWouldBlock:
			if empty || !wait {
				return 0, nil
			}
			c.rx.waitLocked(c.wq, waiter.ReadableEvents)
		case *tcpip.ErrClosedForReceive:
			return 0, io.EOF
		case *tcpip.ErrBadBuffer:
			if !wait {
				return 0, nil // w took nothing (TryReadTo's writer is full)
			}
			return 0, c.opError("read", translate(terr))
		default:
			return 0, c.opError("read", translate(terr))
		}
	}
}

// Write writes all of b unless an error or the deadline stops it, as
// net.TCPConn's Write; it returns how many bytes netstack took.
func (c *Conn) Write(b []byte) (int, error) { return c.write(b, true) }

// TryWrite writes what netstack takes of b now, without waiting for send
// buffer space: n < len(b) with a nil error says the buffer is full. A
// caller that must not block (the shim daemon's client loop, which writes
// a short answer straight from the shim's FIFO) uses it, and leaves the
// rest to a writer that may wait. Deadlines do not apply: it never waits.
func (c *Conn) TryWrite(b []byte) (int, error) { return c.write(b, false) }

// TryWriteFrom is TryWrite of the next n bytes of r, which netstack reads
// straight into its send buffer (no copy through a slice of the caller's):
// as many as the buffer takes now. r must have n bytes ready; what
// netstack does not take stays in r. A writer whose bytes wait in memory
// of its own (the shim daemon's tx FIFOs) needs no buffer in between.
func (c *Conn) TryWriteFrom(r io.Reader, n int) (int, error) {
	c.tx.mu.Lock()
	defer c.tx.mu.Unlock()
	c.wf = readerPayload{r: r, n: n}
	defer func() { c.wf = readerPayload{} }() // hold no reference to r
	return c.writeLocked(&c.wf, false)
}

// readerPayload is TryWriteFrom's netstack payload: the next n bytes of r.
type readerPayload struct {
	r io.Reader
	n int
}

func (p *readerPayload) Len() int { return p.n }

func (p *readerPayload) Read(b []byte) (int, error) {
	if len(b) > p.n {
		b = b[:p.n]
	}
	k, err := p.r.Read(b)
	p.n -= k
	return k, err
}

// write is Write (wait) and TryWrite (!wait: return at a full buffer).
func (c *Conn) write(b []byte, wait bool) (int, error) {
	c.tx.mu.Lock()
	defer c.tx.mu.Unlock()
	r := &c.wr
	r.Reset(b)
	defer r.Reset(nil) // hold no reference to the caller's bytes
	return c.writeLocked(r, wait)
}

// writeLocked hands p's bytes to netstack until none are left, waiting
// for send buffer space if wait is set, and returns how many netstack
// took. The caller holds tx.mu.
func (c *Conn) writeLocked(p tcpip.Payloader, wait bool) (int, error) {
	n := 0
	for {
		if c.closed.Load() {
			return n, c.opError("write", net.ErrClosed)
		}
		if wait && c.tx.expired() {
			return n, c.opError("write", os.ErrDeadlineExceeded)
		}
		if p.Len() == 0 {
			return n, nil
		}
		m, terr := c.ep.Write(p, tcpip.WriteOptions{})
		n += int(m)
		switch terr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			if !wait {
				return n, nil
			}
			c.tx.waitLocked(c.wq, waiter.WritableEvents)
		default:
			return n, c.opError("write", translate(terr))
		}
	}
}

// SetDeadline sets the read and write deadlines, as net.Conn's.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rx.setDeadline(t)
	c.tx.setDeadline(t)
	return nil
}

// SetReadDeadline sets the deadline for Read calls, as net.Conn's.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rx.setDeadline(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write calls, as net.Conn's.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.tx.setDeadline(t)
	return nil
}

// CloseRead shuts down the reading side, as net.TCPConn's.
func (c *Conn) CloseRead() error {
	if terr := c.ep.Shutdown(tcpip.ShutdownRead); terr != nil {
		return c.opError("close", translate(terr))
	}
	return nil
}

// CloseWrite shuts down the writing side (sends FIN once the data before
// it is sent), as net.TCPConn's.
func (c *Conn) CloseWrite() error {
	if terr := c.ep.Shutdown(tcpip.ShutdownWrite); terr != nil {
		return c.opError("close", translate(terr))
	}
	return nil
}

// closeEndpoint closes the endpoint once; calls blocked in Read or Write
// return net.ErrClosed.
func (c *Conn) closeEndpoint() error {
	if c.closed.Swap(true) {
		return c.opError("close", net.ErrClosed)
	}
	c.ep.Close()
	c.rx.signal()
	c.tx.signal()
	// The blocked calls hold their direction's lock until they see
	// closed; take each in turn to drop the entries safely.
	c.rx.mu.Lock()
	c.rx.unregister(c.wq)
	c.rx.mu.Unlock()
	c.tx.mu.Lock()
	c.tx.unregister(c.wq)
	c.tx.mu.Unlock()
	return nil
}

// LocalAddr returns the local address: for an IPv4 connection accepted by
// a dual-stack listener, v4-mapped (::ffff:a.b.c.d, which net.IP prints as
// a.b.c.d).
func (c *Conn) LocalAddr() net.Addr {
	return c.addr(&c.laddr, c.ep.GetLocalAddress)
}

// RemoteAddr returns the peer's address, v4-mapped as LocalAddr's.
func (c *Conn) RemoteAddr() net.Addr {
	return c.addr(&c.raddr, c.ep.GetRemoteAddress)
}

// addr returns the address cached in p, asking get the first time. A
// nil *net.TCPAddr must not reach the net.Addr interface (it would not
// compare equal to nil), so a failed get returns a nil interface.
func (c *Conn) addr(p *atomic.Pointer[net.TCPAddr], get func() (tcpip.FullAddress, tcpip.Error)) net.Addr {
	if a := p.Load(); a != nil {
		return a
	}
	full, terr := get()
	if terr != nil {
		return nil
	}
	a := c.mapAddr(fullToTCPAddr(full))
	p.CompareAndSwap(nil, a)
	return p.Load()
}

func fullToTCPAddr(a tcpip.FullAddress) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(a.Addr.AsSlice()), Port: int(a.Port)}
}

func (c *Conn) mapAddr(t *net.TCPAddr) *net.TCPAddr {
	if c.mapped && len(t.IP) == net.IPv4len {
		return &net.TCPAddr{IP: t.IP.To16(), Port: t.Port}
	}
	return t
}

func (c *Conn) opError(op string, err error) error {
	oe := &net.OpError{Op: op, Net: "tcp", Err: err}
	// A nil *net.TCPAddr in the interface would print as "<nil>" and
	// fail comparisons with nil; leave the fields unset instead.
	if a := c.LocalAddr(); a != nil {
		oe.Source = a
	}
	if a := c.RemoteAddr(); a != nil {
		oe.Addr = a
	}
	return oe
}
