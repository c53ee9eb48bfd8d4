package stack

import (
	"net/netip"
	"testing"
)

// TestPortClaimConflicts: the kernel's sharing rules between two sockets
// on one port (inet_bind_conflict as bind(2) and listen(2) apply it).
func TestPortClaimConflicts(t *testing.T) {
	srv := netip.MustParseAddr("198.18.0.1")
	other := netip.MustParseAddr("198.18.0.2")
	anyAddr := netip.IPv4Unspecified()
	srv6, any6 := netip.MustParseAddr("fd00:f5::1"), netip.IPv6Unspecified()
	var (
		v6only    = BindOptions{V6Only: true}
		plain     = BindOptions{}
		addr      = BindOptions{ReuseAddr: true}
		port      = BindOptions{ReusePort: true}
		portBy1   = BindOptions{ReusePort: true, Owner: 1}
		both      = BindOptions{ReuseAddr: true, ReusePort: true}
		bothBy1   = BindOptions{ReuseAddr: true, ReusePort: true, Owner: 1}
		addrBy1   = BindOptions{ReuseAddr: true, Owner: 1}
		plainBy1  = BindOptions{Owner: 1}
		listening = true
	)
	for _, tc := range []struct {
		name         string
		new          netip.Addr
		newOpts      BindOptions
		old          netip.Addr
		oldOpts      BindOptions
		oldListens   bool
		wantConflict bool
	}{
		{"plain, same address", srv, plain, srv, plain, false, true},
		{"plain, other address", srv, plain, other, plain, listening, false},
		{"wildcard over specific", anyAddr, plain, srv, plain, false, true},
		{"specific under wildcard", srv, plain, anyAddr, plain, false, true},
		{"SO_REUSEADDR both, old bound", srv, addr, srv, addrBy1, false, false},
		{"SO_REUSEADDR both, old listening", srv, addr, srv, addr, listening, true},
		{"SO_REUSEADDR wildcard over specific listener", anyAddr, addr, srv, addr, listening, true},
		{"SO_REUSEADDR on the new only", srv, addr, srv, plain, false, true},
		{"SO_REUSEPORT same owner, listening", srv, port, srv, port, listening, false},
		{"SO_REUSEPORT same owner, wildcard", anyAddr, port, srv, port, listening, false},
		{"SO_REUSEPORT other owner, listening", srv, portBy1, srv, port, listening, true},
		{"SO_REUSEPORT other owner, bound", srv, portBy1, srv, port, false, true},
		{"SO_REUSEPORT other owner, wildcard", anyAddr, portBy1, srv, port, listening, true},
		{"both options, other owner, old bound", srv, bothBy1, srv, both, false, false},
		{"both options, other owner, old listening", srv, bothBy1, srv, both, listening, true},
		{"SO_REUSEPORT on the old only", srv, plainBy1, srv, port, listening, true},
		// IPv6: a dual-stack [::] overlaps IPv4 addresses, an IPv6-only
		// one and a specific IPv6 address do not
		{"dual-stack [::] over 0.0.0.0", any6, plain, anyAddr, plain, false, true},
		{"0.0.0.0 under dual-stack [::]", anyAddr, plain, any6, plain, false, true},
		{"specific IPv4 under dual-stack [::]", srv, plain, any6, plain, false, true},
		{"IPv6-only [::] beside 0.0.0.0", any6, v6only, anyAddr, plain, listening, false},
		{"0.0.0.0 beside IPv6-only [::]", anyAddr, plain, any6, v6only, listening, false},
		{"IPv6-only [::] over dual-stack [::]", any6, v6only, any6, plain, false, true},
		{"specific IPv6 under IPv6-only [::]", srv6, plain, any6, v6only, false, true},
		{"specific IPv6 beside 0.0.0.0", srv6, plain, anyAddr, plain, listening, false},
		{"specific IPv6 beside specific IPv4", srv6, plain, srv, plain, listening, false},
		{"SO_REUSEPORT same owner, dual-stack [::] and 0.0.0.0", any6, port, anyAddr, port, listening, false},
	} {
		c := &portClaim{addr: tc.new, port: 80, opts: tc.newOpts}
		o := &portClaim{addr: tc.old, port: 80, opts: tc.oldOpts, listening: tc.oldListens}
		if got := c.conflicts(o); got != tc.wantConflict {
			t.Errorf("%s: conflict = %v, want %v", tc.name, got, tc.wantConflict)
		}
		o.port = 81
		if c.conflicts(o) {
			t.Errorf("%s: conflict on another port", tc.name)
		}
	}
}
