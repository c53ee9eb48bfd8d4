package daemon

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/fsstack/fsstack/stack"
)

// stackBinder is the Binder of the sharded stack: *stack.Stack reserves
// addresses with its own types (stack.BindOptions, *stack.Bound, which is
// a BoundSocket), so the daemon adapts it here rather than the stack
// importing the daemon's.
type stackBinder struct{ st *stack.Stack }

var _ BoundSocket = (*stack.Bound)(nil)

func (b stackBinder) Bind(network string, addr netip.AddrPort, opts BindOptions) (BoundSocket, error) {
	switch {
	case network == "tcp4" && addr.Addr().Is4():
	case (network == "tcp" || network == "tcp6") && addr.Addr().Is6():
		// a v4-mapped address binds its IPv4 address (Stack.Bind)
	default:
		return nil, fmt.Errorf("bind %s %v: %w", network, addr, syscall.EAFNOSUPPORT)
	}
	bd, err := b.st.Bind(addr, stack.BindOptions{ReuseAddr: opts.ReuseAddr, ReusePort: opts.ReusePort,
		Owner: opts.Owner, Unprivileged: opts.Unprivileged, V6Only: opts.V6Only || network == "tcp6"})
	if err != nil {
		return nil, err
	}
	return bd, nil
}

// binderOf returns the backend's Binder, if it has one.
func binderOf(b Backend) (Binder, bool) {
	switch b := b.(type) {
	case Binder:
		return b, true
	case *stack.Stack:
		return stackBinder{b}, true
	}
	return nil, false
}
