//go:build linux

package afxdp

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestLinkDiesWithProcess: the steering program is attached as a BPF link,
// so when the process holding it is killed the kernel detaches it and takes
// the traffic back (DESIGN.md decision 2).
func TestLinkDiesWithProcess(t *testing.T) {
	if spec := os.Getenv("AFXDP_ATTACH_HELPER"); spec != "" {
		attachHelper(t, spec)
		return
	}
	requireRoot(t)
	lab, err := netlab.New(netlab.Options{Queues: 1, Name: "die"})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestLinkDiesWithProcess$")
	cmd.Env = append(os.Environ(), "AFXDP_ATTACH_HELPER="+lab.ServerNS+","+lab.ServerIf)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // the helper waits on it
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper: %q, %v", line, err)
	}

	if !xdpAttached(t, lab.ServerNS, lab.ServerIf) {
		t.Fatal("no XDP program attached while the helper runs")
	}
	if c, err := dialFrom(lab.ClientNS, "198.18.0.1:9999", 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("dial to the steered port succeeded while the helper runs")
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatal("kernel refused the steered port: steering not in effect")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true

	deadline := time.Now().Add(3 * time.Second)
	for xdpAttached(t, lab.ServerNS, lab.ServerIf) {
		if time.Now().After(deadline) {
			t.Fatal("XDP program still attached 3s after its process died")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := dialFrom(lab.ClientNS, "198.18.0.1:9999", 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after the helper died: %v, want connection refused from the kernel", err)
	}
}

func xdpAttached(t *testing.T, ns, ifname string) bool {
	t.Helper()
	l := linkIn(t, ns, ifname)
	x := l.Attrs().Xdp
	return x != nil && (x.Attached || x.ProgId != 0)
}

// attachHelper runs in the child: attach, steer 9999 to a socket, say
// ready, and wait to be killed.
func attachHelper(t *testing.T, spec string) {
	ns, ifname, _ := strings.Cut(spec, ",")
	var keep []interface{ Close() error }
	err := netlab.Do(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		s, err := LoadSteering(SteeringOptions{Queues: 1})
		if err != nil {
			return err
		}
		keep = append(keep, s)
		if _, err := s.Attach(ifc.Index, AttachAuto); err != nil {
			return err
		}
		sock, err := Open(ifc.Index, 0, SocketConfig{NumFrames: 64, RingSize: 32})
		if err != nil {
			return err
		}
		keep = append(keep, sock)
		if err := s.SetSocket(0, sock); err != nil {
			return err
		}
		if err := s.AddAddr(netlab.ServerAddr); err != nil {
			return err
		}
		return s.AddPort(netlab.ServerAddr, 9999)
	})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	var b [1]byte
	os.Stdin.Read(b[:]) // until killed (or the parent goes away)
	for _, k := range keep {
		k.Close()
	}
	os.Exit(0)
}

// linkIn reads the device ifname of namespace ns over netlink.
func linkIn(t *testing.T, ns, ifname string) netlink.Link {
	t.Helper()
	h, err := netns.GetFromPath(netlab.NSPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
