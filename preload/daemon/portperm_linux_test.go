package daemon_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fsstack/fsstack/internal/netlab"
	"github.com/fsstack/fsstack/internal/testutil"
	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
	"github.com/fsstack/fsstack/stack"
)

// TestBindPermissions: the daemon judges a bind by the credentials of the
// process that asks, as the kernel does. This test binary, re-run as uid
// 65534 (TestBindPermissionsHelper), attaches to a daemon that root's
// client also uses, and must get EACCES for a port below
// ip_unprivileged_port_start and EADDRINUSE beside root's SO_REUSEPORT
// listener, on the wildcard as on the address; its own SO_REUSEPORT group
// and port 0 work. On the kernel backend and on the sharded stack.
func TestBindPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a helper process runs as uid 65534; network namespaces for the stack); run the tests as root")
	}
	bin := helperBinary(t)
	t.Run("kernel", func(t *testing.T) {
		checkBindPermissions(t, bin, startWith(t, daemon.KernelBackend{}), netip.MustParseAddr("127.0.0.1"))
	})
	t.Run("stack", func(t *testing.T) {
		lab, err := netlab.New(netlab.Options{Queues: 2, Name: "shp"})
		if err != nil {
			t.Fatalf("netlab: %v", err)
		}
		t.Cleanup(func() { lab.Close() })
		st, err := stack.New(stack.Config{Interface: lab.ServerIf, Queues: 2, NetNS: lab.ServerNS})
		if err != nil {
			t.Fatalf("stack.New: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		checkBindPermissions(t, bin, startWith(t, st), lab.ServerAddr)
	})
}

func checkBindPermissions(t *testing.T, bin string, e *env, srv netip.Addr) {
	openTreeToAll(t, e.path)
	c := e.attach(t)
	// Root's SO_REUSEPORT listener, joined by a second of root's.
	rp := netip.AddrPortFrom(srv, 0)
	for i := range 2 {
		id, err := c.Socket()
		if err != nil {
			t.Fatal(err)
		}
		setReusePort(t, c, id)
		if rp, err = c.Listen(id, rp, 8); err != nil {
			t.Fatalf("root's SO_REUSEPORT listener %d: %v", i+1, err)
		}
	}
	// A privileged port root can bind (then releases).
	priv := 0
	for p := 700; p < 1024 && priv == 0; p++ {
		id, _ := c.Socket()
		if _, err := c.Call(abi.Req{Op: abi.OpBind, Sock: id, Data: shimtest.Addr(netip.AddrPortFrom(srv, uint16(p)))}); err == nil {
			priv = p
		}
		c.Call(abi.Req{Op: abi.OpClose, Sock: id})
	}
	if priv == 0 {
		t.Fatal("no port between 700 and 1023 is free for root")
	}

	cmd := exec.Command(bin, "-test.run=^TestBindPermissionsHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FSS_PORTPERM_SOCK="+e.path, "FSS_PORTPERM_SRV="+srv.String(),
		"FSS_PORTPERM_PRIV="+strconv.Itoa(priv), "FSS_PORTPERM_RP="+strconv.Itoa(int(rp.Port())))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testutil.Nobody, Gid: testutil.Nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", testutil.Nobody, err, out)
	}
	got := map[string]string{}
	for sc := bufio.NewScanner(strings.NewReader(string(out))); sc.Scan(); {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "RESULT" {
			got[f[1]] = f[2]
		}
	}
	for name, want := range map[string]string{
		"bind-priv":          "EACCES",
		"bind-any-priv":      "EACCES",
		"bind-foreign-priv":  "EADDRNOTAVAIL",
		"bind-0":             "OK",
		"reuseport-rp":       "EADDRINUSE",
		"reuseport-any-rp":   "EADDRINUSE",
		"reuseport-own-join": "OK",
	} {
		if got[name] != want {
			t.Errorf("uid %d: %s = %q, want %s", testutil.Nobody, name, got[name], want)
		}
	}
	if t.Failed() {
		t.Logf("helper output:\n%s", out)
	}
}

// TestBindPermissionsHelper is TestBindPermissions' unprivileged process;
// it does nothing unless that test runs it.
func TestBindPermissionsHelper(t *testing.T) {
	path := os.Getenv("FSS_PORTPERM_SOCK")
	if path == "" {
		t.Skip("run by TestBindPermissions")
	}
	srv := netip.MustParseAddr(os.Getenv("FSS_PORTPERM_SRV"))
	priv, _ := strconv.Atoi(os.Getenv("FSS_PORTPERM_PRIV"))
	rp, _ := strconv.Atoi(os.Getenv("FSS_PORTPERM_RP"))
	c, err := shimtest.Dial(path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	result := func(name string, err error) {
		var en syscall.Errno
		switch {
		case err == nil:
			fmt.Printf("RESULT %s OK\n", name)
		case errors.As(err, &en):
			fmt.Printf("RESULT %s %s\n", name, errnoName(en))
		default:
			fmt.Printf("RESULT %s %q\n", name, err)
		}
	}
	bind := func(name string, reusePort bool, ap netip.AddrPort) uint32 {
		id, err := c.Socket()
		if err != nil {
			t.Fatal(err)
		}
		if reusePort {
			setReusePort(t, c, id)
		}
		_, err = c.Call(abi.Req{Op: abi.OpBind, Sock: id, Data: shimtest.Addr(ap)})
		result(name, err)
		return id
	}
	anyAddr := netip.IPv4Unspecified()
	bind("bind-priv", false, netip.AddrPortFrom(srv, uint16(priv)))
	bind("bind-any-priv", false, netip.AddrPortFrom(anyAddr, uint16(priv)))
	bind("bind-foreign-priv", false, netip.MustParseAddrPort(fmt.Sprintf("192.0.2.1:%d", priv)))
	bind("bind-0", false, netip.AddrPortFrom(srv, 0))
	bind("reuseport-rp", true, netip.AddrPortFrom(srv, uint16(rp)))
	bind("reuseport-any-rp", true, netip.AddrPortFrom(anyAddr, uint16(rp)))
	own := bind("reuseport-own", true, netip.AddrPortFrom(srv, 0))
	if _, err := c.Call(abi.Req{Op: abi.OpListen, Sock: own, Arg0: 8}); err != nil {
		t.Fatal(err)
	}
	cm, err := c.Call(abi.Req{Op: abi.OpGetsockname, Sock: own})
	if err != nil {
		t.Fatal(err)
	}
	bind("reuseport-own-join", true, shimtest.DecodeAddr(cm.Data))
}

func setReusePort(t *testing.T, c *shimtest.Client, id uint32) {
	t.Helper()
	one := [32]byte{1}
	if _, err := c.Call(abi.Req{Op: abi.OpSetsockopt, Sock: id, Arg0: syscall.SOL_SOCKET, Arg1: 0xf /* SO_REUSEPORT */, Arg2: 4, Data: one}); err != nil {
		t.Fatalf("SO_REUSEPORT: %v", err)
	}
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EACCES:
		return "EACCES"
	case syscall.EADDRINUSE:
		return "EADDRINUSE"
	case syscall.EADDRNOTAVAIL:
		return "EADDRNOTAVAIL"
	}
	return strconv.Itoa(int(e))
}

// helperBinary copies this test binary where uid 65534 can run it (the go
// tool's build directory is root's alone).
func helperBinary(t *testing.T) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "fss-portperm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "daemon.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// openTreeToAll lets every user reach the daemon socket at path: the socket
// and the directories above it up to the temporary root.
func openTreeToAll(t *testing.T, path string) {
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(path); strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}
