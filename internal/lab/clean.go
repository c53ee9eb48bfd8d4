package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// labNS matches the namespaces Run creates: netlab names with prefix
// "lab", with the creating process's pid when netlab records it.
var labNS = regexp.MustCompile(`^fs-lab-(?:(\d+)-)?[0-9a-f]{8}-(?:srv|cli)$`)

// labProcesses are the programs a lab starts inside its namespaces. When
// a lab is SIGKILLed its direct children die with it (Pdeathsig), but
// nginx's workers outlive their master; in the namespace of a lab whose
// creator is gone such processes are leftovers, and cleaning kills them.
var labProcesses = map[string]bool{"nginx": true, "fsstack": true, "wrk": true}

// Stale is what CleanStale did: the namespaces it removed, and the ones it
// left because something else is still inside, with why.
type Stale struct {
	Removed []string
	Kept    []string // "NAME: pid N (comm) is inside"
}

// CleanStale removes lab namespaces left behind by runs that were killed
// before they could clean up (or kept with Keep): those older than minAge
// whose creating process is gone. Leftover lab processes inside them
// (nginx workers orphaned by a killed master, fsstack, wrk) are killed
// first; a namespace with any other process inside is kept and reported.
// Namespaces of other tests, and of a lab that is running, are left alone.
func CleanStale(minAge time.Duration) (Stale, error) {
	return cleanStale(minAge, nil)
}

// cleanStale is CleanStale limited to the names in only, if not nil (tests
// must not remove other people's kept labs).
func cleanStale(minAge time.Duration, only map[string]bool) (Stale, error) {
	var res Stale
	ents, err := os.ReadDir(netlab.NetNSDir)
	if os.IsNotExist(err) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("list network namespaces: %w", err)
	}
	var errs []string
	for _, e := range ents {
		m := labNS.FindStringSubmatch(e.Name())
		if m == nil || only != nil && !only[e.Name()] {
			continue
		}
		if m[1] != "" && processAlive(m[1]) {
			continue // its lab is still running (or kept by a live process)
		}
		path := filepath.Join(netlab.NetNSDir, e.Name())
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			continue
		}
		fi, err := os.Lstat(path)
		if err != nil || time.Since(fi.ModTime()) < minAge {
			continue
		}
		if other := killLeftovers(st.Ino); other != "" {
			res.Kept = append(res.Kept, e.Name()+": "+other+" is inside")
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v: %s", e.Name(), err, strings.TrimSpace(string(out))))
			continue
		}
		res.Removed = append(res.Removed, e.Name())
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("remove stale lab namespaces: %s", strings.Join(errs, "; "))
	}
	return res, nil
}

// killLeftovers SIGKILLs the lab processes in the network namespace with
// inode ino and waits (up to two seconds) for them to be gone. It returns
// "" when the namespace is then empty, else a description of a process
// that is not the lab's ("pid N (comm)"), or of one that would not die.
func killLeftovers(ino uint64) string {
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		procs := processesIn(ino)
		if len(procs) == 0 {
			return ""
		}
		for _, p := range procs {
			if !labProcesses[p.comm] {
				return fmt.Sprintf("pid %d (%s)", p.pid, p.comm)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("pid %d (%s), which did not exit on SIGKILL,", procs[0].pid, procs[0].comm)
		}
		for _, p := range procs {
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
}

type proc struct {
	pid  int
	comm string
}

// processesIn lists the processes whose network namespace has inode ino.
func processesIn(ino uint64) []proc {
	var out []proc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st) != nil || st.Ino != ino {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue // gone meanwhile
		}
		out = append(out, proc{pid, strings.TrimSpace(string(comm))})
	}
	return out
}

func processAlive(pid string) bool {
	_, err := os.Stat(filepath.Join("/proc", pid))
	return err == nil
}
