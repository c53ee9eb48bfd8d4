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
// -> kernel -> comp -> free list (reaped by TxFrame). The first half of
// the UMEM holds rx frames, the second half tx frames, so the RX and TX
// sides of a Socket share no state and can run on two goroutines.
//
// The socket is bound with XDP_USE_NEED_WAKEUP: the kernel sets a flag on
// the fill or tx ring when it will not look at that ring again until
// woken, and the Socket then wakes it (recvfrom for fill, sendto for tx).
// In copy mode (veth, virtio) the kernel only transmits inside sendto, at
// most 32 frames per call; Submit keeps kicking until the tx ring drains
// or the kernel stops making progress.
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
