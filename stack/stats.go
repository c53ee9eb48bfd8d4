package stack

// ShardStats are the counters of one shard.
type ShardStats struct {
	Shard      int    `json:"shard"`
	Queue      int    `json:"queue"`
	CPU        int    `json:"cpu"`         // the CPU the shard's receive goroutine is pinned to; -1: none
	RxPackets  uint64 `json:"rx_packets"`  // frames taken from this shard's AF_XDP socket
	TxPackets  uint64 `json:"tx_packets"`  // frames sent through this shard's AF_XDP socket
	RxDropped  uint64 `json:"rx_dropped"`  // frames dropped as malformed or not ours
	TxDropped  uint64 `json:"tx_dropped"`  // frames that could not be sent (no frame, no neighbour)
	Accepted   uint64 `json:"accepted"`    // passive opens completed on this shard
	Connected  uint64 `json:"connected"`   // active opens completed on this shard
	Handoffs   uint64 `json:"handoffs"`    // segments passed to another shard
	HandoffsIn uint64 `json:"handoffs_in"` // segments received from another shard
	Open       int64  `json:"open"`        // connections open now
	Resets     uint64 `json:"resets"`      // RSTs sent
	// Retransmits counts segments sent again; Timeouts counts expiries of
	// the retransmission timer (a segment or its ACK lost, then waited a
	// whole RTO for: at least 200 ms of a request's latency each).
	Retransmits uint64 `json:"retransmits"`
	Timeouts    uint64 `json:"rto_timeouts"`
	Wakeups     uint64 `json:"wakeups"` // times the shard slept and woke
	// MissedWakeups counts the shard's sleeps that ended on their timer
	// and found frames that the socket's readiness notification had not
	// woken it for (shard_linux.go, napMin).
	MissedWakeups uint64 `json:"missed_wakeups"`
	// TxWaits counts transmits that found every tx frame in flight, or
	// the tx ring without room, and waited for the kernel to give some
	// back (backpressure; TxDropped counts those that waited in vain).
	// TxKicks counts sendto wake-ups.
	TxWaits uint64 `json:"tx_waits"`
	// TxHeld counts packets held while the kernel resolved their next
	// hop, then sent (or, after 3 s unresolved, counted in TxDropped).
	TxHeld  uint64 `json:"tx_held"`
	TxKicks uint64 `json:"tx_kicks"`

	// Under a SYN flood: SYN-ACKs sent as SYN cookies because the listen
	// queue was full, SYNs and final ACKs dropped because the accept queue
	// was full, claims of unanswered SYNs forgotten to make room in the
	// flow directory, SYNs served without a claim because no room could
	// be made (their later segments are not handed over), and half-open
	// connections aborted because their handshake did not complete in 7 s
	// while a listener overflowed (stack/halfopen.go), and SYNs the
	// steering program dropped while the shard's receive frames ran out
	// (stack/shed.go).
	SynCookies     uint64 `json:"syn_cookies"`
	ListenDrops    uint64 `json:"listen_drops"`
	FlowsEvicted   uint64 `json:"flows_evicted"`
	FlowsUntracked uint64 `json:"flows_untracked"`
	HalfOpenPruned uint64 `json:"half_open_pruned"`
	SynShed        uint64 `json:"syn_shed"`

	// The shard's time-wait table (timewait.go): connections it keeps in
	// TIME_WAIT after netstack let their endpoints go (a gauge), ACKs it
	// sent for them (a peer that did not get our last ACK), and
	// connections closed without the rest of their TIME_WAIT because the
	// table was full.
	TimeWait         int64  `json:"time_wait"`
	TimeWaitAcks     uint64 `json:"time_wait_acks"`
	TimeWaitOverflow uint64 `json:"time_wait_overflow"`

	// The kernel's view of the shard's AF_XDP socket (XDP_STATISTICS):
	// frames it could not deliver because the rx ring was full or the fill
	// ring had no free frame. Non-zero means the shard fell behind.
	XSKRxDropped  uint64 `json:"xsk_rx_dropped"`
	XSKRxRingFull uint64 `json:"xsk_rx_ring_full"`
	XSKFillEmpty  uint64 `json:"xsk_fill_empty"`
	XSKTxInvalid  uint64 `json:"xsk_tx_invalid"`
}
