package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Starting a connect on the client loop. The kernel's connect(2) sends the
// SYN before it returns, non-blocking or not, and on loopback the whole
// handshake runs inside the call; so one thread's connects reach a listener
// one after the other. Dialing on a goroutine per CONNECT instead put
// several handshakes in flight at once on different CPUs: a SYN admitted
// while the listener's accept queue had room, whose ACK then found it full,
// left a client connected that the listener never queued (t_connect's
// backlog case: 4 connections complete with backlog 2 where the kernel
// completes 3). Backends that can start a connect without waiting for it
// implement dialStarter; the daemon calls it on the client loop, in the
// order the shim posted the requests, and waits for the outcome on a
// goroutine.

// dialStarter starts a connect to raddr and returns at once (after the
// SYN, as connect(2) does); wait blocks for the outcome. ctx ends the wait.
type dialStarter interface {
	StartDial(ctx context.Context, raddr netip.AddrPort) (wait func() (net.Conn, error), err error)
}

var (
	_ dialStarter = KernelBackend{}
	_ dialStarter = (*kernelBound)(nil)
)

// StartDial starts a connect from a fresh kernel socket.
// An IPv4 destination (a v4-mapped one arrives unmapped: dialTarget)
// gets an AF_INET socket, an IPv6 one an AF_INET6 socket.
func (KernelBackend) StartDial(ctx context.Context, raddr netip.AddrPort) (func() (net.Conn, error), error) {
	domain := unix.AF_INET
	if raddr.Addr().Is6() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	return startConnect(ctx, fd, domain == unix.AF_INET6, raddr)
}

// StartDial connects from the reserved socket itself (bound, with the
// options it was bound with), which the connect consumes.
// An AF_INET6 one (bound to an IPv6 or v4-mapped address) connects to an
// IPv4 destination v4-mapped, as the kernel's dual-stack socket does.
func (b *kernelBound) StartDial(ctx context.Context, raddr netip.AddrPort) (func() (net.Conn, error), error) {
	v6 := b.addr.Addr().Is6()
	if !v6 && !raddr.Addr().Is4() {
		b.Close()
		return nil, fmt.Errorf("connect %v from %v: %w", raddr, b.addr, syscall.EAFNOSUPPORT)
	}
	fd, err := b.take()
	if err != nil {
		return nil, err
	}
	return startConnect(ctx, fd, v6, raddr)
}

// startConnect issues connect(2) on the non-blocking socket fd (AF_INET6
// if v6), which it owns from then on.
func startConnect(ctx context.Context, fd int, v6 bool, raddr netip.AddrPort) (func() (net.Conn, error), error) {
	var sa unix.Sockaddr
	if a := raddr.Addr(); v6 {
		sa = &unix.SockaddrInet6{Port: int(raddr.Port()), Addr: a.As16(), ZoneId: scopeID(a.Zone())}
	} else {
		sa = &unix.SockaddrInet4{Port: int(raddr.Port()), Addr: a.Unmap().As4()}
	}
	err := unix.Connect(fd, sa)
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	f := os.NewFile(uintptr(fd), "fsstack-connect") // pollable: fd is non-blocking
	return func() (net.Conn, error) {
		defer f.Close() // FileConn dups it
		if err := waitConnected(ctx, f); err != nil {
			return nil, err
		}
		return net.FileConn(f)
	}, nil
}

// waitConnected waits until the connect on f finished, as net.Dialer does:
// writable, then SO_ERROR; a writable socket without a peer is a spurious
// wake-up.
func waitConnected(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		e, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = os.NewSyscallError("getsockopt", err)
		case e != 0:
			cerr = os.NewSyscallError("connect", syscall.Errno(e))
		default:
			if _, err := unix.Getpeername(int(fd)); err != nil {
				return false // still connecting: wait for the next event
			}
		}
		return true
	})
	if werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			return ctx.Err()
		}
		return werr
	}
	return cerr
}
