package daemon

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Direct accept, for listeners that expose a kernel fd (the kernel
// backend): the daemon does not prefetch connections into its own queue.
// It learns the kernel accept queue's length from TCP_INFO (tcpi_unacked
// of a listener is sk_ack_backlog) on every readiness event of the
// listening fd, publishes it as accept_pending, and ACCEPT calls accept4
// on the fd. So the backlog, the connections a close resets, and the
// edges epoll reports are exactly the kernel's.

// directFD returns a dup of the listener's fd as a pollable file if the
// listener can be served directly. (A listener's own RawConn refuses Read;
// the dup shares the socket and its O_NONBLOCK, and Go's poller takes it
// as a file.) The caller must close the file whenever it closes ln, or the
// socket stays open.
func directFD(ln net.Listener) (*os.File, syscall.RawConn) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, nil
	}
	lrc, err := sc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	nfd := -1
	lrc.Control(func(fd uintptr) {
		if _, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			return
		}
		nfd, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if nfd < 0 {
		return nil, nil
	}
	f := os.NewFile(uintptr(nfd), "fsstack-listener")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil
	}
	return f, rc
}

// kernelQueued reads the listener's accept queue length.
func kernelQueued(fd uintptr) int {
	ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return int(ti.Unacked)
}

// directLoop follows the kernel queue of ln until ln is closed or
// replaced: one call of the function per readiness event (Go's poller is
// edge-triggered, so each arriving connection is an event).
func (s *socket) directLoop(ln net.Listener, rc syscall.RawConn) {
	rc.Read(func(fd uintptr) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.dead || s.ln != ln {
			return true
		}
		// The length is read under mu: read before it, it could be
		// older than an accept made meanwhile and publish connections
		// already taken (a listener readable with nothing to accept).
		s.arrivedLocked(kernelQueued(fd))
		return false // wait for the next event
	})
	// rc.Read returns when the dup is closed (with ln).
	s.mu.Lock()
	dead := s.dead
	s.mu.Unlock()
	if dead {
		s.d.removeSocket(s)
	}
}

// updateKernelQueuedLocked publishes a new kernel queue length: an
// increase (a connection arrived) is an edge, a decrease is not.
func (s *socket) updateKernelQueuedLocked(n int) {
	switch {
	case n > s.kqueued:
		s.kqueued = n
		s.publishLocked()
	case n < s.kqueued:
		s.kqueued = n
		s.publishQuietLocked()
	}
}

// directAcceptLocked accepts one connection from the kernel queue without
// blocking (EAGAIN when there is none). Either way it publishes the queue's
// length as it is now: after an EAGAIN, whatever was published, nothing is
// queued.
func (s *socket) directAcceptLocked() (net.Conn, error) {
	var nfd int
	var aerr error
	if err := s.direct.Control(func(fd uintptr) {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		s.updateKernelQueuedLocked(kernelQueued(fd))
	}); err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	f := os.NewFile(uintptr(nfd), "fsstack-accepted")
	defer f.Close() // FileConn dups it
	return net.FileConn(f)
}

// closeListenerLocked closes the backend listener and, in direct mode, the
// dup of its fd (which would otherwise keep the socket listening).
func (s *socket) closeListenerLocked() {
	if s.direct != nil {
		// Stop listening now, whatever holds the fd: shutdown disconnects
		// a listening socket (and resets its queue) for every descriptor.
		s.direct.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	s.sdirect = nil
	if f := s.directFile; f != nil {
		// Not under mu: Close waits for directLoop's Read, whose callback
		// may be waiting for mu.
		s.d.goSocket(func() { f.Close() })
		s.directFile, s.direct, s.kqueued = nil, nil, 0
	}
}
