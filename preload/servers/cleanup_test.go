package servers

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// Everything a test creates is torn down by t.Cleanup. This file covers
// the ways a run can end without cleanups: SIGINT/SIGTERM to the test
// binary, go test's -timeout (which panics without running cleanups), and
// a run that was SIGKILLed (swept by the next run).

// tmpPrefix starts the name of every temp dir of this package; the pid of
// the test process follows, so a later run can tell stale dirs.
const tmpPrefix = "fsservers-"

// pgidFile in a test's dir lists "pgid starttime" of the process groups it
// started, for the sweep of a killed run.
const pgidFile = "pgids"

var live struct {
	sync.Mutex
	procs map[*proc]string // -> the test's dir
	labs  map[*netlab.Lab]struct{}
	dirs  map[string]struct{}
	done  bool // emergency cleanup ran: start nothing more
}

func mkTemp(kind string) (string, error) {
	return os.MkdirTemp("", fmt.Sprintf("%s%d-%s-", tmpPrefix, os.Getpid(), kind))
}

// track records a lab or a dir of a running test; it returns false once
// the emergency cleanup ran.
func track(l *netlab.Lab, dir string) bool {
	live.Lock()
	defer live.Unlock()
	if live.done {
		return false
	}
	if live.labs == nil {
		live.labs, live.dirs = map[*netlab.Lab]struct{}{}, map[string]struct{}{}
	}
	if l != nil {
		live.labs[l] = struct{}{}
	}
	if dir != "" {
		live.dirs[dir] = struct{}{}
	}
	return true
}

func untrack(l *netlab.Lab, dir string) {
	live.Lock()
	delete(live.labs, l)
	delete(live.dirs, dir)
	live.Unlock()
}

func trackProc(p *proc, dir string) {
	live.Lock()
	if live.procs == nil {
		live.procs = map[*proc]string{}
	}
	live.procs[p] = dir
	live.Unlock()
	pgid := p.pid()
	if st, err := startTime(pgid); err == nil {
		f, err := os.OpenFile(filepath.Join(dir, pgidFile), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			fmt.Fprintf(f, "%d %d\n", pgid, st)
			f.Close()
		}
	}
}

func untrackProc(p *proc) {
	live.Lock()
	delete(live.procs, p)
	live.Unlock()
}

// emergencyCleanup kills every process group, closes every lab and removes
// every dir this run still has.
func emergencyCleanup(why string) {
	live.Lock()
	live.done = true
	procs, labs, dirs := live.procs, live.labs, live.dirs
	live.procs, live.labs, live.dirs = nil, nil, nil
	live.Unlock()
	fmt.Fprintf(os.Stderr, "preload/servers: %s: killing %d process groups, removing %d labs\n", why, len(procs), len(labs))
	for p := range procs {
		syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
	for p := range procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	for l := range labs {
		l.Close()
	}
	for d := range dirs {
		os.RemoveAll(d)
	}
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// guardRun arms the signal handler and the timeout watchdog; the returned
// func disarms them.
func guardRun() func() {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	stop := make(chan struct{})
	var timeout time.Duration
	if f := flag.Lookup("test.timeout"); f != nil {
		timeout, _ = time.ParseDuration(f.Value.String())
	}
	var alarm <-chan time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	if timeout > 40*time.Second {
		// Before go test's own alarm, which panics without cleanups.
		timer.Reset(timeout - 20*time.Second)
		alarm = timer.C
	}
	go func() {
		select {
		case sig := <-sigc:
			emergencyCleanup("got " + sig.String())
			os.Exit(2)
		case <-alarm:
			emergencyCleanup(fmt.Sprintf("-timeout %v is near", timeout))
		case <-stop:
		}
	}()
	return func() {
		timer.Stop()
		signal.Stop(sigc)
		close(stop)
	}
}

// startTime is the start time of pid in clock ticks after boot (field 22
// of /proc/PID/stat).
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, errors.New("short stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// sweepStale removes what killed runs of this package left: labs (through
// netlab.Sweep), the process groups they started (only while the group's
// leader is the very process that was started: same pid, same start
// time), and their temp dirs.
func sweepStale() {
	if os.Geteuid() == 0 {
		if names, err := netlab.Sweep(); err == nil && len(names) > 0 {
			fmt.Fprintf(os.Stderr, "preload/servers: removed stale labs %v\n", names)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tmpPrefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), tmpPrefix)
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // its run is alive
		}
		if b, err := os.ReadFile(filepath.Join(d, pgidFile)); err == nil {
			for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
				var pgid int
				var st uint64
				if _, err := fmt.Sscan(line, &pgid, &st); err != nil || pgid <= 1 {
					continue
				}
				if now, err := startTime(pgid); err == nil && now == st {
					syscall.Kill(-pgid, syscall.SIGKILL)
				}
			}
		}
		os.RemoveAll(d)
	}
}
