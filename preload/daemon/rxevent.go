package daemon

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
)

// The receive side of a connection whose conn reports readiness (stack.Conn)
// runs without a goroutine of its own. netstack calls back when bytes, the
// peer's FIN or an error arrive (eventConn.Notify); the callback puts the
// socket on its shard's rx worker's queue; the worker has netstack write
// what the owner's rx FIFO has room for straight into it (TryReadTo: no
// buffer in between), for every queued socket in turn:
//
//	netstack segment --Notify--> rxWorker.push --wake--> rxWorker.run
//	                                                      serveRx: TryReadTo -> rx FIFO
//
// A pump per connection costs a goroutine start, and a wake-up of its own
// for every read; a worker serves every socket made readable while it ran
// in one pass. When the FIFO is full (or has no owner) the socket waits
// with rxBlocked set until the shim's kick (FSS_DF_RX_WAIT) or a new owner
// queues it again (rxKickLocked); a worker also queues its blocked sockets
// again after rxRecheck, as the pump's wait did, against a lost kick.

// eventConn is a conn whose reader runs on readiness (stack.Conn).
type eventConn interface {
	// TryRead reads what the conn holds without waiting: 0 and nil
	// when nothing is there, io.EOF after the peer's FIN.
	TryRead(b []byte) (int, error)
	// TryReadTo is TryRead straight into w, until w returns an error
	// (io.ErrShortWrite: full); it returns the bytes w took.
	TryReadTo(w io.Writer) (int, error)
	// Notify calls fn (on the stack's goroutine, which fn must not
	// block) when the conn may have become readable or failed.
	Notify(fn func()) (stop func())
	// ResetError reports, once, a failure that reads no longer report
	// (a reset after the peer's FIN); nil while there is none.
	ResetError() error
	// Shard is the stack shard that owns the connection.
	Shard() int
}

// rxServeMax bounds the bytes one serveRx moves before the worker turns
// to the other queued sockets (the socket goes to the back of the queue).
const rxServeMax = 256 << 10

// rxRecheck is how often a worker looks again at the sockets it left
// waiting for FIFO room.
const rxRecheck = time.Second

// rxWorker serves the receive side of one shard's connections.
type rxWorker struct {
	mu   sync.Mutex
	q    []*socket // queued sockets, each once (socket.rxQueued)
	wake chan struct{}

	// The run goroutine's: a buffer for bytes read to be dropped
	// (after SHUT_RD) and the writer into the FIFOs.
	buf []byte
	fw  fifoWriter
}

// fifoWriter lets netstack write a connection's bytes straight into an rx
// FIFO (stack.Conn.TryReadTo): up to room bytes, then io.ErrShortWrite.
type fifoWriter struct {
	f    *abi.FIFOProducer
	room int
	n    int   // bytes taken
	err  error // the FIFO's error (a client that broke its indices)
}

func (w *fifoWriter) Write(p []byte) (int, error) {
	short := len(p) > w.room
	if short {
		p = p[:w.room]
	}
	k, err := w.f.Write(p)
	w.room -= k
	w.n += k
	switch {
	case err != nil:
		w.err = err
		return k, err
	case short || k < len(p):
		return k, io.ErrShortWrite
	}
	return k, nil
}

// rxWorkerFor returns the rx worker of the given shard, starting it first.
func (d *Daemon) rxWorkerFor(shard int) *rxWorker {
	if shard < 0 {
		shard = 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.rxWorkers) <= shard {
		d.rxWorkers = append(d.rxWorkers, nil)
	}
	w := d.rxWorkers[shard]
	if w == nil {
		w = &rxWorker{wake: make(chan struct{}, 1)}
		d.rxWorkers[shard] = w
		d.goSocket(func() { w.run(d) })
	}
	return w
}

// push queues s for serveRx, unless it is queued already. It may run on
// netstack's goroutine (Notify) and takes only the worker's lock.
func (w *rxWorker) push(s *socket) {
	if s.rxQueued.Swap(true) {
		return
	}
	w.mu.Lock()
	w.q = append(w.q, s)
	w.mu.Unlock()
	signal(w.wake)
}

// run serves queued sockets until the daemon closes.
func (w *rxWorker) run(d *Daemon) {
	bp := pumpBufs.Get().(*[]byte)
	defer pumpBufs.Put(bp)
	w.buf = *bp
	var batch, blocked []*socket
	recheck := time.NewTimer(rxRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-w.wake:
		case <-recheck.C:
			for _, s := range blocked {
				w.push(s)
			}
			clear(blocked)
			blocked = blocked[:0]
			recheck.Reset(rxRecheck)
			continue
		case <-d.ctx.Done():
			return
		}
		for {
			w.mu.Lock()
			batch, w.q = w.q, batch[:0]
			w.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i, s := range batch {
				s.rxQueued.Store(false) // a callback from now on queues it again
				switch s.serveRx(w) {
				case rxMore:
					w.push(s)
				case rxBlocked:
					blocked = append(blocked, s)
				}
				batch[i] = nil
			}
		}
	}
}

