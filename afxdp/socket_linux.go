//go:build linux

package afxdp

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Open creates an AF_XDP socket with its own UMEM and four rings, enables
// need_wakeup, binds it to (ifindex, queue) in the calling thread's network
// namespace and puts every rx frame on the fill ring. Steering must also
// point XSKMAP[queue] at the socket (Steering.SetSocket) before frames
// arrive.
func Open(ifindex, queue int, cfg SocketConfig) (*Socket, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if queue < 0 {
		return nil, fmt.Errorf("afxdp: queue %d: want >= 0", queue)
	}
	ifname, err := ifaceName(ifindex)
	if err != nil {
		return nil, err
	}

	s := &Socket{ifindex: ifindex, queue: queue, cfg: cfg, fd: -1}
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	ok := false
	defer func() {
		if !ok {
			cleanup()
		}
	}()

	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.EAFNOSUPPORT):
			return nil, errNotSupported("afxdp: create AF_XDP socket (kernel without CONFIG_XDP_SOCKETS)", err)
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, fmt.Errorf("afxdp: create AF_XDP socket: %w (%w)", err, ErrPermission)
		}
		return nil, fmt.Errorf("afxdp: create AF_XDP socket: %w", err)
	}
	s.fd = fd
	undo = append(undo, func() { unix.Close(fd) })

	umemLen := cfg.NumFrames * cfg.FrameSize
	umem, err := unix.Mmap(-1, 0, umemLen, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("afxdp: map %d bytes of umem: %w", umemLen, err)
	}
	s.umem = umem
	undo = append(undo, func() { unix.Munmap(umem) })

	raiseMemlock()
	// Tx metadata first where asked (copy mode only); a kernel that does
	// not know it refuses that registration (EINVAL), and the socket goes
	// on without: SetTxChecksum then asks nothing, and the caller sums.
	registered := false
	if cfg.TxChecksum && !cfg.ZeroCopy && registerUMEM(fd, umem, cfg.FrameSize, TxMetadataLen) == nil {
		s.txMeta = TxMetadataLen
		registered = true
	}
	if !registered {
		if err := registerUMEM(fd, umem, cfg.FrameSize, 0); err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				return nil, fmt.Errorf("afxdp: register umem of %d bytes: %w (RLIMIT_MEMLOCK too low: "+
					"raise it with 'ulimit -l unlimited', run as root or give CAP_IPC_LOCK)", umemLen, err)
			}
			return nil, fmt.Errorf("afxdp: register umem: %w", err)
		}
	}

	fq := cfg.fqSize()
	for _, r := range []struct {
		opt  int
		size int
		name string
	}{
		{unix.XDP_UMEM_FILL_RING, fq, "fill"},
		{unix.XDP_UMEM_COMPLETION_RING, fq, "completion"},
		{unix.XDP_RX_RING, cfg.RingSize, "rx"},
		{unix.XDP_TX_RING, cfg.RingSize, "tx"},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, r.size); err != nil {
			return nil, fmt.Errorf("afxdp: size %s ring to %d: %w", r.name, r.size, err)
		}
	}

	// Copy-mode TX sends at most 32 frames per sendto unless the kernel
	// (6.17+) lets us raise that to a whole ring; best effort.
	if cfg.RingSize >= 32 {
		_ = unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, cfg.RingSize)
	}

	off, err := getMmapOffsets(fd)
	if err != nil {
		return nil, errNotSupported("afxdp: get ring offsets", err)
	}
	mapRing := func(name string, pgoff int64, ro unix.XDPRingOffset, entries, entSize int) ([]byte, error) {
		size := int(ro.Desc) + entries*entSize
		mem, err := unix.Mmap(fd, pgoff, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("afxdp: map %s ring: %w", name, err)
		}
		undo = append(undo, func() { unix.Munmap(mem) })
		return mem, nil
	}
	fillMem, err := mapRing("fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, fq, sizeofAddr)
	if err != nil {
		return nil, err
	}
	compMem, err := mapRing("completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, fq, sizeofAddr)
	if err != nil {
		return nil, err
	}
	rxMem, err := mapRing("rx", unix.XDP_PGOFF_RX_RING, off.Rx, cfg.RingSize, sizeofDesc)
	if err != nil {
		return nil, err
	}
	txMem, err := mapRing("tx", unix.XDP_PGOFF_TX_RING, off.Tx, cfg.RingSize, sizeofDesc)
	if err != nil {
		return nil, err
	}
	s.fill.init(ringFromMem(fillMem, off.Fr, uint32(fq)))
	s.fill.addrs = addrSlots(fillMem, off.Fr, uint32(fq))
	s.comp.init(ringFromMem(compMem, off.Cr, uint32(fq)))
	s.comp.addrs = addrSlots(compMem, off.Cr, uint32(fq))
	s.rx.init(ringFromMem(rxMem, off.Rx, uint32(cfg.RingSize)))
	s.rx.descs = descSlots(rxMem, off.Rx, uint32(cfg.RingSize))
	s.tx.init(ringFromMem(txMem, off.Tx, uint32(cfg.RingSize)))
	s.tx.descs = descSlots(txMem, off.Tx, uint32(cfg.RingSize))

	if cfg.BusyPoll {
		for _, o := range []struct {
			opt, val int
			name     string
		}{
			{unix.SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL"},
			{unix.SO_BUSY_POLL, BusyPollTimeout, "SO_BUSY_POLL"},
			{unix.SO_BUSY_POLL_BUDGET, BusyPollBudget, "SO_BUSY_POLL_BUDGET"},
		} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.val); err != nil {
				if errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL) {
					return nil, errNotSupported("afxdp: set "+o.name+" (busy polling needs Linux 5.11+)", err)
				}
				return nil, fmt.Errorf("afxdp: set %s: %w", o.name, err)
			}
		}
	}

	flags := uint16(unix.XDP_USE_NEED_WAKEUP)
	if cfg.ZeroCopy {
		flags |= unix.XDP_ZEROCOPY
	}
	if err := bindRetry(fd, &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(ifindex), QueueID: uint32(queue)}); err != nil {
		return nil, bindError(err, ifindex, ifname, queue, cfg.ZeroCopy)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS); err == nil {
		s.zc = v&unix.XDP_OPTIONS_ZEROCOPY != 0
	}

	if err := s.initData(); err != nil {
		return nil, err
	}
	s.sys = sysKernel{fd: fd}
	s.kernelStats = func() (SocketStats, error) {
		k, err := getStatistics(fd)
		if err != nil {
			return SocketStats{}, fmt.Errorf("afxdp: get statistics: %w", err)
		}
		return SocketStats{
			RxDropped:            k.Rx_dropped,
			RxInvalidDescs:       k.Rx_invalid_descs,
			TxInvalidDescs:       k.Tx_invalid_descs,
			RxRingFull:           k.Rx_ring_full,
			RxFillRingEmptyDescs: k.Rx_fill_ring_empty_descs,
			TxRingEmptyDescs:     k.Tx_ring_empty_descs,
		}, nil
	}
	mems := [][]byte{fillMem, compMem, rxMem, txMem}
	s.closeFn = func() error {
		var errs []error
		for _, m := range mems {
			if err := unix.Munmap(m); err != nil {
				errs = append(errs, fmt.Errorf("afxdp: unmap ring: %w", err))
			}
		}
		if err := unix.Close(fd); err != nil {
			errs = append(errs, fmt.Errorf("afxdp: close socket: %w", err))
		}
		if err := unix.Munmap(umem); err != nil {
			errs = append(errs, fmt.Errorf("afxdp: unmap umem: %w", err))
		}
		s.umem = nil
		s.fd = -1
		return errors.Join(errs...)
	}
	ok = true
	return s, nil
}

