package daemon

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// capNetBindService is CAP_NET_BIND_SERVICE's bit in /proc/PID/status's
// CapEff.
const capNetBindService = 10

// creds are a process's credentials as the kernel checks them at bind(2):
// its effective uid (which owns the sockets it creates, and so their
// SO_REUSEPORT group) and whether it holds CAP_NET_BIND_SERVICE.
type creds struct {
	euid   uint32
	capEff uint64
}

// procCreds reads an attached process's current credentials from /proc:
// SO_PEERCRED tells what they were when it attached, and a server that
// starts as root and drops to a user (or a test that does) must be judged
// by what it is now, as the kernel judges the calling thread. Both files
// are opened once, at attach: they refer to that process even if its pid
// is reused after it exits (reads then fail).
//
// Reads happen on the client loop only.
type procCreds struct {
	pid    int32
	dir    *os.File // /proc/PID (O_PATH)
	status *os.File // /proc/PID/status, read from offset 0 for current values
	buf    []byte
}

func openProcCreds(pid int32) (*procCreds, error) {
	dirPath := "/proc/" + strconv.Itoa(int(pid))
	fd, err := unix.Open(dirPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s for the peer's credentials: %w", dirPath, err)
	}
	dir := os.NewFile(uintptr(fd), dirPath)
	sfd, err := unix.Openat(fd, "status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		dir.Close()
		return nil, fmt.Errorf("open %s/status for the peer's credentials: %w", dirPath, err)
	}
	return &procCreds{pid: pid, dir: dir, status: os.NewFile(uintptr(sfd), dirPath+"/status"), buf: make([]byte, 8192)}, nil
}

func (p *procCreds) Close() error {
	if p == nil {
		return nil
	}
	p.status.Close()
	return p.dir.Close()
}

// read returns the process's credentials now.
func (p *procCreds) read() (creds, error) {
	var cr creds
	n, err := p.status.ReadAt(p.buf, 0)
	for n == len(p.buf) { // a status longer than the buffer: grow and read again
		p.buf = make([]byte, 2*len(p.buf))
		n, err = p.status.ReadAt(p.buf, 0)
	}
	if n == 0 {
		return cr, fmt.Errorf("read /proc/%d/status: %w", p.pid, err)
	}
	euid, capEff, ok := parseStatus(p.buf[:n])
	if !ok {
		return cr, fmt.Errorf("read /proc/%d/status: no Uid or CapEff line", p.pid)
	}
	cr.euid, cr.capEff = euid, capEff
	return cr, nil
}

// mayBindService reports whether the process holds CAP_NET_BIND_SERVICE
// now. It counts only in the daemon's own user namespace: a process in a
// user namespace it created holds every capability there, and none over
// the daemon's network namespaces.
func (p *procCreds) mayBindService() (bool, error) {
	cr, err := p.read()
	if err != nil || cr.capEff&(1<<capNetBindService) == 0 {
		return false, err
	}
	ns, err := readlinkat(int(p.dir.Fd()), "ns/user")
	if err != nil {
		return false, fmt.Errorf("read the user namespace of pid %d: %w", p.pid, err)
	}
	own, err := ownUserNS()
	if err != nil {
		return false, err
	}
	return ns == own, nil
}

// parseStatus takes the effective uid (Uid's second field) and CapEff
// from /proc/PID/status.
func parseStatus(b []byte) (euid uint32, capEff uint64, ok bool) {
	var haveUID, haveCap bool
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		switch {
		case bytes.HasPrefix(line, []byte("Uid:")):
			f := bytes.Fields(line[4:])
			if len(f) < 2 {
				return 0, 0, false
			}
			v, err := strconv.ParseUint(string(f[1]), 10, 32)
			if err != nil {
				return 0, 0, false
			}
			euid, haveUID = uint32(v), true
		case bytes.HasPrefix(line, []byte("CapEff:")):
			v, err := strconv.ParseUint(string(bytes.TrimSpace(line[7:])), 16, 64)
			if err != nil {
				return 0, 0, false
			}
			capEff, haveCap = v, true
		}
	}
	return euid, capEff, haveUID && haveCap
}

func readlinkat(dirfd int, path string) (string, error) {
	buf := make([]byte, 128)
	n, err := unix.Readlinkat(dirfd, path, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// ownUserNS is the daemon's user namespace ("user:[4026531837]").
var ownUserNS = sync.OnceValues(func() (string, error) {
	ns, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		return "", fmt.Errorf("read the daemon's user namespace: %w", err)
	}
	return ns, nil
})

// ownerUID is the owner of a socket the client creates now: its process's
// effective uid (the uid it attached with if /proc cannot tell).
func (c *client) ownerUID() uint32 {
	if c.proc == nil {
		return c.uid
	}
	cr, err := c.proc.read()
	if err != nil {
		c.log.Warn("shim socket: owner taken from the attach credentials", "uid", c.uid, "err", err)
		return c.uid
	}
	return cr.euid
}

// mayBindService reports whether the client's process holds
// CAP_NET_BIND_SERVICE now. If /proc cannot tell, it does not: the bind of
// a privileged port fails with EACCES and the reason is logged.
func (c *client) mayBindService() bool {
	if c.proc == nil {
		return false
	}
	ok, err := c.proc.mayBindService()
	if err != nil {
		c.log.Warn("shim bind: treating the caller as unprivileged", "err", err)
		return false
	}
	return ok
}
