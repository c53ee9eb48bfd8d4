package control

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Cred identifies the process on the other end of a unix socket, as the
// kernel recorded it at connect time (SO_PEERCRED).
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerCred returns the credentials of c's peer.
func PeerCred(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var uc *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return Cred{}, fmt.Errorf("peer credentials: getsockopt SO_PEERCRED: %w", serr)
	}
	return Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}

// RequireUID returns a check for Server handlers: it passes when the peer
// is root or one of uids, and otherwise returns an error that says who was
// refused.
func RequireUID(c *net.UnixConn, uids ...uint32) error {
	cred, err := PeerCred(c)
	if err != nil {
		return err
	}
	if cred.UID == 0 {
		return nil
	}
	for _, u := range uids {
		if cred.UID == u {
			return nil
		}
	}
	return fmt.Errorf("permission denied: uid %d (pid %d) may not use this op", cred.UID, cred.PID)
}
