package abi

import (
	"fmt"
	"math/bits"
)

// Layout chooses the sizes of a segment's areas. Zero fields take the
// header's defaults (DefaultReqEntries, ...).
type Layout struct {
	// ReqEntries and CmplEntries are the ring sizes, powers of two;
	// CmplEntries >= ReqEntries. If 0, 256 each.
	ReqEntries, CmplEntries uint32
	// Socks is the number of socket slots, a multiple of 64, at most
	// MaxSocks. If 0, 4096.
	Socks uint32
	// RxFIFO and TxFIFO are the per-socket FIFO sizes in bytes, powers of
	// two, at least 4096. If 0, 64 KiB each.
	RxFIFO, TxFIFO uint32
}

// WithDefaults returns l with zero fields replaced by the defaults.
func (l Layout) WithDefaults() Layout {
	if l.ReqEntries == 0 {
		l.ReqEntries = DefaultReqEntries
	}
	if l.CmplEntries == 0 {
		l.CmplEntries = max(DefaultCmplEntries, l.ReqEntries)
	}
	if l.Socks == 0 {
		l.Socks = DefaultSocks
	}
	if l.RxFIFO == 0 {
		l.RxFIFO = DefaultRxFIFO
	}
	if l.TxFIFO == 0 {
		l.TxFIFO = DefaultTxFIFO
	}
	return l
}

func pow2(v uint32) bool { return v != 0 && bits.OnesCount32(v) == 1 }

// Validate checks a layout after defaults.
func (l Layout) Validate() error {
	switch {
	case !pow2(l.ReqEntries) || !pow2(l.CmplEntries):
		return fmt.Errorf("shim layout: ring sizes %d/%d must be powers of two", l.ReqEntries, l.CmplEntries)
	case l.CmplEntries < l.ReqEntries:
		return fmt.Errorf("shim layout: completion ring (%d) smaller than request ring (%d)", l.CmplEntries, l.ReqEntries)
	case l.Socks == 0 || l.Socks%64 != 0 || l.Socks > MaxSocks:
		return fmt.Errorf("shim layout: %d socket slots; use a multiple of 64 up to %d", l.Socks, MaxSocks)
	case !pow2(l.RxFIFO) || !pow2(l.TxFIFO) || l.RxFIFO < 4096 || l.TxFIFO < 4096 || l.RxFIFO > 1<<30 || l.TxFIFO > 1<<30:
		return fmt.Errorf("shim layout: FIFO sizes %d/%d must be powers of two between 4 KiB and 1 GiB", l.RxFIFO, l.TxFIFO)
	}
	return nil
}

func align(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// Offsets are where each area of a segment starts, as published in SegHdr.
type Offsets struct {
	Req, Cmpl, ReadyMap, KickMap, Sock, FIFO, Size uint64
}

// Offsets computes the segment layout for l (after defaults).
func (l Layout) Offsets() Offsets {
	var o Offsets
	o.Req = SizeofSegHdr
	o.Cmpl = align(o.Req+SizeofRing+uint64(l.ReqEntries)*SizeofReq, CacheLine)
	o.ReadyMap = align(o.Cmpl+SizeofRing+uint64(l.CmplEntries)*SizeofCmpl, CacheLine)
	o.KickMap = align(o.ReadyMap+uint64(l.Socks)/8, CacheLine)
	o.Sock = align(o.KickMap+uint64(l.Socks)/8, CacheLine)
	o.FIFO = align(o.Sock+uint64(l.Socks)*SizeofSock, 4096)
	o.Size = o.FIFO + uint64(l.Socks)*(uint64(l.RxFIFO)+uint64(l.TxFIFO))
	return o
}
