package stack

import (
	"net/netip"
	"os/exec"
	"testing"
)

// TestReaches: the stack owns its interface's address and reaches it and
// the peer on the interface's subnet; it neither owns nor reaches loopback
// (the shim hands those sockets to the kernel), and a destination the
// kernel routes out of another interface (lo, for another local address
// added to lo) is not reached either.
func TestReaches(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	lo := netip.MustParseAddr("127.0.0.1")
	// another local address, on lo: the kernel delivers it locally
	other := netip.MustParseAddr("10.77.0.1")
	if out, err := exec.Command("ip", "-n", lab.ServerNS, "addr", "add", other.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	for _, c := range []struct {
		what          string
		a             netip.Addr
		owns, reaches bool
	}{
		{"own address", lab.ServerAddr, true, true},
		{"peer", lab.ClientAddr, false, true},
		{"loopback", lo, false, false},
		{"another loopback address", netip.MustParseAddr("127.0.0.53"), false, false},
		{"unspecified", netip.IPv4Unspecified(), false, false},
		{"another interface's address", other, false, false},
	} {
		if got := s.OwnsAddr(c.a); got != c.owns {
			t.Errorf("OwnsAddr(%v) (%s) = %v, want %v", c.a, c.what, got, c.owns)
		}
		for range 2 { // the second answer comes from the cache
			if got := s.Reaches(c.a); got != c.reaches {
				t.Errorf("Reaches(%v) (%s) = %v, want %v", c.a, c.what, got, c.reaches)
			}
		}
	}
}
