// Package afxdp is fsstack's AF_XDP layer: per-queue AF_XDP sockets with
// their own UMEM and rings, and the XDP program that steers fsstack's TCP
// segments to them. It knows nothing about netstack.
//
// # The protocol
//
// Each Socket owns a UMEM (an mmap'd area of NumFrames frames of FrameSize
// bytes) and four single-producer/single-consumer rings shared with the
// kernel:
//
//	fill (user -> kernel)   free rx frames the kernel may receive into
//	rx   (kernel -> user)   received frames (Desc: UMEM offset + length)
//	tx   (user -> kernel)   frames to send
//	comp (kernel -> user)   tx frames the kernel is done with
//
// An rx frame goes fill -> kernel -> rx -> caller (Receive) -> fill
// (Release). A tx frame goes free list -> caller (TxFrame) -> tx (Submit)
// -> kernel -> comp -> free list (reaped by Submit, TxFrame and Flush).
// The first half of the UMEM holds rx frames, the second half tx frames,
// so the RX and TX sides of a Socket share no state and can run on two
// goroutines.
//
// The socket is bound with XDP_USE_NEED_WAKEUP: the kernel sets a flag on
// the fill or tx ring when it will not look at that ring again until
// woken, and the Socket then wakes it (recvfrom for fill, sendto for tx).
// In copy mode (veth, virtio) the kernel only transmits inside sendto, at
// most 32 frames per call unless XDP_MAX_TX_SKB_BUDGET raises that (Open
// asks for a whole ring); Submit keeps kicking until the tx ring drains or
// the kernel stops making progress. poll(2) on FD also transmits in copy
// mode, and Flush retries what a busy device left on the ring.
//
// # Steering
//
// A Socket only receives frames that an XDP program on its interface
// redirects into an XSKMAP entry for the socket's queue; a frame
// redirected to a socket of another queue is dropped by the kernel. The
// Steering program redirects a TCP segment to XSKMAP[rx_queue_index] when
// its destination address is owned (AddAddr) and its destination port is
// owned on that address or on all owned addresses (AddPort), or lies in
// the ephemeral range (SetEphemeralRange). Everything else, and every
// segment of a queue without a socket, goes on to the kernel (XDP_PASS),
// so ARP, ICMP, SSH and unrelated TCP keep working. The program is
// attached as a BPF link: if the process dies the kernel detaches it and
// takes all traffic back.
//
// # Namespaces
//
// Open and Attach resolve the interface index in the calling thread's
// network namespace; call them on a thread switched into the interface's
// namespace (internal/netlab.Do) when it is not the process's own. The
// socket and the link stay bound to the interface afterwards.
package afxdp

// BUG(afxdp): Multi-buffer frames (XDP_USE_SG) are not supported: an rx
// frame must fit in FrameSize-256 bytes (1792 by default, MTU 1778);
// larger ones are dropped by the kernel and counted in RxDropped. Set
// FrameSize to 4096 for MTUs up to 3826.

// BUG(afxdp): On veth a kernel sender picks its tx queue, and so the
// receiving queue, by a flow hash with a random key: which shard gets a
// flow cannot be predicted from its ports. A frame an AF_XDP socket sends
// on queue q does arrive on the peer's rx queue q.

// BUG(afxdp): In generic (skb) mode a kernel peer's TSO/GSO segments
// reach the program as one large skb that does not fit in a UMEM frame
// and is dropped (RxDropped). Native mode on veth turns GSO off on the
// peer while the program is attached; in generic mode turn tx checksum
// offload (and so TSO) off on the sender, as internal/netlab does by
// default. Measured on Linux 6.18 veth: generic mode with the peer's
// offloads on delivered 2 of 12 segments of a bulk write.

// BUG(afxdp): Closing a Socket takes 5-10 ms (the kernel waits for an RCU
// grace period) and the kernel frees the queue some 20 ms later; Open
// retries bind on EBUSY for up to a second to cover that.

// BUG(afxdp): Only TCP segments are steered. ICMP errors about fsstack's
// connections (fragmentation needed, port unreachable) go to the kernel,
// which has no matching socket, so path MTU discovery does not reach
// fsstack; IP fragments of owned traffic go to the kernel too.
