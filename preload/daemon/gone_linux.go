package daemon

import "golang.org/x/sys/unix"

// reapGoneClients releases the listeners of every other client whose
// process has exited, as watchConn does once its goroutine runs. A process
// that exits closes its control connection (and, on the kernel, its
// sockets) before its parent's waitpid returns, so a parent that connects
// right after reaping a child must be refused by a listener the child alone
// held; on a loaded daemon watchConn can run after that connect is served
// (t_fork's "a listener the parent closed, served by the child" connected
// now and then). The hang-up is already on the control connection when the
// connect request arrives, so one poll per client finds it.
func (d *Daemon) reapGoneClients(self *client) {
	d.mu.Lock()
	others := make([]*client, 0, len(d.clients))
	for _, c := range d.clients {
		if c != self {
			others = append(others, c)
		}
	}
	d.mu.Unlock()
	for _, c := range others {
		if c.hungUp() {
			c.stop(nil)
			c.releaseListeners()
		}
	}
}

// hungUp reports whether the shim closed its end of the control connection.
func (c *client) hungUp() bool {
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(pfd, 0); err == nil && n > 0 {
			gone = pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
		}
	})
	return gone
}
