package daemon

import (
	"syscall"

	"github.com/fsstack/fsstack/stack"
)

// Direct accept on the stack backend, as direct_linux.go does on the
// kernel's: the daemon prefetches nothing. netstack's per-shard accept
// queues are the only queue, each holding backlog+1 connections
// (stack.Listener.SetBacklog, Linux's rule); their length
// (stack.Listener.Queued) is published as accept_pending on every arrival,
// and ACCEPT takes a connection without blocking (TryAcceptFrom), from the
// caller's CPU's shard first. So the backlog, the edges and the resets of
// a closing listener's queue are netstack's own, which follow Linux's.

// startStackDirectLocked serves ln's accepts directly.
func (s *socket) startStackDirectLocked(ln *stack.Listener, backlog int) {
	if err := ln.SetBacklog(backlog); err != nil {
		s.d.log.Debug("shim listener: backlog not applied", "err", err)
	}
	s.sdirect, s.kqueued = ln, 0
	s.d.goSocket(func() { s.stackDirectLoop(ln) })
}

// stackDirectLoop follows ln's queue length until ln is closed.
func (s *socket) stackDirectLoop(ln *stack.Listener) {
	for {
		select {
		case <-ln.Arrivals():
		case <-ln.Closed():
			s.mu.Lock()
			dead := s.dead
			s.mu.Unlock()
			if dead {
				s.d.removeSocket(s)
			}
			return
		}
		s.mu.Lock()
		if !s.dead && s.sdirect == ln {
			s.arrivedLocked(ln.Queued())
		}
		s.mu.Unlock()
	}
}

// stackAcceptLocked takes one connection from netstack's queues without
// blocking, from shard cpu first (cpu < 0: any); EAGAIN when there is none.
func (s *socket) stackAcceptLocked(cpu int) (*stack.Conn, error) {
	if s.sdirect.Queued() == 0 {
		// Nothing queued (the workers that lost the race for the last
		// connection): answer at once, without a look into every shard.
		// An arrival not yet counted is published when it is.
		s.updateKernelQueuedLocked(0)
		return nil, syscall.EAGAIN
	}
	c, err := s.sdirect.TryAcceptFrom(cpu)
	if err != nil {
		return nil, err
	}
	s.updateKernelQueuedLocked(s.sdirect.Queued())
	return c, nil
}
