// Package netlab builds throw-away network labs for tests, the embedded lab
// and benchmarks: two network namespaces joined by one multi-queue veth pair.
//
//	ServerNS                               ClientNS
//	+---------------------+                +---------------------+
//	| lo up               |                | lo up               |
//	| ServerIf 198.18.0.1 |<==== veth ====>| ClientIf 198.18.0.2 |
//	|          fd00:f5::1 |                | fd00:f5::2          |
//	|  (N rx / N tx q)    |                |  (N rx / N tx q)    |
//	+---------------------+                +---------------------+
//
// With Options.Routed a third namespace, a router, stands between them
// (server 198.18.0.1 - router 198.18.0.2 / 198.18.1.1 - client 198.18.1.2),
// for tests of what crosses a router (path-MTU discovery).
//
// Names are unique per run (a random suffix), so concurrent tests and
// concurrent engineers never collide. Close removes everything New created.
//
// Traffic in a lab never leaves it: 198.18.0.0/24 (RFC 2544 benchmark
// range) and fd00:f5::/64 (unique local) are routed only over the veth
// pair. The IPv6 addresses are added without duplicate address detection
// (nodad), so they are usable at once; each end also gets the kernel's
// link-local address, which becomes usable once its DAD ends.
package netlab

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
)

// Addresses of the two veth ends (prefix length PrefixLen).
var (
	ServerAddr = netip.MustParseAddr("198.18.0.1")
	ClientAddr = netip.MustParseAddr("198.18.0.2")
)

// Addresses of a routed lab (Options.Routed): the server keeps ServerAddr,
// the router has RouterServerAddr on the server's subnet and
// RouterClientAddr on the client's, 198.18.1.0/24, where the client has
// RoutedClientAddr.
var (
	RouterServerAddr = netip.MustParseAddr("198.18.0.2")
	RouterClientAddr = netip.MustParseAddr("198.18.1.1")
	RoutedClientAddr = netip.MustParseAddr("198.18.1.2")
)

// PrefixLen is the prefix length of the lab's subnet.
const PrefixLen = 24

// IPv6 addresses of the two veth ends of a two-namespace lab (prefix
// length PrefixLen6). A routed lab has none.
var (
	ServerAddr6 = netip.MustParseAddr("fd00:f5::1")
	ClientAddr6 = netip.MustParseAddr("fd00:f5::2")
)

// PrefixLen6 is the prefix length of the lab's IPv6 subnet.
const PrefixLen6 = 64

// NetNSDir is where named network namespaces live (as with ip-netns(8)).
const NetNSDir = "/var/run/netns"

// ErrShadowed: a leftover namespace is mounted beneath a later bind mount
// of NetNSDir (made by `ip netns add` while it existed), where no path
// reaches it.
var ErrShadowed = errors.New("mounted beneath a later bind mount of the namespace directory")

// ErrNotSupported is returned on platforms without network namespaces.
var ErrNotSupported = errors.New("netlab: not supported on this platform")

// Options configures a Lab.
type Options struct {
	// Queues is the number of rx and tx queues on each veth end. If 0, 1.
	Queues int
	// Name is a short prefix for namespace and interface names (letters,
	// digits, '_'); a unique suffix is always added. Only its first 4
	// characters are used in interface names (IFNAMSIZ is 16). If empty,
	// "lab".
	Name string
	// ChecksumOffload keeps tx checksum offload (and with it TSO/GSO) on
	// the veth ends. If false, New turns it off on both ends, so every
	// frame carries a complete TCP/UDP checksum as on a physical wire.
	// With offload on, a kernel sender leaves only the pseudo-header sum
	// in the frame (CHECKSUM_PARTIAL); the receiving kernel knows that,
	// but an AF_XDP reader sees raw bytes and would drop them as corrupt.
	ChecksumOffload bool
	// MTU of both veth ends. If 0, the kernel's default (1500). Native
	// XDP on veth refuses MTUs above about 3500 (one page per frame).
	MTU int
	// Routed puts a third namespace, RouterNS, between the two: the
	// server's veth pair leads to the router (RouterServerIf,
	// RouterServerAddr), a second pair joins the router (RouterClientIf,
	// RouterClientAddr) and the client (ClientIf, RoutedClientAddr), and
	// each end routes the other's subnet through the router, which
	// forwards. Like any Linux router it answers a packet with DF set
	// that is too big for the outgoing link with an ICMP "fragmentation
	// needed" error (not rate-limited in the lab).
	Routed bool
	// RouterClientMTU, with Routed, is the MTU of RouterClientIf (the
	// router's side only: the client keeps MTU and advertises its MSS), so
	// the path from server to client is narrower than either end's link.
	// If 0, MTU.
	RouterClientMTU int
}

// Lab is a pair of network namespaces joined by a veth pair. The fields are
// read-only after New.
type Lab struct {
	ServerNS, ClientNS     string // netns names (under NetNSDir)
	ServerIf, ClientIf     string // veth ends; ServerIf lives in ServerNS, ClientIf in ClientNS
	ServerAddr, ClientAddr netip.Addr
	// ServerAddr6 and ClientAddr6 are the ends' IPv6 addresses; invalid
	// in a routed lab.
	ServerAddr6, ClientAddr6 netip.Addr
	ServerMAC, ClientMAC     net.HardwareAddr
	ServerIndex              int // ifindex of ServerIf inside ServerNS
	ClientIndex              int // ifindex of ClientIf inside ClientNS
	Queues                   int // rx and tx queues on each end

	// With Options.Routed: the router's namespace and its two ends.
	RouterNS                           string
	RouterServerIf, RouterClientIf     string
	RouterServerAddr, RouterClientAddr netip.Addr

	checksumOffload bool
	mtu             int
	routerClientMTU int
	closer          closer
}

// NSPath returns the path of the named network namespace ns.
func NSPath(ns string) string {
	if filepath.IsAbs(ns) {
		return ns
	}
	return filepath.Join(NetNSDir, ns)
}

// Cmd returns a command that runs name with args inside the network
// namespace ns (via "ip netns exec"). ns is usually l.ServerNS or l.ClientNS.
func (l *Lab) Cmd(ns string, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}
