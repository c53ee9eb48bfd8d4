package lab

import (
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMachineCPU: the machine's busy time grows by at least what this
// goroutine spins (USER_HZ ticks, so allow for the coarse clock).
func TestMachineCPU(t *testing.T) {
	before, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 200*time.Millisecond {
		t.Fatalf("machine busy time grew by %v over a 300 ms spin", d)
	}
}

// TestSwitches: a thread that sleeps 100 times is switched in at least
// 100 times more, in its process's schedstat and in the machine's count.
func TestSwitches(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_, p0 := procSched("/proc/self")
	m0, err := machineSwitches()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		ts := unix.Timespec{Nsec: int64(200 * time.Microsecond)}
		unix.Nanosleep(&ts, nil)
	}
	_, p1 := procSched("/proc/self")
	m1, err := machineSwitches()
	if err != nil {
		t.Fatal(err)
	}
	if p1-p0 < 100 {
		t.Errorf("the process was switched in %d times over 100 sleeps", p1-p0)
	}
	if m1-m0 < 100 {
		t.Errorf("the machine counted %d context switches over 100 sleeps", m1-m0)
	}
}

// TestSNMPValues reads the counters the lab's retransmission rows use
// from the layout of /proc/net/snmp and /proc/net/netstat (pairs of a
// header line and a value line per protocol), and from this machine's own
// files.
func TestSNMPValues(t *testing.T) {
	in := "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 42 0\n" +
		"TcpExt: SyncookiesSent TCPTimeouts\nTcpExt: 0 7\nIpExt: InNoRoutes\nIpExt: 3\n"
	v := snmpValues(in)
	if v["Tcp:RetransSegs"] != 42 || v["TcpExt:TCPTimeouts"] != 7 || v["Ip:DefaultTTL"] != 64 || v["IpExt:InNoRoutes"] != 3 {
		t.Fatalf("parsed %v", v)
	}
	if _, ok := v["Tcp:RtoAlgorithm"]; !ok {
		t.Fatal("first column missing")
	}
	snmp, err1 := os.ReadFile("/proc/net/snmp")
	netstat, err2 := os.ReadFile("/proc/net/netstat")
	if err1 != nil || err2 != nil {
		t.Fatalf("read /proc/net counters: %v %v", err1, err2)
	}
	v = snmpValues(string(snmp) + string(netstat))
	if _, ok := v["Tcp:RetransSegs"]; !ok {
		t.Error("Tcp:RetransSegs missing from this machine's /proc/net/snmp")
	}
	if _, ok := v["TcpExt:TCPTimeouts"]; !ok {
		t.Error("TcpExt:TCPTimeouts missing from this machine's /proc/net/netstat")
	}
}
