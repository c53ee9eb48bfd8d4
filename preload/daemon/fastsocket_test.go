package daemon_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	kmodcompat "github.com/fsstack/fsstack/kmod-compat"
	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// serveOpts runs a daemon with opts on a unix socket and returns the path.
func serveOpts(t *testing.T, opts daemon.Options) (string, *daemon.Daemon) {
	t.Helper()
	d, err := daemon.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "fsstack.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		d.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-served
		d.Close()
	})
	return path, d
}

// TestFastsocketPublished: every client's segment says which
// enable_listen_spawn the daemon runs with (the shim's /dev/fastsocket
// SPAWN commands follow it); no parameters means the module's default, 2.
func TestFastsocketPublished(t *testing.T) {
	for _, tt := range []struct {
		params *kmodcompat.Params
		want   uint32
	}{
		{nil, abi.FsockSet | 2},
		{&kmodcompat.Params{EnableListenSpawn: 0}, abi.FsockSet | 0},
		{&kmodcompat.Params{EnableListenSpawn: 1}, abi.FsockSet | 1},
	} {
		path, _ := serveOpts(t, daemon.Options{Backend: daemon.KernelBackend{}, Fastsocket: tt.params})
		c, err := shimtest.Dial(path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Hdr.Fastsocket; got != tt.want {
			t.Errorf("params %+v: seg_hdr.fastsocket = %#x, want %#x", tt.params, got, tt.want)
		}
		c.Close()
	}
	if _, err := daemon.New(daemon.Options{Backend: daemon.KernelBackend{}, Fastsocket: &kmodcompat.Params{EnableListenSpawn: 3}}); err == nil {
		t.Error("enable_listen_spawn=3 accepted")
	}
}

// TestListenSpawnOff: with enable_listen_spawn=0 there is one shared
// listen table: ACCEPT ignores the caller's CPU and takes connections in
// the order the shards queued them, never counting a steal.
func TestListenSpawnOff(t *testing.T) {
	path, d := serveOpts(t, daemon.Options{Backend: twoShards{}, Fastsocket: &kmodcompat.Params{EnableListenSpawn: 0}})
	c, err := shimtest.Dial(path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ls, err := c.Socket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(abi.Req{Op: abi.OpListen, Sock: ls, Arg0: 16}); err != nil {
		t.Fatal(err)
	}
	cm, _ := c.Call(abi.Req{Op: abi.OpGetsockname, Sock: ls})
	port := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), decodePort(cm.Data))
	for range 6 {
		p, err := net.Dial("tcp4", port.String())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
	}
	if err := c.Wait(func() bool { return c.Sock(ls).Accept_pending == 6 }); err != nil {
		t.Fatalf("6 connections never queued: %v", err)
	}
	for range 6 {
		if _, err := c.Call(abi.Req{Op: abi.OpAccept, Sock: ls, Flags: abi.ReqCPU, Arg0: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if st := d.Stats(); st.AcceptRemote != 0 || st.AcceptLocal != 6 {
		t.Errorf("stats local %d remote %d: a CPU preference was applied with listen spawn off", st.AcceptLocal, st.AcceptRemote)
	}
}
