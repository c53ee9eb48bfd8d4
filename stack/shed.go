package stack

import (
	"log/slog"
	"time"
)

// Shedding SYNs when a shard falls behind (afxdp/steering.go).
//
// The kernel delivers a frame to a shard's AF_XDP socket only into a free
// frame from its fill ring; with none left it drops the frame, whatever it
// carries. Under a SYN flood on a busy machine that happened to a quarter
// of the frames in the lab, and not only to the flood's: a legitimate
// client's final ACK of a handshake answered with a SYN cookie was lost
// with them, which leaves the server without a trace of a connection the
// client believes open (a client waiting for the server to speak first
// waits forever). So each shard publishes its fill ring's level after
// every receive pass (afxdp.ShedGauge), and the steering program drops the
// SYNs without ACK arriving on its queue while fewer than a quarter of its
// receive frames are left, counting from the frames it steered since: it
// keeps the last ones for the segments of connections open or completing
// their handshake even while the shard is not running. A legitimate SYN
// dropped costs its client a retransmission (1 s, then 3 s), as a SYN
// dropped by an overloaded kernel does; a shard that keeps up never sheds.

// shedLowShare is the share of a shard's receive frames kept for segments
// other than new connections' SYNs: 1/4.
const shedLowShare = 4

// shedLogEvery bounds the "shedding" log lines: one at most each 10 s.
const shedLogEvery = 10 * time.Second

// shedLog reports, from the shard's sweep, that its queue shed SYNs.
type shedLog struct {
	seen     uint64 // SYNs shed at the last look
	loggedAt time.Time
	logged   uint64 // SYNs shed at the last line
}

// look logs a line when shed grew since the last look and no line was
// logged for shedLogEvery.
func (l *shedLog) look(now time.Time, shed uint64, log *slog.Logger, shard int) {
	if shed == l.seen {
		return
	}
	l.seen = shed
	if now.Sub(l.loggedAt) < shedLogEvery {
		return
	}
	log.Warn("shard falls behind: dropping new connections' SYNs on its queue while its receive frames run out (a SYN flood?)",
		"shard", shard, "syns_shed", shed-l.logged)
	l.loggedAt, l.logged = now, shed
}
