package daemon

import (
	"context"
	"net"
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
)
