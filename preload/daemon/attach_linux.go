package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsstack/fsstack/preload/abi"
)

// HelloTimeout bounds how long a connection may take to send its hello.
const HelloTimeout = 5 * time.Second

// attachError is a refused attach: Errno goes into the reply.
type attachError struct {
	errno syscall.Errno
	msg   string
}

func (e *attachError) Error() string { return fmt.Sprintf("%s (%v)", e.msg, e.errno) }
func (e *attachError) Unwrap() error { return e.errno }

func refuse(errno syscall.Errno, format string, args ...any) error {
	return &attachError{errno: errno, msg: fmt.Sprintf(format, args...)}
}

// readHello reads one struct fss_hello (whose size it learns from its own
// size field) and returns its bytes.
func readHello(conn *net.UnixConn, first []byte) ([]byte, error) {
	buf := append(make([]byte, 0, abi.SizeofHello), first...)
	tmp := make([]byte, abi.HelloMaxSize)
	fill := func(n int) error {
		for len(buf) < n {
			// Read whatever is there, so bytes sent after the hello (which
			// a shim must not send before the reply) are caught here.
			k, err := conn.Read(tmp)
			buf = append(buf, tmp[:k]...)
			if err != nil && len(buf) < n {
				return fmt.Errorf("read shim hello (%d of %d bytes): %w", len(buf), n, err)
			}
		}
		return nil
	}
	if err := fill(12); err != nil {
		return nil, err
	}
	if !bytes.Equal(buf[:4], []byte("FSSA")) {
		return nil, refuse(syscall.EPROTO, "bad hello magic %q", buf[:4])
	}
	size := int(binary.LittleEndian.Uint32(buf[8:12]))
	if size < abi.HelloMinSize || size > abi.HelloMaxSize {
		return nil, refuse(syscall.EPROTO, "hello size %d outside %d..%d", size, abi.HelloMinSize, abi.HelloMaxSize)
	}
	if err := fill(size); err != nil {
		return nil, err
	}
	if len(buf) > size {
		return nil, refuse(syscall.EPROTO, "%d bytes after the hello before the reply", len(buf)-size)
	}
	return buf, nil
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("peer credentials (SO_PEERCRED): %w", serr)
	}
	return cred, nil
}

