// Package capture records the frames fsstack's shards receive and send:
// a small filter language (a subset of tcpdump's), pcap output through
// gopacket's pcapgo, and a one-line summary of a frame.
//
// The frames come from stack.Stack.Capture (embedded) or from the
// daemon's "capture" op (fsstack capture); this package only reads them.
package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// FilterSyntax names what ParseFilter accepts, for help and errors.
const FilterSyntax = `tcp, [src|dst] host ADDR, [tcp] [src|dst] port N, joined by and (&&), or (||), not (!) and parentheses`

// ErrFilter is wrapped by every error ParseFilter returns.
var ErrFilter = errors.New("bad capture filter")

// Filter is a compiled filter expression. A nil *Filter matches every
// frame. Match is safe for concurrent use.
type Filter struct {
	expr string
	root node
}

// String returns the expression the filter was parsed from.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.expr
}

// Match reports whether an Ethernet frame matches. Frames that are not
// IP (or, for the TCP primitives, not TCP) match no primitive but "not"
// of one. It never panics on a short or malformed frame.
func (f *Filter) Match(frame []byte) bool {
	if f == nil || f.root == nil {
		return true
	}
	h := parseHeaders(frame)
	return f.root.eval(&h)
}

// headers are the fields a filter looks at. Addresses are 16 bytes, IPv4
// ones v4-mapped, so a host primitive compares one way for both families.
type headers struct {
	ip, tcp          bool
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

func parseHeaders(frame []byte) (h headers) {
	const eth = 14
	if len(frame) < eth+20 {
		return h
	}
	ip := frame[eth:]
	var l4 []byte
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case 0x0800:
		ihl := int(ip[0]&0x0f) * 4
		if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
			return h
		}
		h.ip = true
		h.src = netip.AddrFrom4([4]byte(ip[12:16]))
		h.dst = netip.AddrFrom4([4]byte(ip[16:20]))
		frag := binary.BigEndian.Uint16(ip[6:8])
		if ip[9] != 6 || frag&0x1fff != 0 {
			return h // not TCP, or a later fragment (no TCP header)
		}
		l4 = ip[ihl:]
	case 0x86dd:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return h
		}
		h.ip = true
		h.src = netip.AddrFrom16([16]byte(ip[8:24]))
		h.dst = netip.AddrFrom16([16]byte(ip[24:40]))
		if ip[6] != 6 {
			return h // not TCP right after the fixed header (fsstack carries no other)
		}
		l4 = ip[40:]
	default:
		return h
	}
	h.tcp = true
	if len(l4) >= 4 {
		h.srcPort = binary.BigEndian.Uint16(l4[0:2])
		h.dstPort = binary.BigEndian.Uint16(l4[2:4])
	}
	return h
}

type node interface {
	eval(h *headers) bool
}

type (
	andNode  struct{ a, b node }
	orNode   struct{ a, b node }
	notNode  struct{ a node }
	tcpNode  struct{}
	hostNode struct {
		addr     netip.Addr
		src, dst bool
	}
	portNode struct {
		port     uint16
		src, dst bool
	}
)

func (n andNode) eval(h *headers) bool { return n.a.eval(h) && n.b.eval(h) }
func (n orNode) eval(h *headers) bool  { return n.a.eval(h) || n.b.eval(h) }
func (n notNode) eval(h *headers) bool { return !n.a.eval(h) }
func (tcpNode) eval(h *headers) bool   { return h.tcp }
func (n hostNode) eval(h *headers) bool {
	return h.ip && (n.src && h.src == n.addr || n.dst && h.dst == n.addr)
}
func (n portNode) eval(h *headers) bool {
	return h.tcp && (n.src && h.srcPort == n.port || n.dst && h.dstPort == n.port)
}

// ParseFilter compiles a filter written in a subset of tcpdump's syntax:
//
//	tcp                      TCP segments (all fsstack carries)
//	host A, src host A, dst host A      an IPv4 or IPv6 address, either end or one end
//	port N, src port N, dst port N      a TCP port; "tcp port N" is the same
//	E and E, E && E, E or E, E || E, not E, !E, ( E )
//
// As in tcpdump, not binds tightest and "and" and "or" have equal
// precedence, grouping left to right: "a or b and c" is "(a or b) and
// c". An empty expression matches everything (nil Filter). Host names,
// "net", "udp", "ip6" and the rest of tcpdump's language are refused with
// an error that names what is supported.
func ParseFilter(expr string) (*Filter, error) {
	toks, err := tokenize(expr)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, nil
	}
	p := &parser{toks: toks}
	root, err := p.expr()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		return nil, p.errorf("unexpected %q after a complete expression (join primitives with and, or)", p.toks[p.pos])
	}
	return &Filter{expr: strings.Join(toks, " "), root: root}, nil
}

