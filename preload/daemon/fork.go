package daemon

import (
	"encoding/binary"
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsstack/fsstack/preload/abi"
)

// ForkClaimTimeout is how long references prepared for a fork child stay
// held when the parent never says which pid the child has.
const ForkClaimTimeout = 30 * time.Second

// forkHold is a set of references a parent prepared for its fork child.
type forkHold struct {
	token   uint64
	parent  uint32
	entries []forkEntry
}

type forkEntry struct {
	slot uint32
	gen  uint16
	dups int
	s    *socket
}

// opForkPrepare holds one reference on every socket of the client for the
// child to claim and returns the token in cm.Data[0:8].
func (c *client) opForkPrepare(cm *abi.Cmpl) int32 {
	h := &forkHold{token: randomToken(), parent: c.id}
	c.mu.Lock()
	for _, r := range c.slots {
		if r == nil || r.inRing() {
			// A connection still in an accept ring is the parent's to
			// take: the child has no fd for it (the shim takes a record
			// and makes its fd under a lock its fork holds).
			continue
		}
		r.s.mu.Lock()
		r.s.holds++
		r.s.mu.Unlock()
		h.entries = append(h.entries, forkEntry{slot: r.slot, gen: r.gen, dups: r.dups, s: r.s})
	}
	c.mu.Unlock()
	c.d.mu.Lock()
	if c.d.closed {
		c.d.mu.Unlock()
		releaseHold(h)
		return neg(syscall.ESHUTDOWN)
	}
	c.d.holds[h.token] = h
	c.d.mu.Unlock()
	binary.LittleEndian.PutUint64(cm.Data[0:8], h.token)
	// Released if the parent never commits.
	time.AfterFunc(ForkClaimTimeout, func() { c.d.expireHold(h.token, 0) })
	return 0
}

// opForkInherit installs the held references into this (child) client at
// the same slots and generations.
func (c *client) opForkInherit(req *abi.Req) int32 {
	token := binary.LittleEndian.Uint64(req.Data[0:8])
	c.d.mu.Lock()
	h := c.d.holds[token]
	delete(c.d.holds, token)
	c.d.mu.Unlock()
	if h == nil {
		return neg(syscall.ENOENT)
	}
	n := int32(0)
	for i, e := range h.entries {
		r, errno := c.allocSlot(e.s, int(e.slot), e.gen)
		if errno != 0 {
			c.log.Warn("fork child could not inherit a socket", "slot", e.slot, "err", errno)
			for _, rest := range h.entries[i:] {
				rest.s.dropHold()
			}
			return neg(errno)
		}
		r.dups = e.dups
		e.s.dropHold()
		n++
	}
	c.log.Debug("fork child inherited sockets", "parent", h.parent, "sockets", n)
	return n
}

// opForkCommit tells the daemon the child's pid (or -1: fork failed).
func (c *client) opForkCommit(req *abi.Req) int32 {
	token := binary.LittleEndian.Uint64(req.Data[0:8])
	pid := int(req.Arg0)
	c.d.mu.Lock()
	h := c.d.holds[token]
	if h == nil || h.parent != c.id {
		c.d.mu.Unlock()
		return 0 // already claimed (the child was quick) or released
	}
	if pid <= 0 {
		delete(c.d.holds, token)
		c.d.mu.Unlock()
		releaseHold(h)
		return 0
	}
	c.d.mu.Unlock()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			c.d.expireHold(token, pid)
		}
		return 0 // the claim timeout still applies
	}
	c.d.goSocket(func() { c.d.watchChild(token, pid, pidfd) })
	return 0
}

// watchChild releases the hold when the child exits without claiming it.
func (d *Daemon) watchChild(token uint64, pid, pidfd int) {
	defer unix.Close(pidfd)
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 200)
		d.mu.Lock()
		_, held := d.holds[token]
		closed := d.closed
		d.mu.Unlock()
		if !held || closed {
			return
		}
		if err == nil && n > 0 {
			d.expireHold(token, pid)
			return
		}
	}
}

func (d *Daemon) expireHold(token uint64, pid int) {
	d.mu.Lock()
	h := d.holds[token]
	delete(d.holds, token)
	d.mu.Unlock()
	if h == nil {
		return
	}
	d.log.Debug("fork hold released unclaimed", "parent", h.parent, "child_pid", pid)
	releaseHold(h)
}

// releaseHold drops every hold of h. Call without Daemon.mu (socket.mu
// comes before it).
func releaseHold(h *forkHold) {
	for _, e := range h.entries {
		e.s.dropHold()
	}
	h.entries = nil
}

func (s *socket) dropHold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holds > 0 {
		s.holds--
	}
	s.maybeDieLocked()
}