func sendReply(conn *net.UnixConn, status syscall.Errno, segSize uint64, clientID uint32, fds []int) error {
	var r abi.HelloReply
	copy(r.Magic[:], "FSSR")
	r.Status = -int32(status)
	r.Abi_version = abi.ABIVersion
	r.Size = abi.SizeofHelloReply
	r.Seg_size = segSize
	r.Client_id = clientID
	b, err := binary.Append(nil, binary.LittleEndian, &r)
	if err != nil {
		return fmt.Errorf("encode attach reply: %w", err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	conn.SetWriteDeadline(time.Now().Add(HelloTimeout))
	defer conn.SetWriteDeadline(time.Time{})
	if _, _, err := conn.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send attach reply: %w", err)
	}
	return nil
}

// attach runs the handshake. On failure it has already sent the refusal
// (when the peer deserves one) and released everything.
func (d *Daemon) attach(ctx context.Context, conn *net.UnixConn, first []byte) (_ *client, err error) {
	conn.SetReadDeadline(time.Now().Add(HelloTimeout))
	hello, err := readHello(conn, first)
	conn.SetReadDeadline(time.Time{})
	if err == nil {
		err = d.checkHello(conn, hello)
	}
	if err != nil {
		// Log before replying, so the reason is on record by the time the
		// peer sees the refusal.
		d.stats.refused.Add(1)
		d.log.Warn("shim attach refused", "peer", conn.RemoteAddr(), "err", err)
		var ae *attachError
		if errors.As(err, &ae) {
			sendReply(conn, ae.errno, 0, 0, nil)
		}
		return nil, err
	}
	pid := int32(binary.LittleEndian.Uint32(hello[12:16]))
	flags := binary.LittleEndian.Uint32(hello[16:20])
	cred, _ := peerCred(conn) // checked in checkHello
	proc, err := openProcCreds(cred.Pid)
	if err != nil {
		d.stats.refused.Add(1)
		d.log.Warn("shim attach refused: bind(2) needs the peer's credentials from /proc (is /proc mounted for the daemon's pid namespace?)",
			"peer", conn.RemoteAddr(), "pid", cred.Pid, "err", err)
		sendReply(conn, syscall.EPERM, 0, 0, nil)
		return nil, err
	}

	c := &client{d: d, conn: conn, pid: pid, uid: cred.Uid, proc: proc, forkChild: flags&abi.HelloForkChild != 0,
		wakeAck: flags&abi.HelloWakeAck != 0, handover: flags&abi.HelloHandover != 0,
		txNospace: flags&abi.HelloTxNospace != 0, acceptRing: flags&abi.HelloAcceptRing != 0,
		stopCh: make(chan struct{}), done: make(chan struct{})}
	if err := d.addClient(c); err != nil {
		proc.Close()
		d.stats.refused.Add(1)
		errno := syscall.ECONNREFUSED // shutting down
		var ae *attachError
		if errors.As(err, &ae) {
			errno = ae.errno
			d.log.Warn("shim attach refused", "peer", conn.RemoteAddr(), "pid", pid, "uid", cred.Uid, "err", err)
		}
		sendReply(conn, errno, 0, 0, nil)
		return nil, err
	}
	defer func() {
		if err != nil {
			d.removeClient(c)
			c.unmap()
			close(c.done)
		}
	}()
	c.log = d.log.With("client", c.id, "pid", pid, "uid", cred.Uid)

	memfd, err := c.makeSegment(d.layout)
	if err != nil {
		d.stats.refused.Add(1)
		c.log.Error("shim attach failed", "err", err)
		sendReply(conn, errnoOf(err), 0, 0, nil)
		return nil, err
	}
	defer unix.Close(memfd)
	if err := sendReply(conn, 0, c.seg.Off.Size, c.id, []int{memfd, c.doorbellFD, c.wakeFD}); err != nil {
		d.stats.refused.Add(1)
		c.log.Warn("shim attach failed", "err", err)
		return nil, err
	}
	c.log.Info("shim client attached", "fork_child", c.forkChild, "segment_bytes", c.seg.Off.Size)
	return c, nil
}

func (d *Daemon) checkHello(conn *net.UnixConn, hello []byte) error {
	if v := binary.LittleEndian.Uint32(hello[4:8]); v != abi.ABIVersion {
		return refuse(syscall.EPROTONOSUPPORT, "shim ABI version %d, daemon serves %d; use a libfsstack.so built with this daemon", v, abi.ABIVersion)
	}
	pid := int32(binary.LittleEndian.Uint32(hello[12:16]))
	cred, err := peerCred(conn)
	if err != nil {
		return refuse(syscall.EPERM, "%v", err)
	}
	if cred.Pid != pid {
		return refuse(syscall.EPERM, "hello claims pid %d but the peer is pid %d", pid, cred.Pid)
	}
	if d.opts.AllowUID != nil && !d.opts.AllowUID(cred.Uid) {
		return refuse(syscall.EACCES, "uid %d may not attach", cred.Uid)
	}
	return nil
}

// makeSegment creates the memfd, seals its size, maps it, writes the
// header, and creates both eventfds. It returns the memfd for the reply
// (the caller closes it; the mapping stays).
func (c *client) makeSegment(l abi.Layout) (memfd int, err error) {
	size := l.Offsets().Size
	memfd, err = unix.MemfdCreate(fmt.Sprintf("fsstack-shim-%d", c.id), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("create shim segment (memfd_create): %w", err)
	}
	fail := func(e error) (int, error) {
		unix.Close(memfd)
		c.unmap()
		return -1, e
	}
	if err := unix.Ftruncate(memfd, int64(size)); err != nil {
		return fail(fmt.Errorf("size shim segment to %d bytes: %w", size, err))
	}
	// The client must not shrink the memfd under our mapping (SIGBUS).
	if _, err := unix.FcntlInt(uintptr(memfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail(fmt.Errorf("seal shim segment: %w", err))
	}
	mem, err := unix.Mmap(memfd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("map shim segment (%d bytes): %w", size, err))
	}
	c.mem = mem
	if c.seg, err = abi.InitSegment(mem, l, c.id, c.pid); err != nil {
		return fail(err)
	}
	c.hdr = c.seg.Hdr()
	c.hdr.Fastsocket = abi.FsockSet | uint32(c.d.listenSpawn)
	if c.doorbellFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(fmt.Errorf("create doorbell eventfd: %w", err))
	}
	c.doorbell = os.NewFile(uintptr(c.doorbellFD), "fsstack-doorbell")
	if c.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(fmt.Errorf("create wake eventfd: %w", err))
	}
	rr, re := c.seg.ReqRing()
	cr, ce := c.seg.CmplRing()
	c.reqs = abi.NewConsumer(rr, re)
	c.cmpls = abi.NewProducer(cr, ce)
	c.readyMap, c.kickMap = c.seg.ReadyMap(), c.seg.KickMap()
	c.slots = make([]*sockRef, l.Socks)
	c.gens = make([]uint16, l.Socks)
	return memfd, nil
}

// unmap releases the segment and the eventfds. Only after every reference
// is detached (no socket goroutine can reach the memory).
func (c *client) unmap() {
	if c.proc != nil {
		c.proc.Close()
		c.proc = nil
	}
	if c.doorbell != nil {
		c.doorbell.Close()
		c.doorbell = nil
	}
	if c.wakeFD > 0 {
		unix.Close(c.wakeFD)
		c.wakeFD = 0
	}
	if c.mem != nil {
		unix.Munmap(c.mem)
		c.mem, c.seg, c.hdr = nil, nil, nil
	}
}

// wakeShim writes the wake eventfd. EAGAIN (counter at its maximum) means
// the shim has a wake-up pending anyway.
func (c *client) wakeShim() {
	var one = [8]byte{1}
	unix.Write(c.wakeFD, one[:])
}
