package stack

import (
	"time"
)

// Delayed ACK, done where fsstack can do it: in the link endpoint.
//
// netstack acknowledges every segment it receives at once, so a request
// that the application answers a moment later costs two packets (the ACK,
// then the answer carrying the same ACK) where Linux sends one. The link
// endpoint holds such a pure ACK, already written into its UMEM frame, for
// up to DelayedACK:
//
//	pure ACK (no data, no SYN/FIN/RST, no SACK block), none held for its flow
//	     --> held (frame reserved, not posted)
//	later segment of the flow carrying data, FIN or RST, ack >= held ack
//	     --> held ACK dropped: the segment carries it
//	later pure ACK of the flow
//	     --> newer ack: held one dropped, new one sent at once (an ACK at
//	         least every second segment, as Linux's delayed ACK)
//	     --> same ack (a duplicate: the peer counts them): both sent
//	deadline --> the shard loop sends it (releaseAcks)
//
// Nothing is lost by holding: an ACK only ever gives way to a later
// segment of the same flow that acknowledges as much, and otherwise leaves
// within DelayedACK. Duplicate ACKs that signal loss carry SACK blocks
// (fsstack negotiates SACK) and are never held.

// ackHolder is the link endpoint's table of held ACKs. Guarded by txMu.
type ackHolder struct {
	delay   time.Duration // 0: holding is off
	byFlow  map[flowKey]heldAck
	newHold bool // an ACK was held while none was, during this WritePackets
	// queue lists holds in the order they were made, which is deadline
	// order (every hold waits the same delay): releaseAcks pops the
	// expired ones from the front, in time proportional to them, not to
	// the table. An entry whose flow's hold has since gone (carried by a
	// segment, replaced) or been renewed is skipped (seq differs).
	queue []queuedAck
	head  int    // queue[head:] are live entries
	seq   uint64 // numbers holds
}

type heldAck struct {
	token    uint64
	len      uint32
	ack      uint32
	deadline int64 // UnixNano
	seq      uint64
}

type queuedAck struct {
	flow     flowKey
	deadline int64
	seq      uint64
}

// tcpFrame is what queueFrameLocked needs of a frame it is about to post.
type tcpFrame struct {
	flow    flowKey
	flags   uint8
	ack     uint32
	pureAck bool // ACK only, no payload, no SACK option
}

// parseTCPFrame reads a frame the link endpoint just wrote (Ethernet,
// IPv4, TCP) with the receive path's parser: its flow key is seen from
// the peer's side, the same for every frame of the flow, which is all a
// key must be here. ok is false for anything else.
func parseTCPFrame(f []byte) (t tcpFrame, ok bool) {
	info, ok := parseSegment(f)
	if !ok {
		return t, false
	}
	tcp := f[info.tcpStart : info.ipStart+info.ipLength]
	t.flow, t.flags, t.ack = info.flow, info.flags, info.ack
	t.pureAck = t.flags == tcpFlagAck && info.tcpLen == len(tcp) && !hasSACK(tcp[tcpMinHeader:info.tcpLen])
	return t, true
}

// hasSACK reports whether TCP options carry a SACK block (kind 5).
func hasSACK(opts []byte) bool {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0: // end of options
			return false
		case 1: // NOP
			i++
			continue
		case 5:
			return true
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return true // malformed: do not hold
		}
		i += int(opts[i+1])
	}
	return false
}

// seqGEQ reports a >= b in sequence space.
func seqGEQ(a, b uint32) bool { return int32(a-b) >= 0 }

// queueFrameLocked adds a written frame to the batch to post, holding it
// back if it is a pure ACK that a later segment may carry. frame is the
// whole frame; token its UMEM frame.
func (e *linkEndpoint) queueFrameLocked(frame []byte, token uint64) {
	if e.dropTx != nil && e.dropTx(frame) {
		e.tx.cancel([]uint64{token})
		return
	}
	h := &e.acks
	if h.delay <= 0 {
		e.appendLocked(token, uint32(len(frame)))
		return
	}
	t, ok := parseTCPFrame(frame)
	if !ok {
		e.appendLocked(token, uint32(len(frame)))
		return
	}
	if held, found := h.byFlow[t.flow]; found {
		switch {
		case t.pureAck && t.ack == held.ack:
			// A duplicate ACK: the peer counts them, send both.
			e.appendLocked(held.token, held.len)
		case t.flags&tcpFlagSyn == 0 && (t.flags&tcpFlagAck == 0 || seqGEQ(t.ack, held.ack)):
			// This segment acknowledges as much (or resets the flow):
			// it carries the held ACK.
			e.tx.cancel([]uint64{held.token})
		default:
			e.appendLocked(held.token, held.len)
		}
		delete(h.byFlow, t.flow)
		e.heldAcks.Store(int32(len(h.byFlow)))
		e.appendLocked(token, uint32(len(frame)))
		return
	}
	if !t.pureAck {
		e.appendLocked(token, uint32(len(frame)))
		return
	}
	if h.byFlow == nil {
		h.byFlow = make(map[flowKey]heldAck)
	}
	if len(h.byFlow) == 0 {
		h.newHold = true
	}
	h.seq++
	deadline := time.Now().Add(h.delay).UnixNano()
	h.byFlow[t.flow] = heldAck{token: token, len: uint32(len(frame)), ack: t.ack, deadline: deadline, seq: h.seq}
	if h.head > 0 && h.head >= len(h.queue)/2 {
		// Reuse the consumed front of the slice.
		n := copy(h.queue, h.queue[h.head:])
		h.queue, h.head = h.queue[:n], 0
	}
	h.queue = append(h.queue, queuedAck{flow: t.flow, deadline: deadline, seq: h.seq})
	e.heldAcks.Store(int32(len(h.byFlow)))
}

func (e *linkEndpoint) appendLocked(token uint64, n uint32) {
	e.tokens = append(e.tokens, token)
	e.lens = append(e.lens, n)
}

// releaseAcks posts the held ACKs whose deadline has passed (all of them
// if all is set) and kicks the kernel for them. It returns the earliest
// deadline still held, or 0 when none is. Any goroutine.
func (e *linkEndpoint) releaseAcks(now int64, all bool) (next int64) {
	next = e.postDueAcks(now, all)
	e.flushTx()
	return next
}

// postDueAcks is releaseAcks without the kick: the shard loop posts the
// due ACKs before its own kick, so that one sendto carries them with the
// pass's other frames.
func (e *linkEndpoint) postDueAcks(now int64, all bool) (next int64) {
	if e.heldAcks.Load() == 0 {
		return 0
	}
	e.txMu.Lock()
	e.tokens = e.tokens[:0]
	e.lens = e.lens[:0]
	h := &e.acks
	for h.head < len(h.queue) {
		q := h.queue[h.head]
		held, ok := h.byFlow[q.flow]
		if !ok || held.seq != q.seq {
			h.head++ // that hold is gone or was renewed
			continue
		}
		if !all && q.deadline > now {
			next = q.deadline
			break
		}
		e.appendLocked(held.token, held.len)
		delete(h.byFlow, q.flow)
		h.head++
	}
	if h.head == len(h.queue) {
		h.queue, h.head = h.queue[:0], 0
	}
	e.heldAcks.Store(int32(len(h.byFlow)))
	if len(e.tokens) > 0 {
		e.postLocked()
	}
	e.txMu.Unlock()
	return next
}
