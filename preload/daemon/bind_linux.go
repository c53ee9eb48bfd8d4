package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

var _ Binder = KernelBackend{}

// Bind reserves addr with a kernel socket (socket, SO_REUSEADDR /
// SO_REUSEPORT, bind), so the kernel's rules for address conflicts apply:
// the socket is created with opts.Owner as its uid, so that SO_REUSEPORT
// groups are per owner as the kernel makes them, and a port below the
// namespace's ip_unprivileged_port_start fails with EACCES when
// opts.Unprivileged (the daemon's own socket would pass the kernel's check).
func (KernelBackend) Bind(network string, addr netip.AddrPort, opts BindOptions) (BoundSocket, error) {
	domain := unix.AF_INET
	switch {
	case network == "tcp4" && addr.Addr().Is4():
	case (network == "tcp" || network == "tcp6") && addr.Addr().Is6():
		domain = unix.AF_INET6
	default:
		return nil, fmt.Errorf("bind %s %v: %w", network, addr, syscall.EAFNOSUPPORT)
	}
	if opts.Unprivileged && addr.Port() != 0 {
		if err := checkUnprivilegedPort(addr); err != nil {
			return nil, err
		}
	}
	fd, err := socketOwnedBy(domain, opts.Owner, opts.ReusePort)
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
	if domain == unix.AF_INET6 {
		// explicitly, whatever net.ipv6.bindv6only says
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, map[bool]int{false: 0, true: 1}[opts.V6Only]); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("bind %v: IPV6_V6ONLY: %w", addr, err)
		}
	}
	if err := unix.Bind(fd, sockaddrOf(addr)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %v: %w", addr, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %v: getsockname: %w", addr, err)
	}
	var bound netip.AddrPort
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		bound = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		bound = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).WithZone(addr.Addr().Zone()), uint16(sa.Port))
	}
	return &kernelBound{fd: fd, addr: bound, opts: opts}, nil
}

// sockaddrOf is addr as a kernel sockaddr of its family (16 bytes:
// AF_INET6, a numeric zone as the scope id).
func sockaddrOf(addr netip.AddrPort) unix.Sockaddr {
	a := addr.Addr()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(addr.Port()), Addr: a.As16(), ZoneId: scopeID(a.Zone())}
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

// Listen listens on the reserved socket with the kernel's backlog. A
// listen the kernel refuses (EADDRINUSE) leaves the reservation as it was.
func (b *kernelBound) Listen(backlog int) (net.Listener, error) {
	b.mu.Lock()
	if b.fd < 0 {
		b.mu.Unlock()
		return nil, net.ErrClosed
	}
	if err := unix.Listen(b.fd, backlog); err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("listen on %v: %w", b.addr, err)
	}
	b.mu.Unlock()
	fd, err := b.take()
	if err != nil {
		return nil, err
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
//
// BUG(issue 9): the dialing socket is the daemon's (uid 0), not owned by
// BindOptions.Owner, so connecting from a port shared with SO_REUSEPORT by
// another uid's sockets fails with EADDRINUSE.
func (b *kernelBound) DialContext(ctx context.Context, raddr netip.AddrPort) (net.Conn, error) {
	fd, err := b.take()
	if err != nil {
		return nil, err
	}
	unix.Close(fd)
	network, laddr := "tcp4", b.addr
	if raddr.Addr().Is6() {
		network = "tcp6"
	} else if laddr.Addr().Is6() {
		// an AF_INET6 socket connecting to an IPv4 peer: the bound
		// address as IPv4 (the wildcard [::] is 0.0.0.0)
		a := laddr.Addr().Unmap()
		if a.IsUnspecified() {
			a = netip.IPv4Unspecified()
		}
		laddr = netip.AddrPortFrom(a, laddr.Port())
	}
	d := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(laddr),
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
	return d.DialContext(ctx, network, raddr.String())
}

func (b *kernelBound) Close() error {
	fd, err := b.take()
	if err != nil {
		return nil
	}
	return unix.Close(fd)
}

const unprivPortStartPath = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

// checkUnprivilegedPort fails with EACCES if addr's port is below the
// daemon namespace's ip_unprivileged_port_start, after EADDRNOTAVAIL for an
// address that is not local (the kernel checks the address first for
// IPv4; for IPv6, inet6_bind checks the port first).
func checkUnprivilegedPort(addr netip.AddrPort) error {
	b, err := os.ReadFile(unprivPortStartPath)
	if err != nil {
		return fmt.Errorf("bind %v: read %s: %w", addr, unprivPortStartPath, err)
	}
	start, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("bind %v: parse %s: %w", addr, unprivPortStartPath, err)
	}
	if int(addr.Port()) >= start {
		return nil
	}
	if addr.Addr().Is6() {
		return fmt.Errorf("bind %v: port %d is below ip_unprivileged_port_start %d and the caller lacks CAP_NET_BIND_SERVICE: %w",
			addr, addr.Port(), start, syscall.EACCES)
	}
	probe, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind %v: socket: %w", addr, err)
	}
	defer unix.Close(probe)
	if err := unix.Bind(probe, &unix.SockaddrInet4{Addr: addr.Addr().As4()}); errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("bind %v: %w", addr, err)
	}
	return fmt.Errorf("bind %v: port %d is below ip_unprivileged_port_start %d and the caller lacks CAP_NET_BIND_SERVICE: %w",
		addr, addr.Port(), start, syscall.EACCES)
}

// socketOwnedBy creates a TCP socket whose uid is owner: the kernel takes
// a socket's uid from the creating thread's fsuid, and compares it between
// SO_REUSEPORT sockets. Only a reuseport socket needs it; others are the
// daemon's own.
func socketOwnedBy(domain int, owner uint32, reusePort bool) (int, error) {
	const flags = unix.SOCK_STREAM | unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC
	if !reusePort || int(owner) == os.Geteuid() {
		return unix.Socket(domain, flags, 0)
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// setfsuid changes only this thread; it is restored before the
		// thread is unlocked, or the thread ends with this goroutine.
		runtime.LockOSThread()
		prev, _ := unix.SetfsuidRetUid(int(owner))
		if cur, _ := unix.SetfsuidRetUid(-1); cur != int(owner) {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("create a socket owned by uid %d (setfsuid): the daemon needs CAP_SETUID to serve SO_REUSEPORT for other users: %w", owner, syscall.EPERM)}
			return
		}
		fd, err := unix.Socket(domain, flags, 0)
		unix.SetfsuidRetUid(prev)
		if cur, _ := unix.SetfsuidRetUid(-1); cur == prev {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}
