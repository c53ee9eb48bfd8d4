//go:build linux

package afxdp

// The only file of the package that converts between pointers and shared
// memory: struct socket options and ring views over mmap'd memory.

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Compile-time layout checks: xdpDesc must match struct xdp_desc.
var (
	_ [unsafe.Sizeof(unix.XDPDesc{}) - unsafe.Sizeof(xdpDesc{})]struct{}
	_ [unsafe.Sizeof(xdpDesc{}) - unsafe.Sizeof(unix.XDPDesc{})]struct{}
	_ [unsafe.Offsetof(unix.XDPDesc{}.Len) - unsafe.Offsetof(xdpDesc{}.Len)]struct{}
)

func getsockoptStruct(fd, opt int, p unsafe.Pointer, size uintptr) (uintptr, error) {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, errno
	}
	return uintptr(l), nil
}

func setsockoptStruct(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt),
		uintptr(p), size, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func getMmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	n, err := getsockoptStruct(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off))
	if err != nil {
		return off, err
	}
	if n != unsafe.Sizeof(off) {
		// Pre-5.4 layout without the flags field; need_wakeup needs 5.4.
		return off, fmt.Errorf("xdp_mmap_offsets of %d bytes (kernel before 5.4)", n)
	}
	return off, nil
}

func registerUMEM(fd int, mem []byte, frameSize int, txMeta uint32) error {
	if txMeta != 0 {
		// struct xdp_umem_reg as of Linux 6.8, flags as of 6.11.
		reg := struct {
			Addr, Len                     uint64
			Size, Headroom, Flags, TxMeta uint32
		}{
			Addr:   uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem)))),
			Len:    uint64(len(mem)),
			Size:   uint32(frameSize),
			Flags:  xdpUmemTxMetadataLen,
			TxMeta: txMeta,
		}
		return setsockoptStruct(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg))
	}
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem)))),
		Len:  uint64(len(mem)),
		Size: uint32(frameSize),
	}
	return setsockoptStruct(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg))
}

func getStatistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	_, err := getsockoptStruct(fd, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	return st, err
}

// ringFromMem builds the shared part of a ring over its mapping.
func ringFromMem(mem []byte, off unix.XDPRingOffset, size uint32) ringShared {
	return ringShared{
		producer: (*uint32)(unsafe.Pointer(&mem[off.Producer])),
		consumer: (*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		flags:    (*uint32)(unsafe.Pointer(&mem[off.Flags])),
		mask:     size - 1,
		size:     size,
	}
}

func addrSlots(mem []byte, off unix.XDPRingOffset, size uint32) []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Desc])), size)
}

func descSlots(mem []byte, off unix.XDPRingOffset, size uint32) []xdpDesc {
	return unsafe.Slice((*xdpDesc)(unsafe.Pointer(&mem[off.Desc])), size)
}

const (
	sizeofAddr = 8  // fill/completion ring entry
	sizeofDesc = 16 // struct xdp_desc
)

// ethtoolChannels is struct ethtool_channels.
type ethtoolChannels struct {
	Cmd                                         uint32
	MaxRx, MaxTx, MaxOther, MaxCombined         uint32
	RxCount, TxCount, OtherCount, CombinedCount uint32
}

const ethtoolGChannels = 0x3c // ETHTOOL_GCHANNELS

// ifreqData is struct ifreq with ifr_data.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// getChannels reads the device's active channels (ethtool -l) in the
// calling thread's network namespace.
func getChannels(ifname string) (ethtoolChannels, error) {
	ch := ethtoolChannels{Cmd: ethtoolGChannels}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ch, err
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	ifr.data = unsafe.Pointer(&ch)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&ch)
	if errno != 0 {
		return ch, errno
	}
	return ch, nil
}

// shedMapping is the shed map's values mapped into memory. The Steering
// and each gauge hold a reference; the last to let go unmaps it (a shard
// may still publish while the steering closes).
type shedMapping struct {
	mu   sync.Mutex
	b    []byte
	refs int
}

// mapShed maps the shed array (queues values) of the map fd, with one
// reference.
func mapShed(fd, queues int) (*shedMapping, error) {
	size := queues * shedValueSize
	page := unix.Getpagesize()
	size = (size + page - 1) / page * page
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return &shedMapping{b: b, refs: 1}, nil
}

// hold takes a reference; it reports false once the mapping is gone.
func (m *shedMapping) hold() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refs == 0 {
		return false
	}
	m.refs++
	return true
}

// release drops a reference and unmaps with the last.
func (m *shedMapping) release() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refs == 0 {
		return nil
	}
	if m.refs--; m.refs > 0 {
		return nil
	}
	b := m.b
	m.b = nil
	return unix.Munmap(b)
}

// value returns queue's value in the mapping.
func (m *shedMapping) value(queue int) *shedValue {
	return (*shedValue)(unsafe.Pointer(&m.b[queue*shedValueSize]))
}

// Compile-time layout checks: shedValue's size and every offset the
// program uses.
var (
	_ [unsafe.Sizeof(shedValue{}) - shedValueSize]struct{}
	_ [shedValueSize - unsafe.Sizeof(shedValue{})]struct{}
	_ [unsafe.Offsetof(shedValue{}.Taken) - shedTaken]struct{}
	_ [shedTaken - unsafe.Offsetof(shedValue{}.Taken)]struct{}
	_ [unsafe.Offsetof(shedValue{}.Shed) - shedShed]struct{}
	_ [shedShed - unsafe.Offsetof(shedValue{}.Shed)]struct{}
	_ [unsafe.Offsetof(shedValue{}.Low) - shedLow]struct{}
	_ [shedLow - unsafe.Offsetof(shedValue{}.Low)]struct{}
	_ [unsafe.Offsetof(shedValue{}.Avail) - shedAvail]struct{}
	_ [shedAvail - unsafe.Offsetof(shedValue{}.Avail)]struct{}
	_ [unsafe.Offsetof(shedValue{}.Mark) - shedMark]struct{}
	_ [shedMark - unsafe.Offsetof(shedValue{}.Mark)]struct{}
)
