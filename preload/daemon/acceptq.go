package daemon

import "net"

// acceptQueue holds a listener's accepted connections, one FIFO per shard
// of the backend (one for the kernel), so that ACCEPT can serve a worker
// from its own CPU's shard first (Fastsocket's local listen table) and
// from the others only when that one is empty, so nothing is stranded.
//
// Guarded by the owning socket's mu.
type acceptQueue struct {
	qs   [][]net.Conn
	n    int // total queued
	next int // where a caller without a CPU starts, rotating
}

// shardedListener is a backend listener with per-shard accept queues
// (*stack.Listener).
type shardedListener interface{ Shards() int }

// shardedConn is a backend conn that knows its shard (*stack.Conn).
type shardedConn interface{ Shard() int }

func (q *acceptQueue) init(ln net.Listener) {
	shards := 1
	if sl, ok := ln.(shardedListener); ok && sl.Shards() > 1 {
		shards = sl.Shards()
	}
	q.qs, q.n, q.next = make([][]net.Conn, shards), 0, 0
}

func (q *acceptQueue) len() int { return q.n }

func (q *acceptQueue) shardOf(c net.Conn) int {
	if sc, ok := c.(shardedConn); ok && len(q.qs) > 0 {
		if s := sc.Shard(); s >= 0 {
			return s % len(q.qs)
		}
	}
	return 0
}

func (q *acceptQueue) push(c net.Conn) {
	s := q.shardOf(c)
	q.qs[s] = append(q.qs[s], c)
	q.n++
}

// pushFront puts back a connection that could not be handed out.
func (q *acceptQueue) pushFront(c net.Conn) {
	s := q.shardOf(c)
	q.qs[s] = append([]net.Conn{c}, q.qs[s]...)
	q.n++
}

// pop takes a connection, from shard cpu % shards first when cpu >= 0.
// It returns the shard it came from.
func (q *acceptQueue) pop(cpu int) (net.Conn, int, bool) {
	if q.n == 0 {
		return nil, 0, false
	}
	shards := len(q.qs)
	start := q.next % shards
	if cpu >= 0 {
		start = cpu % shards
	} else {
		q.next++
	}
	for i := range shards {
		s := (start + i) % shards
		if len(q.qs[s]) > 0 {
			c := q.qs[s][0]
			q.qs[s][0] = nil
			q.qs[s] = q.qs[s][1:]
			q.n--
			return c, s, true
		}
	}
	return nil, 0, false
}

// drain resets every queued connection, as the kernel does to the accept
// queue of a listener that closes.
func (q *acceptQueue) drain() {
	for i, s := range q.qs {
		for _, c := range s {
			if l, ok := c.(lingerer); ok {
				l.SetLinger(0)
			}
			c.Close()
		}
		q.qs[i] = nil
	}
	q.n = 0
}
