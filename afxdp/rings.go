package afxdp

// Typed wrappers over prodRing/consRing, one per ring kind. Slot arrays
// live in the ring's shared mapping (or in a Go slice for fakes).

// xdpDesc mirrors struct xdp_desc (uapi/linux/if_xdp.h): the entry of the
// rx and tx rings. Layout is checked against x/sys/unix in a Linux test.
type xdpDesc struct {
	Addr    uint64 // UMEM offset of the frame data
	Len     uint32
	Options uint32 // XDP_TX_METADATA when the socket has tx metadata; no multi-buffer
}

// fillRing: user produces free rx frame addresses, the kernel consumes
// them to place received frames.
type fillRing struct {
	prodRing
	addrs []uint64 // len == size; slot i&mask written by user, read by kernel
}

// put publishes as many addrs as fit and returns how many.
func (r *fillRing) put(addrs []uint64) int {
	idx, n := r.reserve(uint32(len(addrs)))
	for i := uint32(0); i < n; i++ {
		r.addrs[(idx+i)&r.mask] = addrs[i]
	}
	if n > 0 {
		r.commit()
	}
	return int(n)
}

// compRing: the kernel produces addresses of transmitted tx frames, the
// user consumes them back into its free list.
type compRing struct {
	consRing
	addrs []uint64 // written by kernel, read by user
}

// get copies up to len(dst) completed addresses into dst, releases them
// to the kernel, and returns how many.
func (r *compRing) get(dst []uint64) int {
	idx, n := r.peek(uint32(len(dst)))
	for i := uint32(0); i < n; i++ {
		dst[i] = r.addrs[(idx+i)&r.mask]
	}
	if n > 0 {
		r.release()
	}
	return int(n)
}

// rxRing: the kernel produces received frame descriptors, the user
// consumes them.
type rxRing struct {
	consRing
	descs []xdpDesc // written by kernel, read by user
}

// get copies up to len(dst) descriptors and releases their ring slots (the
// frames themselves stay owned by the user until they go back on the
// fill ring).
func (r *rxRing) get(dst []Desc) int {
	idx, n := r.peek(uint32(len(dst)))
	for i := uint32(0); i < n; i++ {
		d := &r.descs[(idx+i)&r.mask]
		dst[i] = Desc{Addr: d.Addr, Len: d.Len}
	}
	if n > 0 {
		r.release()
	}
	return int(n)
}

// txRing: the user produces descriptors of frames to send, the kernel
// consumes them (and later reports them on the completion ring).
type txRing struct {
	prodRing
	descs []xdpDesc // written by user, read by kernel
}

// put publishes as many descs as fit, each with options, and returns how
// many.
func (r *txRing) put(descs []Desc, options uint32) int {
	idx, n := r.reserve(uint32(len(descs)))
	for i := uint32(0); i < n; i++ {
		r.descs[(idx+i)&r.mask] = xdpDesc{Addr: descs[i].Addr, Len: descs[i].Len, Options: options}
	}
	if n > 0 {
		r.commit()
	}
	return int(n)
}
