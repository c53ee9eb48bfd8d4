//go:build fsstack_shimd

// Command shimd serves the shim protocol on a unix socket from the kernel's
// TCP stack (daemon.KernelBackend), so the shim's attached path can be tested
// without AF_XDP: go build -tags fsstack_shimd, then shimd PATH.
//
// It is behind a build tag so that `go build ./...` does not depend on it.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	kmodcompat "github.com/fsstack/fsstack/kmod-compat"
	"github.com/fsstack/fsstack/preload/daemon"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: shimd SOCKET-PATH")
		os.Exit(2)
	}
	path := os.Args[1]
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "shimd:", err)
		os.Exit(1)
	}
	// SHIMD_FASTSOCKET: fastsocket.ko parameters, as `fsstack up --fastsocket`.
	fsock, err := kmodcompat.ParseParams(os.Getenv("SHIMD_FASTSOCKET"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "shimd: SHIMD_FASTSOCKET:", err)
		os.Exit(2)
	}
	// SHIMD_REACH: comma-separated IPv4 prefixes. The backend then owns and
	// reaches only those, as the sharded stack owns only its interface's
	// addresses: a bind to another specific address and a connect elsewhere
	// (127.0.0.1 included) are handed over to the kernel by the shim
	// (docs/SHIM_PROTOCOL.md section 8). Unset: everything is served.
	var backend daemon.Backend = daemon.KernelBackend{}
	if v := os.Getenv("SHIMD_REACH"); v != "" {
		rb := reachBackend{}
		for _, p := range strings.Split(v, ",") {
			pfx, err := netip.ParsePrefix(strings.TrimSpace(p))
			if err != nil {
				fmt.Fprintln(os.Stderr, "shimd: SHIMD_REACH:", err)
				os.Exit(2)
			}
			rb.prefixes = append(rb.prefixes, pfx)
		}
		// SHIMD_ANY: the address a wildcard bind or listen takes, standing
		// for the stack's own address (the kernel backend would otherwise
		// listen on 0.0.0.0, loopback included, which the sharded stack
		// never does).
		if v := os.Getenv("SHIMD_ANY"); v != "" {
			a, err := netip.ParseAddr(v)
			if err != nil {
				fmt.Fprintln(os.Stderr, "shimd: SHIMD_ANY:", err)
				os.Exit(2)
			}
			rb.any = a
		}
		backend = rb
	}
	d, err := daemon.New(daemon.Options{
		Backend:    backend,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Fastsocket: &fsock,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "shimd:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	err = d.Serve(context.Background(), ln)
	fmt.Fprintln(os.Stderr, "shimd:", err)
	os.Exit(1)
}

// reachBackend is the kernel backend restricted to some prefixes
// (SHIMD_REACH): a daemon.Router like the sharded stack's.
type reachBackend struct {
	daemon.KernelBackend
	prefixes []netip.Prefix
	any      netip.Addr // replaces the wildcard of its family in Bind and Listen when valid
}

// replaces reports whether b.any stands for a, a wildcard of its family.
func (b reachBackend) replaces(a netip.Addr) bool {
	return b.any.IsValid() && a.IsUnspecified() && a.Is4() == b.any.Is4()
}

var _ daemon.Router = reachBackend{}

func (b reachBackend) in(a netip.Addr) bool {
	for _, p := range b.prefixes {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

func (b reachBackend) OwnsAddr(a netip.Addr) bool { return b.in(a) }
func (b reachBackend) Reaches(a netip.Addr) bool  { return b.in(a) }

func (b reachBackend) Bind(network string, addr netip.AddrPort, opts daemon.BindOptions) (daemon.BoundSocket, error) {
	if b.replaces(addr.Addr()) {
		addr = netip.AddrPortFrom(b.any, addr.Port())
	}
	return b.KernelBackend.Bind(network, addr, opts)
}

func (b reachBackend) Listen(network, address string) (net.Listener, error) {
	if ap, err := netip.ParseAddrPort(address); err == nil && b.replaces(ap.Addr()) {
		address = netip.AddrPortFrom(b.any, ap.Port()).String()
	}
	return b.KernelBackend.Listen(network, address)
}
