package daemon

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// Backend is the TCP stack the daemon serves sockets from. *stack.Stack
// satisfies it; KernelBackend serves from the kernel's own stack, so the
// protocol can be tested (and used) without AF_XDP.
type Backend interface {
	Listen(network, address string) (net.Listener, error)
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// KernelBackend is a Backend on the net package (the kernel's TCP stack).
type KernelBackend struct{}

// Listen listens with net.Listen.
func (KernelBackend) Listen(network, address string) (net.Listener, error) {
	return net.Listen(network, address)
}

// DialContext dials with a zero net.Dialer.
func (KernelBackend) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// Optional capabilities of a backend's conns, used when present.
type (
	closeWriter interface{ CloseWrite() error }
	lingerer    interface{ SetLinger(sec int) error }
	noDelayer   interface{ SetNoDelay(bool) error }
	keepAliver  interface{ SetKeepAlive(bool) error }
	// resetWaiter blocks until the connection fails (a reset after the
	// peer's FIN, which reads no longer report) and returns the error
	// with the kernel's errno, or nil once stop is closed (stack.Conn).
	// deferAccepter is a listener that takes TCP_DEFER_ACCEPT
	// (stack.Listener).
	deferAccepter interface{ SetDeferAccept(time.Duration) error }
	// tryWriter writes what the conn takes now without waiting, n <
	// len(b) with a nil error when its send buffer is full
	// (stack.Conn): the client loop sends short answers with it
	// (socket.sendInlineLocked).
	tryWriter interface{ TryWrite(b []byte) (int, error) }
	// txHolder is a backend that can defer its transmit kicks over a
	// run of writes (stack.Stack.HoldTx): the client loop holds while
	// it answers the slots of one pass of kicks.
	txHolder    interface{ HoldTx() (release func()) }
	resetWaiter interface {
		WaitReset(stop <-chan struct{}) error
	}
)

// Binder is implemented by backends that can reserve a local address
// before listen or connect, as bind(2) does: the port is taken (or, for
// port 0, chosen) at once, and a second bind to it fails with EADDRINUSE
// unless the options allow sharing. KernelBackend implements it. With a
// backend that does not, BIND only records the address; LISTEN takes it.
//
// network is "tcp4" for an AF_INET socket, "tcp" (dual stack) or "tcp6"
// (IPV6_V6ONLY) for an AF_INET6 one, whose addr is 16 bytes (IPv4 ones
// v4-mapped).
type Binder interface {
	Bind(network string, addr netip.AddrPort, opts BindOptions) (BoundSocket, error)
}

// BindOptions are the socket options and credentials that matter at bind
// time.
type BindOptions struct {
	ReuseAddr, ReusePort bool
	// Owner is the effective uid of the process that created the socket:
	// SO_REUSEPORT shares a port only between sockets of one owner, as
	// the kernel's reuseport groups are per uid. 0 (root) if not set.
	Owner uint32
	// Unprivileged says the caller lacks CAP_NET_BIND_SERVICE: a port
	// below the backend namespace's ip_unprivileged_port_start fails with
	// EACCES. The zero value binds any port.
	Unprivileged bool
	// V6Only is IPV6_V6ONLY of an AF_INET6 socket (network "tcp" or
	// "tcp6"): the wildcard [::] then takes the port for IPv6 only.
	V6Only bool
}

// BoundSocket is a reserved address. Listen and DialContext consume it;
// Close releases it otherwise.
type BoundSocket interface {
	Addr() netip.AddrPort
	Listen(backlog int) (net.Listener, error)
	DialContext(ctx context.Context, raddr netip.AddrPort) (net.Conn, error)
	Close() error
}

// Router is implemented by backends that do not serve every address: the
// sharded stack owns only its interface's addresses and reaches only what
// the kernel routes out of that interface (no loopback). To a shim that
// said FSS_HELLO_HANDOVER, the daemon answers a bind to an address the
// backend does not own, or a connect to a destination it does not reach,
// with -FSS_HANDOVER_ERRNO, and the shim makes that socket a kernel socket
// (docs/SHIM_PROTOCOL.md section 8). A backend without a Router (the
// kernel backend) serves everything.
type Router interface {
	OwnsAddr(a netip.Addr) bool
	Reaches(dst netip.Addr) bool
}

// routerOf returns the backend's Router, if it has one.
func routerOf(b Backend) (Router, bool) {
	r, ok := b.(Router)
	return r, ok
}
