package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// nsCPU returns the CPU time used so far by every process in the network
// namespace ns (by name): the server side of the lab, i.e. the server
// processes and, for fsstack, the daemon. It sums the nanosecond run times
// of their threads (/proc/PID/task/*/schedstat), and in switches the times
// they were switched in (the third field: wake-ups and preemptions, each a
// context switch). Processes that exited between two readings drop out, so
// read it around phases during which the servers run.
func nsCPU(ns string) (total time.Duration, switches int64, err error) {
	var want syscall.Stat_t
	if err := syscall.Stat(filepath.Join(netlab.NetNSDir, ns), &want); err != nil {
		return 0, 0, fmt.Errorf("namespace %s: %w", ns, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		cpu, sw := procSched("/proc/" + e.Name())
		total += cpu
		switches += sw
	}
	return total, switches, nil
}

// procSched sums the schedstat of every thread of the process at dir
// (/proc/PID): run time, and the times they were switched in. A process
// that exited adds nothing.
func procSched(dir string) (total time.Duration, switches int64) {
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return 0, 0 // exited
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				total += time.Duration(ns)
			}
		}
		if len(f) > 2 {
			if n, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				switches += n
			}
		}
	}
	return total, switches
}

// machineSwitches returns the machine's context switches so far (/proc/stat
// ctxt): every process and kernel thread, as machineCPU.
func machineSwitches() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ctxt "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/stat: no ctxt line")
}

// machineCPU returns the busy CPU time of the whole machine so far (every
// CPU's user, nice, system, irq, softirq and steal time from /proc/stat):
// the server, the load generator and the kernel's network work wherever
// it ran. The kernel runs much of a namespace's TCP receive work in
// softirq on the CPU of whoever sent the packet, so over a veth pair a
// kernel server's receive work is largely charged to the client and an
// fsstack daemon's transmits carry the client's receive work: the
// server-side figure of nsCPU leans against fsstack, the machine figure
// does not (on a machine that runs nothing else).
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var jiffies int64
	// user nice system idle iowait irq softirq steal: skip idle and iowait.
	for i, v := range f[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		jiffies += n
	}
	return time.Duration(jiffies) * time.Second / userHZ, nil
}

// userHZ is the unit of /proc/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// tcpLoss returns the kernel's TCP retransmission counters of namespace
// ns: segments retransmitted (Tcp RetransSegs in /proc/net/snmp) and
// retransmission timeouts (TcpExt TCPTimeouts in /proc/net/netstat).
func tcpLoss(lab *netlab.Lab, ns string) (retrans, timeouts int64, err error) {
	out, err := lab.Cmd(ns, "cat", "/proc/net/snmp", "/proc/net/netstat").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("read TCP counters of %s: %w", ns, err)
	}
	vals := snmpValues(string(out))
	r, ok1 := vals["Tcp:RetransSegs"]
	t, ok2 := vals["TcpExt:TCPTimeouts"]
	if !ok1 || !ok2 {
		return 0, 0, fmt.Errorf("TCP counters of %s: RetransSegs or TCPTimeouts missing", ns)
	}
	return r, t, nil
}

// snmpValues parses /proc/net/snmp and /proc/net/netstat: pairs of lines,
// "Proto: name name ..." then "Proto: value value ...", into
// "Proto:name" -> value.
func snmpValues(s string) map[string]int64 {
	vals := map[string]int64{}
	lines := strings.Split(s, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) < 2 || len(names) != len(values) || names[0] != values[0] {
			continue
		}
		if _, err := strconv.ParseInt(values[1], 10, 64); err != nil {
			continue // a header line followed by another header
		}
		for j := 1; j < len(names); j++ {
			if v, err := strconv.ParseInt(values[j], 10, 64); err == nil {
				vals[names[0]+names[j]] = v
			}
		}
		i++
	}
	return vals
}