// rxResult says what serveRx left.
type rxResult int

const (
	rxIdle    rxResult = iota // nothing more to read now; a callback comes when there is
	rxMore                    // it stopped at rxServeMax with bytes perhaps left
	rxBlocked                 // bytes wait for FIFO room or an owner (rxBlocked set)
)

// startRxEventsLocked makes the receive side run on ec's readiness and
// queues a first look (an accepted connection may hold its request
// already).
func (s *socket) startRxEventsLocked(ec eventConn) {
	s.rxEC = ec
	s.rxW = s.d.rxWorkerFor(ec.Shard())
	w := s.rxW
	s.rxStop = ec.Notify(func() { w.push(s) })
	w.push(s)
}

// stopRxLocked ends an event-driven receive side's callbacks (the conn is
// closing).
func (s *socket) stopRxLocked() {
	if s.rxEC == nil {
		return
	}
	if s.rxStop != nil {
		s.rxStop()
		s.rxStop = nil
	}
	s.rxOut = true
}

// rxKickLocked wakes the receive side: a shim freed room in its rx FIFO,
// or the socket has a new owner.
func (s *socket) rxKickLocked() {
	if s.rxEC == nil {
		signal(s.kickRx)
		return
	}
	if s.rxBlocked {
		s.rxW.push(s)
	}
}

// serveRx moves what the conn holds into the owner's rx FIFO, as much as
// the FIFO has room for (what does not fit stays in netstack, whose
// window closes), netstack writing straight into the FIFO; then reports
// EOF or an error once the bytes before it are delivered. After EOF it
// only looks for a reset (watchReset's job for a pump). w is the worker
// that runs it.
func (s *socket) serveRx(w *rxWorker) rxResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serveRxLocked(w)
}

// serveRxLocked is serveRx's receiving.
func (s *socket) serveRxLocked(w *rxWorker) rxResult {
	ec := s.rxEC
	if s.dead || ec == nil {
		return rxIdle
	}
	if s.rxOut {
		s.watchResetLocked()
		return rxIdle
	}
	s.rxBlocked = false
	for got := 0; got < rxServeMax; {
		if len(s.rxPend) > 0 && !s.deliverSomeLocked() {
			s.rxBlocked = true
			return rxBlocked
		}
		var n int
		var err error
		if s.shutRd {
			// After SHUT_RD bytes are read and dropped.
			n, err = ec.TryRead(w.buf)
		} else {
			r := s.ownerLocked()
			if r == nil {
				s.rxBlocked = true
				return rxBlocked
			}
			free, ferr := r.rx.Free()
			if ferr != nil {
				s.breakRefLocked(r, ferr)
				continue
			}
			if free == 0 {
				// Ask for a kick, then look again before waiting.
				atomic.OrUint32(&r.sh.D_flags, abi.DFRxWait)
				if free, ferr = r.rx.Free(); ferr != nil || free == 0 {
					s.rxBlocked = true
					return rxBlocked
				}
			}
			w.fw = fifoWriter{f: r.rx, room: int(free)}
			_, err = ec.TryReadTo(&w.fw) // it returns w.fw.n
			n = w.fw.n
			w.fw.f = nil
			if n > 0 {
				atomic.AndUint32(&r.sh.D_flags, ^uint32(abi.DFRxWait))
				r.c.published(r.slot, r.sh)
			}
			if w.fw.err != nil {
				// The bytes the FIFO did not take are still netstack's.
				s.breakRefLocked(r, w.fw.err)
				continue
			}
		}
		got += n
		if err != nil {
			// rxPend is empty here: EOF follows every byte before it.
			s.rxOut = true
			s.rxDoneLocked(err)
			if errors.Is(err, io.EOF) {
				s.rxEOF = true
				s.watchResetLocked() // one may have come with the FIN
			}
			return rxIdle
		}
		if n == 0 {
			return rxIdle
		}
	}
	return rxMore
}

// watchResetLocked reports a reset that came after the peer's FIN (reads
// report only EOF then), as the kernel reports it with POLLERR at once.
func (s *socket) watchResetLocked() {
	if !s.rxEOF || s.dead || s.state == abi.StClosed {
		return
	}
	if err := s.rxEC.ResetError(); err != nil {
		s.setErrorLocked(errnoOfRead(err))
	}
}
