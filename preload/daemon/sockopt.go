package daemon

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
)

type optKey struct{ level, name int32 }

// Linux values missing from package syscall.
const (
	tcpDeferAccept = 9 // TCP_DEFER_ACCEPT
	soDomain       = 39
	soReusePort    = 0xf
	soProtocol     = 38
	ipv6V6Only     = 26 // IPV6_V6ONLY
)

// v6onlyKey is IPV6_V6ONLY, served for AF_INET6 sockets only: the shim
// sets it at socket() when net.ipv6.bindv6only makes it 1 by default.
var v6onlyKey = optKey{syscall.IPPROTO_IPV6, ipv6V6Only}

// intOpts are the int-valued options the daemon keeps, with the value a
// fresh kernel socket reports.
var intOpts = map[optKey]int32{
	{syscall.SOL_SOCKET, syscall.SO_REUSEADDR}:   0,
	{syscall.SOL_SOCKET, soReusePort}:            0,
	{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE}:   0,
	{syscall.SOL_SOCKET, syscall.SO_RCVBUF}:      131072,
	{syscall.SOL_SOCKET, syscall.SO_SNDBUF}:      16384,
	{syscall.IPPROTO_TCP, syscall.TCP_NODELAY}:   0,
	{syscall.IPPROTO_TCP, tcpDeferAccept}:        0,
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE}:  7200,
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL}: 75,
	{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT}:   9,
}

var lingerKey = optKey{syscall.SOL_SOCKET, syscall.SO_LINGER}

func (s *socket) opSetsockopt(level, name, optlen int32, data []byte) int32 {
	if optlen < 0 || optlen > abi.OptMax {
		return neg(syscall.EINVAL)
	}
	k := optKey{level, name}
	val := data[:optlen]
	s.mu.Lock()
	defer s.mu.Unlock()
	if k == lingerKey {
		if optlen < 8 {
			return neg(syscall.EINVAL)
		}
		s.setOptLocked(k, append([]byte(nil), val[:8]...))
		on, secs := int32(binary.LittleEndian.Uint32(val[0:4])), int32(binary.LittleEndian.Uint32(val[4:8]))
		s.linger0 = on != 0 && secs == 0
		return 0
	}
	if k == v6onlyKey {
		// as do_ipv6_setsockopt: an int, before the socket has a port
		switch {
		case s.family != syscall.AF_INET6:
			return neg(syscall.ENOPROTOOPT)
		case optlen < 4 || s.isBound || s.state != abi.StOpen:
			return neg(syscall.EINVAL)
		}
		v := min(binary.LittleEndian.Uint32(val[0:4]), 1)
		s.setOptLocked(k, binary.LittleEndian.AppendUint32(nil, v))
		return 0
	}
	if _, ok := intOpts[k]; !ok {
		return neg(syscall.ENOPROTOOPT)
	}
	if optlen < 4 {
		return neg(syscall.EINVAL)
	}
	v := int32(binary.LittleEndian.Uint32(val[0:4]))
	switch k {
	case optKey{syscall.SOL_SOCKET, syscall.SO_RCVBUF}:
		// As the kernel: unsigned, capped at net.core.rmem_max, doubled,
		// with a minimum.
		v = max(int32(min(uint32(v), sysctlInt("rmem_max"))*2), 2304)
	case optKey{syscall.SOL_SOCKET, syscall.SO_SNDBUF}:
		v = max(int32(min(uint32(v), sysctlInt("wmem_max"))*2), 4608)
	case optKey{syscall.IPPROTO_TCP, tcpDeferAccept}:
		// The kernel keeps SYN-ACK retransmits, so seconds round up.
		v = retransToSecs(secsToRetrans(v))
	case optKey{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE}, optKey{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL}:
		if v < 1 || v > 32767 { // MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL
			return neg(syscall.EINVAL)
		}
	case optKey{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT}:
		if v < 1 || v > 127 { // MAX_TCP_KEEPCNT
			return neg(syscall.EINVAL)
		}
	}
	s.setOptLocked(k, binary.LittleEndian.AppendUint32(nil, uint32(v)))
	s.applyConnOptsLocked()
	s.applyListenerOptsLocked()
	return 0
}

