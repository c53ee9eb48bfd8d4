package stack

import (
	"errors"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

var (
	errnoAddrNotAvail = syscall.EADDRNOTAVAIL
	errnoAddrInUse    = syscall.EADDRINUSE
	errnoHostUnreach  = syscall.EHOSTUNREACH
)

// translate turns a netstack error into a Go error that errors.Is
// matches against the errno the kernel would have returned. It is the one
// place where tcpip.Error crosses into the rest of fsstack (the shim maps
// the same errnos to the application).
func translate(err tcpip.Error) error {
	if err == nil {
		return nil
	}
	if e, ok := errnoOf(err); ok {
		return &netstackError{msg: err.String(), errno: e}
	}
	return errors.New(err.String())
}

// netstackError carries netstack's message and the matching errno.
type netstackError struct {
	msg   string
	errno syscall.Errno
}

func (e *netstackError) Error() string { return e.errno.Error() }
func (e *netstackError) Unwrap() error { return e.errno }
func (e *netstackError) Timeout() bool { return e.errno == syscall.ETIMEDOUT }

// Errno returns the errno matching a netstack error, for the shim.
func Errno(err tcpip.Error) syscall.Errno {
	if e, ok := errnoOf(err); ok {
		return e
	}
	return syscall.EIO
}

func errnoOf(err tcpip.Error) (syscall.Errno, bool) {
	switch err.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED, true
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET, true
	case *tcpip.ErrConnectionAborted:
		return syscall.ECONNABORTED, true
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT, true
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH, true
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH, true
	case *tcpip.ErrPortInUse, *tcpip.ErrDuplicateAddress:
		return syscall.EADDRINUSE, true
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL, true
	case *tcpip.ErrWouldBlock:
		return syscall.EAGAIN, true
	case *tcpip.ErrClosedForSend:
		return syscall.EPIPE, true
	case *tcpip.ErrNotConnected:
		return syscall.ENOTCONN, true
	case *tcpip.ErrAlreadyConnected:
		return syscall.EISCONN, true
	case *tcpip.ErrAlreadyConnecting, *tcpip.ErrConnectStarted:
		return syscall.EALREADY, true
	case *tcpip.ErrInvalidEndpointState:
		return syscall.EINVAL, true
	case *tcpip.ErrInvalidOptionValue:
		return syscall.EINVAL, true
	case *tcpip.ErrNoBufferSpace:
		return syscall.ENOBUFS, true
	case *tcpip.ErrAborted:
		return syscall.EPIPE, true
	}
	return 0, false
}
