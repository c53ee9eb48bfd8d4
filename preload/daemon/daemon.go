// Package daemon serves LD_PRELOAD shim clients (libfsstack.so) from a
// Backend (the sharded stack, or the kernel for tests).
//
//	shim (application)                     daemon (this package)
//	  hello "FSSA" on the unix socket ---> ServeConn: SO_PEERCRED, memfd segment,
//	  <--- reply + [memfd, doorbell, wake]  eventfds (attach_linux.go)
//	  fss_req  --request ring----------->  client.loop: one goroutine per client,
//	  fss_cmpl <--completion ring--------    serves ops (ops.go), takes kick bits
//	  tx FIFO  --bytes------------------>  client loop (kick) --> stack.Conn.TryWriteFrom;
//	                                       what must wait, and other backends:
//	                                       socket.txPump --> net.Conn.Write
//	  rx FIFO  <--bytes------------------  rxWorker.run (one per shard) <-- stack.Conn.TryReadTo
//	                                       on netstack's readiness (rxevent.go); other
//	                                       backends: socket.rxPump <-- net.Conn.Read
//	  slot events, ready map, wake fd <--  socket.publishLocked
//
// The wire formats and the shared layouts are in
// preload/include/fsstack_abi.h (Go view: package abi); the prose is in
// docs/SHIM_PROTOCOL.md.
//
// Ownership: a socket is one daemon object with one reference (sockRef) per
// client that holds it in its table (per DUP count inside the client, and
// across clients after fork). The socket lives while any reference or fork
// hold exists. Received bytes go to one reference, the owner (the oldest
// live one); bytes written through any reference are sent.
//
// Lock order: client.mu, then socket.mu, then Daemon.mu (a dying socket
// removes itself from the daemon's set while holding its own lock). Socket goroutines
// (pumps, accept loops) take only socket.mu; they touch a client's segment
// only through references attached to the socket, under socket.mu, and a
// client unmaps its segment only after detaching every reference.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	kmodcompat "github.com/fsstack/fsstack/kmod-compat"
	"github.com/fsstack/fsstack/preload/abi"
)

// Options configure a Daemon.
type Options struct {
	// Backend serves the sockets (required). *stack.Stack satisfies it;
	// KernelBackend{} uses the kernel's stack.
	Backend Backend
	// Logger receives client and socket logs. If nil, slog.Default().
	Logger *slog.Logger
	// Layout sizes each client's segment; zero fields take the header's
	// defaults (4096 sockets, 64 KiB FIFOs, 256-entry rings).
	Layout abi.Layout
	// AllowUID, if set, decides whether a peer uid may attach. If nil,
	// every uid that can connect to the socket may (the socket's file
	// mode is the access control).
	AllowUID func(uid uint32) bool
	// Fastsocket holds fastsocket.ko's parameters (kmod-compat); if nil,
	// the module's defaults. The daemon applies enable_listen_spawn: with 0
	// (one shared listen table) ACCEPT ignores the caller's CPU; the value
	// is also published to every client (seg_hdr.fastsocket), whose
	// /dev/fastsocket SPAWN commands follow it.
	Fastsocket *kmodcompat.Params
	// MaxClientsPerUID caps the clients one uid has attached at once; an
	// attach over it is refused with EMFILE (the shim falls back to the
	// kernel, or fails with --fallback fail). Root (uid 0) is never
	// capped. If 0, no cap. Each client costs a segment (a sparse memfd)
	// and three descriptors.
	MaxClientsPerUID int
}

// ErrClosed is returned by ServeConn after Close.
var ErrClosed = errors.New("shim daemon closed")

