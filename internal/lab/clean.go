package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// labNS matches the namespaces Run creates: netlab names with prefix
// "lab", with the creating process's pid when netlab records it.
var labNS = regexp.MustCompile(`^fs-lab-(?:(\d+)-)?[0-9a-f]{8}-(?:srv|cli)$`)

// CleanStale removes lab namespaces left behind by runs that were killed
// before they could clean up (or kept with Keep): those older than minAge,
// whose creating process is gone, with no process inside. It returns the names it removed. Namespaces of
// other tests, and of a lab that is running, are left alone.
func CleanStale(minAge time.Duration) ([]string, error) {
	return cleanStale(minAge, nil)
}

// cleanStale is CleanStale limited to the names in only, if not nil (tests
// must not remove other people's kept labs).
func cleanStale(minAge time.Duration, only map[string]bool) ([]string, error) {
	ents, err := os.ReadDir(netlab.NetNSDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	inUse := netnsInUse()
	var removed []string
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
		if inUse[st.Ino] {
			continue
		}
		fi, err := os.Lstat(path)
		if err != nil || time.Since(fi.ModTime()) < minAge {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v: %s", e.Name(), err, strings.TrimSpace(string(out))))
			continue
		}
		removed = append(removed, e.Name())
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("remove stale lab namespaces: %s", strings.Join(errs, "; "))
	}
	return removed, nil
}

// netnsInUse returns the inodes of the network namespaces that processes
// are in now.
func netnsInUse() map[uint64]bool {
	inUse := map[uint64]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st) == nil {
			inUse[st.Ino] = true
		}
	}
	return inUse
}

func processAlive(pid string) bool {
	_, err := os.Stat(filepath.Join("/proc", pid))
	return err == nil
}
