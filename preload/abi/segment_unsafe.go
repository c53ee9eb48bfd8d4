package abi

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// SegMagic is the first 8 bytes of a segment ("FSSTACK\0").
var SegMagic = [8]byte{'F', 'S', 'S', 'T', 'A', 'C', 'K', 0}

// Segment is a view of one client's shared memory segment. It does not own
// the memory: whoever mapped it unmaps it, after every user of the view
// (and of the rings and FIFOs made from it) is gone.
type Segment struct {
	mem    []byte
	Layout Layout
	Off    Offsets
}

// InitSegment writes a fresh header for layout l into mem (which must be
// zeroed, page aligned, and at least l.Offsets().Size long) and returns the
// view. It is the daemon's side of attach.
func InitSegment(mem []byte, l Layout, clientID uint32, pid int32) (*Segment, error) {
	l = l.WithDefaults()
	if err := l.Validate(); err != nil {
		return nil, err
	}
	o := l.Offsets()
	if uint64(len(mem)) < o.Size {
		return nil, fmt.Errorf("init shim segment: %d bytes mapped, layout needs %d", len(mem), o.Size)
	}
	if uintptr(unsafe.Pointer(&mem[0]))%4096 != 0 {
		return nil, fmt.Errorf("init shim segment: memory is not page aligned")
	}
	s := &Segment{mem: mem[:o.Size], Layout: l, Off: o}
	h := s.Hdr()
	h.Magic = SegMagic
	h.Abi_version = ABIVersion
	h.Hdr_size = SizeofSegHdr
	h.Seg_size = o.Size
	h.Client_id = clientID
	h.Pid = pid
	h.Req_off, h.Cmpl_off = o.Req, o.Cmpl
	h.Ready_map_off, h.Kick_map_off = o.ReadyMap, o.KickMap
	h.Sock_off, h.Fifo_off = o.Sock, o.FIFO
	h.Req_entries, h.Cmpl_entries = l.ReqEntries, l.CmplEntries
	h.Sock_count = l.Socks
	h.Sock_size = SizeofSock
	h.Msg_size = SizeofReq
	h.Rx_fifo_size, h.Tx_fifo_size = l.RxFIFO, l.TxFIFO
	atomic.StoreUint32(&h.Daemon_state, DaemonRunning)
	return s, nil
}

// AttachSegment validates the header in mem, as a shim does after mmap, and
// returns the view. The header is read once; later changes to its layout
// fields are ignored.
func AttachSegment(mem []byte) (*Segment, error) {
	if len(mem) < SizeofSegHdr {
		return nil, fmt.Errorf("attach shim segment: %d bytes, less than a header: %w", len(mem), ErrCorrupt)
	}
	h := (*SegHdr)(unsafe.Pointer(&mem[0]))
	if h.Magic != SegMagic || h.Abi_version != ABIVersion || h.Hdr_size != SizeofSegHdr ||
		h.Sock_size != SizeofSock || h.Msg_size != SizeofReq {
		return nil, fmt.Errorf("attach shim segment: header magic/version/sizes do not match ABI %d: %w", ABIVersion, ErrCorrupt)
	}
	l := Layout{ReqEntries: h.Req_entries, CmplEntries: h.Cmpl_entries, Socks: h.Sock_count, RxFIFO: h.Rx_fifo_size, TxFIFO: h.Tx_fifo_size}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("attach shim segment: %w: %w", err, ErrCorrupt)
	}
	o := Offsets{Req: h.Req_off, Cmpl: h.Cmpl_off, ReadyMap: h.Ready_map_off, KickMap: h.Kick_map_off, Sock: h.Sock_off, FIFO: h.Fifo_off, Size: h.Seg_size}
	n := uint64(len(mem))
	type area struct{ off, size uint64 }
	for _, a := range []area{
		{o.Req, SizeofRing + uint64(l.ReqEntries)*SizeofReq},
		{o.Cmpl, SizeofRing + uint64(l.CmplEntries)*SizeofCmpl},
		{o.ReadyMap, uint64(l.Socks) / 8},
		{o.KickMap, uint64(l.Socks) / 8},
		{o.Sock, uint64(l.Socks) * SizeofSock},
		{o.FIFO, uint64(l.Socks) * (uint64(l.RxFIFO) + uint64(l.TxFIFO))},
	} {
		if a.off%CacheLine != 0 || a.off < SizeofSegHdr || a.off > n || a.size > n-a.off || a.off+a.size > o.Size {
			return nil, fmt.Errorf("attach shim segment: area at %d+%d outside %d mapped bytes: %w", a.off, a.size, n, ErrCorrupt)
		}
	}
	return &Segment{mem: mem[:o.Size], Layout: l, Off: o}, nil
}

// Hdr returns the segment header.
func (s *Segment) Hdr() *SegHdr { return (*SegHdr)(unsafe.Pointer(&s.mem[0])) }

func (s *Segment) ring(off uint64) *Ring { return (*Ring)(unsafe.Pointer(&s.mem[off])) }

// ReqRing returns the request ring's header and entries.
func (s *Segment) ReqRing() (*Ring, []Req) {
	p := unsafe.Pointer(&s.mem[s.Off.Req+SizeofRing])
	return s.ring(s.Off.Req), unsafe.Slice((*Req)(p), s.Layout.ReqEntries)
}

// CmplRing returns the completion ring's header and entries.
func (s *Segment) CmplRing() (*Ring, []Cmpl) {
	p := unsafe.Pointer(&s.mem[s.Off.Cmpl+SizeofRing])
	return s.ring(s.Off.Cmpl), unsafe.Slice((*Cmpl)(p), s.Layout.CmplEntries)
}

// ReadyMap and KickMap return the two bitmaps, one bit per slot.
func (s *Segment) ReadyMap() []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(&s.mem[s.Off.ReadyMap])), s.Layout.Socks/64)
}

func (s *Segment) KickMap() []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(&s.mem[s.Off.KickMap])), s.Layout.Socks/64)
}

// Sock returns slot i of the socket table; i must be < Layout.Socks.
func (s *Segment) Sock(i uint32) *Sock {
	return (*Sock)(unsafe.Pointer(&s.mem[s.Off.Sock+uint64(i)*SizeofSock]))
}

// RxBuf and TxBuf return slot i's FIFO memory.
func (s *Segment) RxBuf(i uint32) []byte {
	off := s.Off.FIFO + uint64(i)*(uint64(s.Layout.RxFIFO)+uint64(s.Layout.TxFIFO))
	return s.mem[off : off+uint64(s.Layout.RxFIFO) : off+uint64(s.Layout.RxFIFO)]
}

func (s *Segment) TxBuf(i uint32) []byte {
	off := s.Off.FIFO + uint64(i)*(uint64(s.Layout.RxFIFO)+uint64(s.Layout.TxFIFO)) + uint64(s.Layout.RxFIFO)
	return s.mem[off : off+uint64(s.Layout.TxFIFO) : off+uint64(s.Layout.TxFIFO)]
}
