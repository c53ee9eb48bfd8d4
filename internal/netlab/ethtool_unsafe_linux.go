//go:build linux

package netlab

// The legacy ethtool ioctl for tx checksum offload: the only unsafe code in
// the package (the ioctl argument carries a pointer).

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd, data uint32
}

// ifreqData is struct ifreq with ifr_data.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// txChecksum gets (set == nil) or sets tx checksum offload of ifname in
// the calling thread's network namespace.
func txChecksum(ifname string, set *bool) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: unix.ETHTOOL_GTXCSUM}
	if set != nil {
		v.cmd = unix.ETHTOOL_STXCSUM
		if *set {
			v.data = 1
		}
	}
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], ifname)
	ifr.data = unsafe.Pointer(&v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&v)
	if errno != 0 {
		return false, fmt.Errorf("ethtool ioctl %#x on %s: %w", v.cmd, ifname, errno)
	}
	return v.data != 0, nil
}