// Daemon serves shim clients. Its methods are safe for concurrent use.
type Daemon struct {
	opts   Options
	log    *slog.Logger
	layout abi.Layout
	// listenSpawn is enable_listen_spawn (Options.Fastsocket); fixed.
	listenSpawn int
	ctx         context.Context
	cancel      context.CancelFunc

	mu      sync.Mutex // guards the fields below
	closed  bool
	clients map[uint32]*client
	perUID  map[uint32]int // attached clients per uid (MaxClientsPerUID)
	nextID  uint32
	holds   map[uint64]*forkHold
	sockets map[*socket]struct{}
	// rxWorkers serve the receive side of event-driven conns, one per
	// shard (rxevent.go).
	rxWorkers []*rxWorker

	wg sync.WaitGroup // socket goroutines

	stats struct {
		attached, refused, dropped  atomic.Uint64
		acceptLocal, acceptRemote   atomic.Uint64
		acceptEmpty                 atomic.Uint64
		acceptRing, acceptReclaimed atomic.Uint64
		acceptStolen                atomic.Uint64
	}

	// loseDoorbell and doorbellLost are LoseNextDoorbell's.
	loseDoorbell, doorbellLost atomic.Bool
}

// LoseNextDoorbell is a fault for tests: the next client loop that a
// doorbell wakes behaves as if the wake-up never came. It clears
// daemon_sleeping, as the shim's ring does, and sleeps again without
// serving, so a shim that relies on that one doorbell waits until it
// rings again. It returns a function that reports whether the fault has
// happened.
func (d *Daemon) LoseNextDoorbell() (happened func() bool) {
	d.doorbellLost.Store(false)
	d.loseDoorbell.Store(true)
	return d.doorbellLost.Load
}

// New checks opts and returns a Daemon. It starts nothing until ServeConn.
func New(opts Options) (*Daemon, error) {
	if opts.Backend == nil {
		return nil, errors.New("shim daemon: no backend; pass the stack (or daemon.KernelBackend{} for tests)")
	}
	l := opts.Layout.WithDefaults()
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("shim daemon: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	fsock := kmodcompat.DefaultParams()
	if opts.Fastsocket != nil {
		fsock = *opts.Fastsocket
	}
	if fsock.EnableListenSpawn < 0 || fsock.EnableListenSpawn > 2 {
		return nil, fmt.Errorf("shim daemon: enable_listen_spawn=%d: want 0, 1 or 2", fsock.EnableListenSpawn)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Daemon{
		listenSpawn: fsock.EnableListenSpawn,
		opts:        opts, log: log.With("component", "shim"), layout: l, ctx: ctx, cancel: cancel,
		clients: make(map[uint32]*client), holds: make(map[uint64]*forkHold),
		sockets: make(map[*socket]struct{}),
	}, nil
}

// Stats are the daemon's shim counters.
type Stats struct {
	Clients  int    `json:"clients"`  // attached now
	Sockets  int    `json:"sockets"`  // live sockets now
	Attached uint64 `json:"attached"` // attaches accepted since start
	Refused  uint64 `json:"refused"`  // attaches refused
	Dropped  uint64 `json:"dropped"`  // clients dropped for a protocol violation
	// Accepts served from the caller's own CPU's shard (or without a CPU
	// given), and taken from another shard because the own one was empty.
	AcceptLocal  uint64 `json:"accept_local"`
	AcceptRemote uint64 `json:"accept_remote"`
	// AcceptEmpty counts ACCEPT requests answered EAGAIN: a round trip
	// that found no connection (two processes woken for one, or a
	// non-blocking accept loop's last call).
	AcceptEmpty uint64 `json:"accept_empty"`
	// AcceptRing counts connections the daemon put into a client's accept
	// ring (FSS_HELLO_ACCEPT_RING): accepts without a round trip.
	// AcceptReclaimed counts those taken back, untaken, from a ring whose
	// client closed the listener or exited, for another holder.
	AcceptRing      uint64 `json:"accept_ring"`
	AcceptReclaimed uint64 `json:"accept_reclaimed"`
	// AcceptStolen counts records taken back from a ring after
	// FSS_ACCEPT_STEAL_MS untaken, for another holder (also counted in
	// AcceptReclaimed).
	AcceptStolen uint64 `json:"accept_stolen"`
}

// Stats returns the current counters.
func (d *Daemon) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Stats{
		Clients: len(d.clients), Sockets: len(d.sockets),
		Attached: d.stats.attached.Load(), Refused: d.stats.refused.Load(), Dropped: d.stats.dropped.Load(),
		AcceptLocal: d.stats.acceptLocal.Load(), AcceptRemote: d.stats.acceptRemote.Load(), AcceptEmpty: d.stats.acceptEmpty.Load(),
		AcceptRing: d.stats.acceptRing.Load(), AcceptReclaimed: d.stats.acceptReclaimed.Load(),
		AcceptStolen: d.stats.acceptStolen.Load(),
	}
}

// Close tells every client the daemon is gone (their segments say
// FSS_DAEMON_GONE and their shims are woken), drops them, closes every
// socket and waits for the daemon's goroutines. Idempotent.
func (d *Daemon) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	clients := make([]*client, 0, len(d.clients))
	for _, c := range d.clients {
		clients = append(clients, c)
	}
	d.mu.Unlock()
	d.cancel()
	for _, c := range clients {
		c.stop(ErrClosed)
	}
	for _, c := range clients {
		<-c.done
	}
	d.mu.Lock()
	holds := d.holds
	d.holds = make(map[uint64]*forkHold)
	d.mu.Unlock()
	for _, h := range holds {
		releaseHold(h)
	}
	d.mu.Lock()
	socks := make([]*socket, 0, len(d.sockets))
	for s := range d.sockets {
		socks = append(socks, s)
	}
	d.mu.Unlock()
	for _, s := range socks {
		s.abort()
	}
	d.wg.Wait()
	return nil
}

