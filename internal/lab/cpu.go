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
