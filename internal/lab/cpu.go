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
// of their threads (/proc/PID/task/*/schedstat). Processes that exited
// between two readings drop out, so read it around phases during which the
// servers run.
func nsCPU(ns string) (time.Duration, error) {
	var want syscall.Stat_t
	if err := syscall.Stat(filepath.Join(netlab.NetNSDir, ns), &want); err != nil {
		return 0, fmt.Errorf("namespace %s: %w", ns, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		dir := "/proc/" + e.Name() + "/task"
		tasks, err := os.ReadDir(dir)
		if err != nil {
			continue // exited
		}
		for _, t := range tasks {
			b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					total += time.Duration(ns)
				}
			}
		}
	}
	return total, nil
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