// applyListenerOptsLocked passes TCP_DEFER_ACCEPT to a listener that
// exposes its fd (the kernel's), so connections become acceptable only
// once data arrived, as the application asked. Other backends ignore it.
func (s *socket) applyListenerOptsLocked() {
	v, ok := s.opts[optKey{syscall.IPPROTO_TCP, tcpDeferAccept}]
	if !ok || s.ln == nil {
		return
	}
	secs := int(binary.LittleEndian.Uint32(v))
	if da, ok := s.ln.(deferAccepter); ok {
		if err := da.SetDeferAccept(time.Duration(secs) * time.Second); err != nil {
			s.d.log.Debug("shim listener: TCP_DEFER_ACCEPT not applied", "err", err)
		}
		return
	}
	sc, ok := s.ln.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if err := syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpDeferAccept, secs); err != nil {
			s.d.log.Debug("shim listener: TCP_DEFER_ACCEPT not applied", "err", err)
		}
	})
}

// applyConnOptsLocked passes the options a backend conn understands on.
func (s *socket) applyConnOptsLocked() {
	if s.conn == nil {
		return
	}
	if v, ok := s.opts[optKey{syscall.IPPROTO_TCP, syscall.TCP_NODELAY}]; ok {
		if nd, ok := s.conn.(noDelayer); ok {
			nd.SetNoDelay(binary.LittleEndian.Uint32(v) != 0)
		}
	}
	if v, ok := s.opts[optKey{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE}]; ok {
		if ka, ok := s.conn.(keepAliver); ok {
			ka.SetKeepAlive(binary.LittleEndian.Uint32(v) != 0)
		}
	}
}

func (s *socket) opGetsockopt(level, name, capacity int32, out []byte) (int32, int32) {
	if capacity < 0 {
		return neg(syscall.EINVAL), 0
	}
	k := optKey{level, name}
	s.mu.Lock()
	defer s.mu.Unlock()
	var val []byte
	putInt := func(v int32) { val = binary.LittleEndian.AppendUint32(nil, uint32(v)) }
	switch {
	case k == optKey{syscall.SOL_SOCKET, syscall.SO_ERROR}:
		putInt(int32(s.soError))
		if s.soError != 0 {
			s.soError = 0
			s.events &^= abi.EvErr
			s.publishQuietLocked()
		}
	case k == optKey{syscall.SOL_SOCKET, syscall.SO_TYPE}:
		putInt(syscall.SOCK_STREAM)
	case k == optKey{syscall.SOL_SOCKET, soDomain}:
		putInt(s.family)
	case k == v6onlyKey:
		if s.family != syscall.AF_INET6 {
			return neg(syscall.EOPNOTSUPP), 0 // ip_getsockopt of another level
		}
		putInt(s.intOptLocked(k))
	case k == optKey{syscall.SOL_SOCKET, soProtocol}:
		putInt(syscall.IPPROTO_TCP)
	case k == optKey{syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN}:
		putInt(map[bool]int32{false: 0, true: 1}[s.state == abi.StListening])
	case k == lingerKey:
		val = make([]byte, 8)
		copy(val, s.opts[k])
	default:
		def, ok := intOpts[k]
		if !ok {
			return neg(syscall.ENOPROTOOPT), 0
		}
		if v, ok := s.opts[k]; ok {
			val = v
		} else {
			putInt(def)
		}
	}
	n := min(int(capacity), len(val), len(out))
	copy(out, val[:n])
	return 0, int32(n)
}

// intOptLocked returns an int option's value (its default if unset).
func (s *socket) intOptLocked(k optKey) int32 {
	if v, ok := s.opts[k]; ok && len(v) >= 4 {
		return int32(binary.LittleEndian.Uint32(v))
	}
	return intOpts[k]
}

// secsToRetrans and retransToSecs are Linux's conversions for
// TCP_DEFER_ACCEPT (initial timeout 1 s, doubling, capped at 120 s).
func secsToRetrans(secs int32) int32 {
	if secs <= 0 {
		return 0
	}
	timeout, period, res := int32(1), int32(1), int32(1)
	for secs > period && res < 255 {
		res++
		timeout = min(timeout<<1, 120)
		period += timeout
	}
	return res
}

func retransToSecs(retrans int32) int32 {
	if retrans <= 0 {
		return 0
	}
	timeout, period := int32(1), int32(1)
	for retrans--; retrans > 0; retrans-- {
		timeout = min(timeout<<1, 120)
		period += timeout
	}
	return period
}

var sysctlCache sync.Map // name -> uint32

// sysctlInt reads /proc/sys/net/core/NAME once (212992, the kernel's
// default, if it cannot).
func sysctlInt(name string) uint32 {
	if v, ok := sysctlCache.Load(name); ok {
		return v.(uint32)
	}
	v := uint32(212992)
	if b, err := os.ReadFile("/proc/sys/net/core/" + name); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 31); err == nil {
			v = uint32(n)
		}
	}
	sysctlCache.Store(name, v)
	return v
}
