package afxdp

import (
	"errors"
	"fmt"
)

// ErrNotSupported is matched (errors.Is) by every error that means the
// kernel, the device or the platform lacks a feature: AF_XDP itself, XDP
// on the device, zero-copy, busy polling, BPF links.
var ErrNotSupported = errors.New("not supported")

// ErrPermission is matched by errors caused by missing privileges.
var ErrPermission = errors.New("run as root or with CAP_NET_ADMIN,CAP_BPF (CAP_NET_RAW too for AF_XDP sockets)")

// ErrQueues is matched when the device has fewer queues than asked for.
var ErrQueues = errors.New("device has too few queues")

// QueueError says a device has fewer queues than needed, and how to fix it.
type QueueError struct {
	Ifname string
	Have   int // queues the device has (rx, real)
	Want   int // queues asked for
}

func (e *QueueError) Error() string {
	return fmt.Sprintf("%s has %d queues, %d needed: add queues with 'ethtool -L %s combined %d' "+
		"(for veth, recreate the pair with 'numrxqueues %d numtxqueues %d' on both ends)",
		e.Ifname, e.Have, e.Want, e.Ifname, e.Want, e.Want, e.Want)
}

func (e *QueueError) Is(target error) bool { return target == ErrQueues }

// notSupported wraps err (which may be nil) so it also matches
// ErrNotSupported, with a message.
type notSupportedError struct {
	msg string
	err error
}

func (e *notSupportedError) Error() string {
	if e.err == nil {
		return e.msg + ": " + ErrNotSupported.Error()
	}
	return e.msg + ": " + e.err.Error()
}

func (e *notSupportedError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrNotSupported}
	}
	return []error{e.err, ErrNotSupported}
}

func errNotSupported(msg string, err error) error { return &notSupportedError{msg: msg, err: err} }