// bindRetryFor is how long bind retries EBUSY. The kernel releases a
// closed socket's claim on its queue from a work queue, a little after
// close returns; a socket reopened on the same queue at once (a restart, a
// test) would otherwise fail.
const bindRetryFor = time.Second

func bindRetry(fd int, sa *unix.SockaddrXDP) error {
	deadline := time.Now().Add(bindRetryFor)
	wait := 100 * time.Microsecond
	for {
		err := unix.Bind(fd, sa)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// ifaceName resolves ifindex in the calling thread's network namespace.
func ifaceName(ifindex int) (string, error) {
	if ifindex <= 0 {
		return "", fmt.Errorf("afxdp: interface index %d: no such interface (list with 'ip link')", ifindex)
	}
	ifc, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("afxdp: interface index %d: no such interface in this network namespace (list with 'ip link'): %w", ifindex, err)
	}
	return ifc.Name, nil
}

// deviceQueues returns how many queues an AF_XDP socket can bind to on
// the device (the kernel checks the larger of the active rx and tx queue
// counts), or 0 if unknown. Active channels (ethtool -l) come first:
// IFLA_NUM_RX_QUEUES is what the driver allocated, often more than are
// in use on a physical NIC.
func deviceQueues(ifindex int, ifname string) int {
	if ch, err := getChannels(ifname); err == nil {
		if n := int(ch.CombinedCount + max(ch.RxCount, ch.TxCount)); n > 0 {
			return n
		}
	}
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0
	}
	return max(link.Attrs().NumRxQueues, link.Attrs().NumTxQueues)
}

