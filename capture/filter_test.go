package capture

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// frame6 builds an Ethernet + IPv6 + TCP frame (no payload).
func frame6(src, dst string, sport, dport uint16) []byte {
	f := make([]byte, 14+40+20)
	binary.BigEndian.PutUint16(f[12:14], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], 20)
	ip[6], ip[7] = 6, 64
	s16, d16 := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(ip[8:24], s16[:])
	copy(ip[24:40], d16[:])
	tcp := ip[40:]
	binary.BigEndian.PutUint16(tcp[0:2], sport)
	binary.BigEndian.PutUint16(tcp[2:4], dport)
	tcp[12] = 5 << 4
	return f
}

// frame builds an Ethernet + IPv4 + TCP frame (no payload).
func frame(src, dst [4]byte, sport, dport uint16) []byte {
	f := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], 40)
	ip[8] = 64
	ip[9] = 6
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:2], sport)
	binary.BigEndian.PutUint16(tcp[2:4], dport)
	tcp[12] = 5 << 4
	return f
}

var (
	client = [4]byte{198, 18, 0, 2}
	server = [4]byte{198, 18, 0, 1}
	other  = [4]byte{10, 1, 2, 3}
	// A request from the client to the server's port 80, and its answer.
	toServer   = frame(client, server, 40000, 80)
	fromServer = frame(server, client, 80, 40000)
	elsewhere  = frame(other, server, 5000, 6379)
)

func TestFilterMatch(t *testing.T) {
	udp := frame(client, server, 53, 53)
	udp[14+9] = 17
	arp := append([]byte(nil), toServer...)
	binary.BigEndian.PutUint16(arp[12:14], 0x0806)
	cases := []struct {
		expr string
		want map[string]bool // frame name -> match
	}{
		{"", map[string]bool{"to": true, "from": true, "else": true, "udp": true, "arp": true}},
		{"tcp", map[string]bool{"to": true, "from": true, "else": true, "udp": false, "arp": false}},
		{"port 80", map[string]bool{"to": true, "from": true, "else": false, "udp": false}},
		{"tcp port 80", map[string]bool{"to": true, "from": true, "else": false}},
		{"dst port 80", map[string]bool{"to": true, "from": false}},
		{"src port 80", map[string]bool{"to": false, "from": true}},
		{"tcp src port 80", map[string]bool{"to": false, "from": true}},
		{"host 198.18.0.2", map[string]bool{"to": true, "from": true, "else": false, "udp": true, "arp": false}},
		{"src host 198.18.0.2", map[string]bool{"to": true, "from": false}},
		{"dst host 198.18.0.2", map[string]bool{"to": false, "from": true}},
		{"not port 80", map[string]bool{"to": false, "from": false, "else": true, "udp": true, "arp": true}},
		{"! port 80", map[string]bool{"to": false, "else": true}},
		{"port 80 or port 6379", map[string]bool{"to": true, "from": true, "else": true, "udp": false}},
		{"port 80 and src host 198.18.0.1", map[string]bool{"to": false, "from": true, "else": false}},
		{"port 80 && src host 198.18.0.1", map[string]bool{"to": false, "from": true}},
		{"port 6379 || dst port 80", map[string]bool{"to": true, "from": false, "else": true}},
		// Equal precedence, left to right, as tcpdump: (port 6379 or port 80) and src port 80.
		{"port 6379 or port 80 and src port 80", map[string]bool{"to": false, "from": true, "else": false}},
		{"port 6379 or (port 80 and src port 80)", map[string]bool{"to": false, "from": true, "else": true}},
		{"not (host 10.1.2.3 or dst port 80)", map[string]bool{"to": false, "from": true, "else": false}},
		{"not not tcp", map[string]bool{"to": true, "udp": false}},
		{"TCP AND PORT 80", map[string]bool{"to": true, "else": false}},
		{"(((port 80)))", map[string]bool{"to": true, "else": false}},
		// IPv6: the same primitives; a v4-mapped host names the IPv4 one.
		{"tcp", map[string]bool{"to6": true, "from6": true, "icmp6": false}},
		{"port 80", map[string]bool{"to6": true, "from6": true, "icmp6": false}},
		{"dst port 80", map[string]bool{"to6": true, "from6": false}},
		{"host fd00:f5::2", map[string]bool{"to6": true, "from6": true, "icmp6": true, "to": false}},
		{"src host fd00:f5::2", map[string]bool{"to6": true, "from6": false}},
		{"host ::ffff:198.18.0.2", map[string]bool{"to": true, "from": true, "to6": false}},
		{"host 198.18.0.2", map[string]bool{"to6": false}},
	}
	icmp6 := frame6("fd00:f5::2", "fd00:f5::1", 0, 0)
	icmp6[14+6] = 58
	frames := map[string][]byte{"to": toServer, "from": fromServer, "else": elsewhere, "udp": udp, "arp": arp,
		"to6": frame6("fd00:f5::2", "fd00:f5::1", 40000, 80), "from6": frame6("fd00:f5::1", "fd00:f5::2", 80, 40000), "icmp6": icmp6}
	for _, c := range cases {
		f, err := ParseFilter(c.expr)
		if err != nil {
			t.Errorf("ParseFilter(%q): %v", c.expr, err)
			continue
		}
		for name, want := range c.want {
			if got := f.Match(frames[name]); got != want {
				t.Errorf("%q on %s: %v, want %v", c.expr, name, got, want)
			}
		}
	}
}