func tokenize(expr string) ([]string, error) {
	var toks []string
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')':
			toks = append(toks, string(c))
			i++
		case c == '!':
			toks = append(toks, "!")
			i++
		case c == '&' || c == '|':
			if i+1 >= len(expr) || expr[i+1] != c {
				return nil, fmt.Errorf("%w %q: write %c%c (or and, or); supported: %s", ErrFilter, expr, c, c, FilterSyntax)
			}
			toks = append(toks, expr[i:i+2])
			i += 2
		default:
			j := i
			for j < len(expr) && !strings.ContainsRune(" \t\n\r()!&|", rune(expr[j])) {
				j++
			}
			toks = append(toks, expr[i:j])
			i = j
		}
	}
	return toks, nil
}

type parser struct {
	toks []string
	pos  int
}

func (p *parser) errorf(format string, a ...any) error {
	return fmt.Errorf("%w %q: %s; supported: %s", ErrFilter, strings.Join(p.toks, " "), fmt.Sprintf(format, a...), FilterSyntax)
}

func (p *parser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *parser) next() string {
	t := p.peek()
	if p.pos < len(p.toks) {
		p.pos++
	}
	return t
}

// expr := unary { (and|&&|or|||) unary }, left to right, equal precedence.
func (p *parser) expr() (node, error) {
	left, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		op := strings.ToLower(p.peek())
		switch op {
		case "and", "&&", "or", "||":
		default:
			return left, nil
		}
		p.next()
		right, err := p.unary()
		if err != nil {
			return nil, err
		}
		if op == "and" || op == "&&" {
			left = andNode{left, right}
		} else {
			left = orNode{left, right}
		}
	}
}

// unary := (not|!) unary | ( expr ) | primitive
func (p *parser) unary() (node, error) {
	t := strings.ToLower(p.peek())
	switch t {
	case "":
		return nil, p.errorf("expression ends where a primitive was expected")
	case "not", "!":
		p.next()
		a, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notNode{a}, nil
	case "(":
		p.next()
		a, err := p.expr()
		if err != nil {
			return nil, err
		}
		if p.next() != ")" {
			return nil, p.errorf("missing )")
		}
		return a, nil
	}
	return p.primitive()
}

// primitive := tcp [ [src|dst] port N ] | [src|dst] (host A | port N)
func (p *parser) primitive() (node, error) {
	t := strings.ToLower(p.next())
	if t == "tcp" {
		switch strings.ToLower(p.peek()) {
		case "port", "src", "dst", "host":
			// "tcp port 80", "tcp src port 80": tcpdump's protocol qualifier.
			save := p.pos
			n, err := p.primitive()
			if err != nil {
				return nil, err
			}
			if _, ok := n.(portNode); !ok {
				p.pos = save
				return nil, p.errorf("\"tcp\" qualifies only port (tcp [src|dst] port N)")
			}
			return n, nil
		}
		return tcpNode{}, nil
	}
	src, dst := true, true
	switch t {
	case "src":
		dst = false
		t = strings.ToLower(p.next())
	case "dst":
		src = false
		t = strings.ToLower(p.next())
	}
	switch t {
	case "host":
		a := p.next()
		addr, err := netip.ParseAddr(a)
		if err != nil || addr.Zone() != "" {
			if a == "" {
				return nil, p.errorf("host needs an address")
			}
			return nil, p.errorf("host %q is not an IPv4 or IPv6 address (names are not resolved, zones not taken)", a)
		}
		// A v4-mapped address names the IPv4 host, as the frames carry it.
		return hostNode{addr: addr.Unmap(), src: src, dst: dst}, nil
	case "port":
		a := p.next()
		n, err := strconv.ParseUint(a, 10, 16)
		if err != nil {
			if a == "" {
				return nil, p.errorf("port needs a number")
			}
			return nil, p.errorf("port %q is not a number 0-65535 (service names are not looked up)", a)
		}
		return portNode{port: uint16(n), src: src, dst: dst}, nil
	case "":
		return nil, p.errorf("expression ends where a primitive was expected")
	}
	return nil, p.errorf("%q is not supported", t)
}
