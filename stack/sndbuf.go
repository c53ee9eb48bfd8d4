package stack

import "sync/atomic"

// Send buffers sized like the kernel's, under a stack-wide budget.
//
// A kernel socket's send buffer grows to megabytes (tcp_wmem), so a
// server's response of a megabyte or so leaves the server for the socket
// at once even when the client reads slowly, and a server that then lets
// go of the connection (haproxy releasing idle connections on a reload)
// has nothing left to lose. netstack grows a send buffer with the
// congestion window only, which a slow reader keeps small. So each
// connection starts with Config.SendBufferMax, drawn from a budget the
// whole stack shares (Config.SendBudget, as the kernel's tcp_mem bounds
// all sockets together); when the budget is spent, new connections start
// with Config.SendBuffer. A connection gives its share back when it
// closes. The budget counts what buffers may hold, not what they hold:
// slow readers together can pin no more than it.

// sendBudget is the bytes of send buffer above Config.SendBuffer the
// stack may still grant.
type sendBudget struct {
	left atomic.Int64
}

// take reserves n bytes and reports whether it could.
func (b *sendBudget) take(n int64) bool {
	for {
		left := b.left.Load()
		if left < n {
			return false
		}
		if b.left.CompareAndSwap(left, left-n) {
			return true
		}
	}
}

func (b *sendBudget) give(n int64) { b.left.Add(n) }

// sizeSendBuffer gives a new connection the large send buffer if the
// budget allows.
func (c *Conn) sizeSendBuffer() {
	sh := c.shard
	if sh == nil || sh.sndBudget == nil || sh.sndMax <= sh.sndBase {
		return
	}
	extra := sh.sndMax - sh.sndBase
	if !sh.sndBudget.take(extra) {
		return
	}
	// Without notify, netstack's own tuning stays on (it only grows).
	c.ep.SocketOptions().SetSendBufferSize(sh.sndMax, false)
	c.sndGrant.Store(extra)
}

// releaseSendBuffer gives the connection's share back.
func (c *Conn) releaseSendBuffer() {
	if g := c.sndGrant.Swap(0); g > 0 {
		c.shard.sndBudget.give(g)
	}
}

// Close closes the connection and gives its send-buffer share back.
func (c *Conn) Close() error {
	err := c.closeEndpoint()
	c.releaseSendBuffer()
	return err
}