func TestFilterErrors(t *testing.T) {
	cases := []struct{ expr, says string }{
		{"udp", `"udp" is not supported`},
		{"net 10.0.0.0/8", `"net" is not supported`},
		{"host example.com", "not an IPv4 or IPv6 address"},
		{"host fe80::1%eth0", "not an IPv4 or IPv6 address"},
		{"host", "host needs an address"},
		{"port http", "not a number"},
		{"port 70000", "not a number"},
		{"port", "port needs a number"},
		{"port 80 and", "expression ends"},
		{"(port 80", "missing )"},
		{"port 80)", `unexpected ")"`},
		{"port 80 port 81", `unexpected "port"`},
		{"tcp host 1.2.3.4", "qualifies only port"},
		{"src", "expression ends"},
		{"port 80 & port 81", "write &&"},
		{"not", "expression ends"},
		{"greater 100", `"greater" is not supported`},
	}
	for _, c := range cases {
		f, err := ParseFilter(c.expr)
		if err == nil {
			t.Errorf("ParseFilter(%q) = %v, want an error", c.expr, f)
			continue
		}
		if !errors.Is(err, ErrFilter) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "supported: tcp, [src|dst] host") {
			t.Errorf("ParseFilter(%q): %v; want ErrFilter saying %q and naming the supported syntax", c.expr, err, c.says)
		}
	}
}

func TestFilterString(t *testing.T) {
	f, err := ParseFilter("  tcp  and(port 80||!host 1.2.3.4)")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "tcp and ( port 80 || ! host 1.2.3.4 )" {
		t.Errorf("String() = %q", got)
	}
	var none *Filter
	if none.String() != "" || !none.Match(nil) {
		t.Error("a nil Filter must print empty and match everything")
	}
}

// FuzzFilter: parsing and matching never panic, and a filter and its
// negation never agree on a frame.
func FuzzFilter(f *testing.F) {
	f.Add("port 80 and not (src host 1.2.3.4 or tcp)", toServer)
	f.Add("tcp", []byte{})
	f.Fuzz(func(t *testing.T, expr string, fr []byte) {
		flt, err := ParseFilter(expr)
		if err != nil || flt == nil {
			return
		}
		neg, err := ParseFilter("not (" + flt.String() + ")")
		if err != nil {
			t.Fatalf("negation of %q does not parse: %v", flt, err)
		}
		if flt.Match(fr) == neg.Match(fr) {
			t.Fatalf("%q and its negation agree on %x", flt, fr)
		}
	})
}
