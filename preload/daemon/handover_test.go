package daemon_test

import (
	"errors"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// routedBackend is the kernel backend owning and reaching only one prefix,
// as the sharded stack owns only its interface's addresses.
type routedBackend struct {
	daemon.KernelBackend
	own netip.Prefix
}

func (b routedBackend) OwnsAddr(a netip.Addr) bool { return b.own.Contains(a) }
func (b routedBackend) Reaches(a netip.Addr) bool  { return b.own.Contains(a) }

// TestHandover: to a client that said FSS_HELLO_HANDOVER, a bind to an
// address the backend does not own and a connect to a destination it does
// not reach are answered -FSS_HANDOVER_ERRNO, leaving the socket as it was;
// the connect's completion carries the address bind asked for. Clients
// without the flag, and backends without a Router, are served as before.
func TestHandover(t *testing.T) {
	e := startWith(t, routedBackend{own: netip.MustParsePrefix("192.0.2.0/24")})
	c, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck|abi.HelloHandover))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	handover := syscall.Errno(abi.HandoverErrno)

	id, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: id, Data: shimtest.Addr(netip.MustParseAddrPort("127.0.0.1:0"))}); !errors.Is(err, handover) {
		t.Fatalf("bind 127.0.0.1 = %v, want %v", err, handover)
	}
	// the socket is untouched: a bind to the wildcard still works
	bindTo := netip.MustParseAddrPort("0.0.0.0:0")
	if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: id, Data: shimtest.Addr(bindTo)}); err != nil {
		t.Fatalf("bind 0.0.0.0 after a handover answer: %v", err)
	}
	cm, err := c.Call(abi.Req{Op: abi.OpConnect, Sock: id, Data: shimtest.Addr(netip.MustParseAddrPort("127.0.0.1:9"))})
	if !errors.Is(err, handover) {
		t.Fatalf("connect 127.0.0.1 = %v, want %v", err, handover)
	}
	if got := shimtest.DecodeAddr(cm.Data); got != bindTo {
		t.Errorf("connect handover carries %v, want the bind address %v", got, bindTo)
	}
	if st := c.Sock(id).State; st != abi.StOpen {
		t.Errorf("state after a handover answer = %d, want OPEN", st)
	}

	// no flag: served (or refused) by the backend as before
	old, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	id2, err := old.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Call(abi.Req{Op: abi.OpBind, Sock: id2, Data: shimtest.Addr(netip.MustParseAddrPort("127.0.0.1:0"))}); err != nil {
		t.Errorf("bind 127.0.0.1 without FSS_HELLO_HANDOVER: %v", err)
	}

	// a backend without a Router serves everything
	k := startWith(t, daemon.KernelBackend{})
	kc, err := shimtest.Dial(k.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck|abi.HelloHandover))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	id3, err := kc.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Call(abi.Req{Op: abi.OpBind, Sock: id3, Data: shimtest.Addr(netip.MustParseAddrPort("127.0.0.1:0"))}); err != nil {
		t.Errorf("bind 127.0.0.1 on the kernel backend: %v", err)
	}
}

// TestListenLoopback: LISTEN on the wildcard (bound to it, or unbound)
// carries FSS_CMPL_LISTEN_LOOPBACK when the backend's Router does not reach
// 127.0.0.1 and the client said FSS_HELLO_HANDOVER; never otherwise.
func TestListenLoopback(t *testing.T) {
	listen := func(t *testing.T, path string, flags uint32, bind string) uint32 {
		t.Helper()
		c, err := shimtest.Dial(path, shimtest.Hello(int32(os.Getpid()), flags))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id, err := c.Socket()
		if err != nil {
			t.Fatal(err)
		}
		if bind != "" {
			if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: id, Data: shimtest.Addr(netip.MustParseAddrPort(bind))}); err != nil {
				t.Fatalf("bind %s: %v", bind, err)
			}
		}
		cm, err := c.Call(abi.Req{Op: abi.OpListen, Sock: id, Arg0: 4})
		if err != nil {
			t.Fatalf("listen (bind %q): %v", bind, err)
		}
		return cm.Flags & abi.CmplListenLoopback
	}
	ho := uint32(abi.HelloWakeAck | abi.HelloHandover)
	noLo := startWith(t, routedBackend{own: netip.MustParsePrefix("192.0.2.0/24")})
	if listen(t, noLo.path, ho, "0.0.0.0:0") == 0 {
		t.Errorf("bound to 0.0.0.0, loopback unreached: no FSS_CMPL_LISTEN_LOOPBACK")
	}
	if listen(t, noLo.path, ho, "") == 0 {
		t.Errorf("unbound, loopback unreached: no FSS_CMPL_LISTEN_LOOPBACK")
	}
	if listen(t, noLo.path, abi.HelloWakeAck, "0.0.0.0:0") != 0 {
		t.Errorf("a client without FSS_HELLO_HANDOVER got FSS_CMPL_LISTEN_LOOPBACK")
	}
	lo := startWith(t, routedBackend{own: netip.MustParsePrefix("127.0.0.0/8")})
	if listen(t, lo.path, ho, "0.0.0.0:0") != 0 || listen(t, lo.path, ho, "127.0.0.1:0") != 0 {
		t.Errorf("a backend reaching loopback answered FSS_CMPL_LISTEN_LOOPBACK")
	}
	k := startWith(t, daemon.KernelBackend{})
	if listen(t, k.path, ho, "0.0.0.0:0") != 0 {
		t.Errorf("a backend without a Router answered FSS_CMPL_LISTEN_LOOPBACK")
	}
}
