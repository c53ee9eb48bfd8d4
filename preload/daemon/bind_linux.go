package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

var _ Binder = KernelBackend{}

// Bind reserves addr with a kernel socket (socket, SO_REUSEADDR /
// SO_REUSEPORT, bind), so the kernel's rules for address conflicts apply.
func (KernelBackend) Bind(network string, addr netip.AddrPort, opts BindOptions) (BoundSocket, error) {
	if network != "tcp4" || !addr.Addr().Is4() {
		return nil, fmt.Errorf("bind %s %v: %w", network, addr, syscall.EAFNOSUPPORT)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bind %v: socket: %w", addr, err)
	}
	set := func(opt int, on bool) error {
		if !on {
			return nil
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1)
	}
	if err := set(unix.SO_REUSEADDR, opts.ReuseAddr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %v: SO_REUSEADDR: %w", addr, err)
	}
	if err := set(unix.SO_REUSEPORT, opts.ReusePort); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %v: SO_REUSEPORT: %w", addr, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %v: %w", addr, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %v: getsockname: %w", addr, err)
	}
	in4 := sa.(*unix.SockaddrInet4)
	return &kernelBound{fd: fd, addr: netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)), opts: opts}, nil
}

type kernelBound struct {
	mu   sync.Mutex
	fd   int // -1 once consumed or closed
	addr netip.AddrPort
	opts BindOptions
}

func (b *kernelBound) Addr() netip.AddrPort { return b.addr }

func (b *kernelBound) take() (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fd := b.fd
	b.fd = -1
	if fd < 0 {
		return -1, net.ErrClosed
	}
	return fd, nil
}

// Listen listens on the reserved socket with the kernel's backlog.
func (b *kernelBound) Listen(backlog int) (net.Listener, error) {
	fd, err := b.take()
	if err != nil {
		return nil, err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on %v: %w", b.addr, err)
	}
	f := os.NewFile(uintptr(fd), "fsstack-listener")
	defer f.Close() // FileListener dups it
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen on %v: %w", b.addr, err)
	}
	return ln, nil
}

// DialContext connects from the reserved address. The reservation is
// released just before the dial binds the same address again.
func (b *kernelBound) DialContext(ctx context.Context, raddr netip.AddrPort) (net.Conn, error) {
	fd, err := b.take()
	if err != nil {
		return nil, err
	}
	unix.Close(fd)
	d := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(b.addr),
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				if serr == nil && b.opts.ReusePort {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
				}
			})
			return serr
		},
	}
	return d.DialContext(ctx, "tcp4", raddr.String())
}

func (b *kernelBound) Close() error {
	fd, err := b.take()
	if err != nil {
		return nil
	}
	return unix.Close(fd)
}
