//go:build !linux

package control

import (
	"errors"
	"net"
)

// Cred identifies the process on the other end of a unix socket.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

var errNoPeerCred = errors.New("control: SO_PEERCRED is not supported on this system")

// PeerCred is not supported on this system.
func PeerCred(c *net.UnixConn) (Cred, error) { return Cred{}, errNoPeerCred }

// RequireUID is not supported on this system.
func RequireUID(c *net.UnixConn, uids ...uint32) error { return errNoPeerCred }