func bindError(err error, ifindex int, ifname string, queue int, zc bool) error {
	switch {
	case errors.Is(err, unix.EINVAL):
		if n := deviceQueues(ifindex, ifname); n > 0 && queue >= n {
			return fmt.Errorf("afxdp: bind to %s queue %d: %w", ifname, queue, &QueueError{Ifname: ifname, Have: n, Want: queue + 1})
		}
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("afxdp: bind to %s queue %d: %w (another AF_XDP socket has owned this queue for %v)", ifname, queue, err, bindRetryFor)
	case errors.Is(err, unix.EOPNOTSUPP) && zc:
		return errNotSupported(fmt.Sprintf("afxdp: bind to %s queue %d in zero-copy mode (driver has no AF_XDP zero-copy; unset ZeroCopy)", ifname, queue), err)
	case errors.Is(err, unix.EOPNOTSUPP):
		return errNotSupported(fmt.Sprintf("afxdp: bind to %s queue %d", ifname, queue), err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("afxdp: bind to %s queue %d: %w (%w)", ifname, queue, err, ErrPermission)
	case errors.Is(err, unix.ENETDOWN):
		return fmt.Errorf("afxdp: bind to %s queue %d: %w (set the link up: ip link set %s up)", ifname, queue, err, ifname)
	}
	return fmt.Errorf("afxdp: bind to %s queue %d: %w", ifname, queue, err)
}

// raiseMemlock lifts RLIMIT_MEMLOCK where the process may: UMEM pages are
// charged to it unless the process has CAP_IPC_LOCK (root has).
func raiseMemlock() {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return
	}
	want := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if unix.Setrlimit(unix.RLIMIT_MEMLOCK, &want) != nil && lim.Max > lim.Cur {
		lim.Cur = lim.Max // the soft limit may always go up to the hard one
		_ = unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim)
	}
}

// sysKernel wakes the kernel with recvfrom/sendto on the socket.
type sysKernel struct{ fd int }

func (k sysKernel) wakeRx() error {
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(k.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 && errno != unix.EAGAIN && errno != unix.EBUSY {
		return errno
	}
	return nil
}

func (k sysKernel) wakeTx() error {
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(k.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0:
		return nil
	case unix.EAGAIN, unix.EBUSY:
		return errTxRetry
	}
	return errno
}