func (d *Daemon) addClient(c *client) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if limit := d.opts.MaxClientsPerUID; limit > 0 && c.uid != 0 && d.perUID[c.uid] >= limit {
		return refuse(syscall.EMFILE, "uid %d has %d clients attached, the most allowed (fsstack up --max-clients-per-uid)", c.uid, limit)
	}
	if d.perUID == nil {
		d.perUID = make(map[uint32]int)
	}
	d.perUID[c.uid]++
	d.nextID++
	if d.nextID == 0 {
		d.nextID = 1
	}
	c.id = d.nextID
	d.clients[c.id] = c
	return nil
}

func (d *Daemon) removeClient(c *client) {
	d.mu.Lock()
	if d.clients[c.id] == c {
		delete(d.clients, c.id)
		if d.perUID[c.uid]--; d.perUID[c.uid] <= 0 {
			delete(d.perUID, c.uid)
		}
	}
	d.mu.Unlock()
}

func (d *Daemon) addSocket(s *socket) {
	d.mu.Lock()
	d.sockets[s] = struct{}{}
	d.mu.Unlock()
}

func (d *Daemon) removeSocket(s *socket) {
	d.mu.Lock()
	delete(d.sockets, s)
	d.mu.Unlock()
}

// goSocket runs f on a goroutine that Close waits for.
func (d *Daemon) goSocket(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

func randomToken() uint64 {
	var b [8]byte
	rand.Read(b[:])
	t := binary.LittleEndian.Uint64(b[:])
	if t == 0 {
		t = 1
	}
	return t
}

// ServeConn serves one connection of the control socket whose first bytes
// are not JSON: a shim's attach. first holds the bytes already read from
// conn (it may be empty). It runs the handshake and then serves the client
// until it goes away, closes conn, and returns nil for an orderly
// disconnect or the reason the client was refused or dropped.
func (d *Daemon) ServeConn(ctx context.Context, conn *net.UnixConn, first []byte) error {
	defer conn.Close()
	c, err := d.attach(ctx, conn, first)
	if err != nil {
		return err // logged and counted by attach
	}
	d.stats.attached.Add(1)
	stop := context.AfterFunc(ctx, func() { c.stop(ctx.Err()) })
	defer stop()
	return c.run()
}

// Serve is a convenience for tests and tools that serve only
// shims (no JSON) on ln: it runs ServeConn for every connection until ln
// fails or ctx ends.
func (d *Daemon) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("shim daemon: accept: %w", err)
		}
		wg.Go(func() { d.ServeConn(ctx, c, nil) })
	}
}
