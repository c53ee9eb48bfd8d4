package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// errnoOf translates an error from a Backend into the errno the shim
// reports. It is the one place where that translation happens. Backends
// wrap errnos (the kernel's net package as *os.SyscallError, the stack's
// conns, listeners and dials through stack/errors.go), so nothing here
// matches error text; anything else is EIO.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return syscall.ETIMEDOUT
	case errors.Is(err, context.Canceled):
		return syscall.ECONNABORTED
	case errors.Is(err, net.ErrClosed):
		return syscall.EBADF
	case errors.Is(err, io.EOF):
		return syscall.ECONNRESET
	}
	return syscall.EIO
}

// neg returns -errno as a completion result.
func neg(e syscall.Errno) int32 { return -int32(e) }

// errnoOfRead is the so_error for a failed receive.
func errnoOfRead(err error) syscall.Errno {
	if e := errnoOf(err); e != syscall.EIO && e != syscall.EBADF {
		return e
	}
	return syscall.ECONNRESET
}

// errnoOfWrite is the so_error for a failed send.
func errnoOfWrite(err error) syscall.Errno {
	if e := errnoOf(err); e != syscall.EIO && e != syscall.EBADF {
		return e
	}
	return syscall.EPIPE
}
