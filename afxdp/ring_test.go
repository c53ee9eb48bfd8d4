package afxdp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// sharedFake is ring memory in Go: indices and flags.
type sharedFake struct {
	prod, cons, flags uint32
}

func (f *sharedFake) shared(size uint32) ringShared {
	return ringShared{producer: &f.prod, consumer: &f.cons, flags: &f.flags, mask: size - 1, size: size}
}

// TestRingReference drives a producer and a consumer view of one ring
// with random batch sizes, starting just below the uint32 wrap, and
// compares with a plain slice queue.
func TestRingReference(t *testing.T) {
	for _, size := range []uint32{1, 2, 8, 64} {
		for _, start := range []uint32{0, 0xffff_fff0, 0xffff_ffff} {
			t.Run(fmt.Sprintf("size%d_start%x", size, start), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(size), uint64(start)))
				mem := &sharedFake{prod: start, cons: start}
				slots := make([]uint64, size)
				var p prodRing
				var c consRing
				p.init(mem.shared(size))
				c.init(mem.shared(size))
				var ref []uint64
				next := uint64(1)
				for step := 0; step < 20000; step++ {
					if rng.IntN(2) == 0 {
						want := uint32(rng.IntN(int(size) + 3))
						idx, got := p.reserve(want)
						free := size - uint32(len(ref))
						if exp := min(want, free); got != exp {
							t.Fatalf("step %d: reserve(%d) = %d, want %d (queue holds %d)", step, want, got, exp, len(ref))
						}
						for i := uint32(0); i < got; i++ {
							slots[(idx+i)&p.mask] = next
							ref = append(ref, next)
							next++
						}
						if got > 0 && rng.IntN(4) == 0 {
							// Cancel one and re-reserve it: must be the same slot.
							p.cancel(1)
							idx2, got2 := p.reserve(1)
							if got2 != 1 || idx2 != idx+got-1 {
								t.Fatalf("cancel/reserve: idx %d got %d, want idx %d", idx2, got2, idx+got-1)
							}
						}
						p.commit()
					} else {
						want := uint32(rng.IntN(int(size) + 3))
						idx, got := c.peek(want)
						if exp := min(want, uint32(len(ref))); got != exp {
							t.Fatalf("step %d: peek(%d) = %d, want %d", step, want, got, exp)
						}
						for i := uint32(0); i < got; i++ {
							if v := slots[(idx+i)&c.mask]; v != ref[i] {
								t.Fatalf("step %d: slot %d = %d, want %d", step, i, v, ref[i])
							}
						}
						ref = ref[got:]
						c.release()
					}
					if n := mem.prod - mem.cons; n != uint32(len(ref)) || n > size {
						t.Fatalf("step %d: producer-consumer = %d, reference holds %d", step, n, len(ref))
					}
				}
			})
		}
	}
}

func TestRingFullEmpty(t *testing.T) {
	mem := &sharedFake{prod: 0xffff_fffe, cons: 0xffff_fffe}
	var p prodRing
	var c consRing
	p.init(mem.shared(4))
	c.init(mem.shared(4))
	if _, n := c.peek(1); n != 0 {
		t.Fatalf("empty ring: peek got %d", n)
	}
	if _, n := p.reserve(4); n != 4 {
		t.Fatalf("empty ring: reserve(4) got %d", n)
	}
	p.commit()
	if mem.prod != 2 {
		t.Fatalf("producer %#x after wrap, want 2", mem.prod)
	}
	if _, n := p.reserve(1); n != 0 {
		t.Fatalf("full ring: reserve got %d", n)
	}
	if got := p.pending(); got != 4 {
		t.Fatalf("pending %d, want 4", got)
	}
	if _, n := c.peek(3); n != 3 {
		t.Fatalf("peek(3) got %d", n)
	}
	// Not released yet: the producer still sees a full ring.
	if _, n := p.reserve(1); n != 0 {
		t.Fatalf("reserve before release got %d", n)
	}
	c.release()
	if _, n := p.reserve(8); n != 3 {
		t.Fatalf("reserve after release got %d, want 3", n)
	}
}

func TestNeedWakeup(t *testing.T) {
	mem := &sharedFake{}
	r := mem.shared(4)
	if r.needWakeup() {
		t.Fatal("need_wakeup without flag")
	}
	atomic.StoreUint32(&mem.flags, xdpRingNeedWakeup)
	if !r.needWakeup() {
		t.Fatal("need_wakeup flag not seen")
	}
	r.flags = nil
	if r.needWakeup() {
		t.Fatal("nil flags reported need_wakeup")
	}
}

// fakeKernel plays the kernel's side of a Socket's four rings.
type fakeKernel struct {
	s                          *Socket
	fill, comp, rx, tx         sharedFake
	fillK, txK                 consRing // kernel consumes fill and tx
	compK, rxK                 prodRing // kernel produces comp and rx
	txBudget                   int      // frames sent per wakeTx (copy mode: 32)
	sent                       [][]byte
	rxWakes, txWakes, rxDrops  int
	txNeedsWakeup, fillNeedsWk bool
}

func newFakeSocket(t testing.TB, cfg SocketConfig, start uint32) (*Socket, *fakeKernel) {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	fq := uint32(cfg.fqSize())
	rs := uint32(cfg.RingSize)
	k := &fakeKernel{txBudget: 32, txNeedsWakeup: true}
	for _, m := range []*sharedFake{&k.fill, &k.comp, &k.rx, &k.tx} {
		m.prod, m.cons = start, start
	}
	k.tx.flags = xdpRingNeedWakeup
	s := &Socket{fd: -1, cfg: cfg, umem: make([]byte, cfg.NumFrames*cfg.FrameSize), sys: k}
	s.fill.init(k.fill.shared(fq))
	s.fill.addrs = make([]uint64, fq)
	s.comp.init(k.comp.shared(fq))
	s.comp.addrs = make([]uint64, fq)
	s.rx.init(k.rx.shared(rs))
	s.rx.descs = make([]xdpDesc, rs)
	s.tx.init(k.tx.shared(rs))
	s.tx.descs = make([]xdpDesc, rs)
	k.fillK.init(k.fill.shared(fq))
	k.compK.init(k.comp.shared(fq))
	k.rxK.init(k.rx.shared(rs))
	k.txK.init(k.tx.shared(rs))
	k.s = s
	if err := s.initData(); err != nil {
		t.Fatal(err)
	}
	return s, k
}

// deliver receives frames like the kernel's copy-mode rx path.
func (k *fakeKernel) deliver(frames ...[]byte) int {
	n := 0
	for _, f := range frames {
		if k.rxK.free(1) == 0 {
			k.rxDrops++
			continue
		}
		fi, got := k.fillK.peek(1)
		if got == 0 {
			k.rxDrops++
			continue
		}
		addr := k.s.fill.addrs[fi&k.fillK.mask]
		k.fillK.release()
		copy(k.s.umem[addr:], f)
		ri, _ := k.rxK.reserve(1)
		k.s.rx.descs[ri&k.rxK.mask] = xdpDesc{Addr: addr, Len: uint32(len(f))}
		k.rxK.commit()
		n++
	}
	return n
}

func (k *fakeKernel) wakeRx() error { k.rxWakes++; return nil }

func (k *fakeKernel) wakeTx() error {
	k.txWakes++
	for i := 0; i < k.txBudget; i++ {
		if k.compK.free(1) == 0 {
			return errTxRetry
		}
		ti, got := k.txK.peek(1)
		if got == 0 {
			return nil
		}
		d := k.s.tx.descs[ti&k.txK.mask]
		k.sent = append(k.sent, bytes.Clone(k.s.umem[d.Addr:d.Addr+uint64(d.Len)]))
		k.txK.release()
		ci, _ := k.compK.reserve(1)
		k.s.comp.addrs[ci&k.compK.mask] = d.Addr
		k.compK.commit()
	}
	if k.txK.available(1) > 0 {
		return errTxRetry
	}
	return nil
}

func TestSocketRxFake(t *testing.T) {
	s, k := newFakeSocket(t, SocketConfig{NumFrames: 16, RingSize: 8}, 0xffff_fff9)
	// 8 rx frames, all on the fill ring; the rx ring holds 8.
	var frames [][]byte
	for i := 0; i < 10; i++ {
		frames = append(frames, []byte(fmt.Sprintf("frame %d", i)))
	}
	if n := k.deliver(frames...); n != 8 {
		t.Fatalf("delivered %d, want 8 (fill ring holds 8 rx frames)", n)
	}
	descs := make([]Desc, 3)
	var got [][]byte
	for len(got) < 8 {
		n := s.Receive(descs)
		if n == 0 {
			t.Fatalf("Receive returned 0 after %d frames", len(got))
		}
		for _, d := range descs[:n] {
			got = append(got, bytes.Clone(s.Frame(d)))
		}
		s.Release(descs[:n])
	}
	for i := range got {
		if !bytes.Equal(got[i], frames[i]) {
			t.Fatalf("frame %d = %q, want %q", i, got[i], frames[i])
		}
	}
	if n := s.Receive(descs); n != 0 {
		t.Fatalf("Receive on empty ring = %d", n)
	}
	// Released frames are reusable: many more rounds through the wrap.
	for round := 0; round < 100; round++ {
		if n := k.deliver(frames[:5]...); n != 5 {
			t.Fatalf("round %d: delivered %d", round, n)
		}
		all := make([]Desc, 8)
		if n := s.Receive(all); n != 5 {
			t.Fatalf("round %d: received %d", round, n)
		}
		s.Release(all[:5])
	}
	// Busy polling: an empty Receive always calls recvfrom (it drives
	// the device's NAPI poll).
	s.cfg.BusyPoll = true
	wakes := k.rxWakes
	s.Receive(descs)
	if k.rxWakes != wakes+1 {
		t.Fatal("busy-poll socket did not recvfrom on an empty rx ring")
	}
	s.cfg.BusyPoll = false
	// need_wakeup on the fill ring makes Receive and Release kick.
	atomic.StoreUint32(&k.fill.flags, xdpRingNeedWakeup)
	s.Receive(descs)
	if k.rxWakes == 0 {
		t.Fatal("no rx wake-up with need_wakeup set on the fill ring")
	}
	st, _ := s.Stats()
	if st.RxFrames != 8+500 {
		t.Fatalf("RxFrames = %d", st.RxFrames)
	}
}

func TestSocketTxFake(t *testing.T) {
	s, k := newFakeSocket(t, SocketConfig{NumFrames: 256, RingSize: 64}, 0xffff_ffe0)
	// 128 tx frames; take them all.
	var descs []Desc
	for {
		d, buf, ok := s.TxFrame()
		if !ok {
			break
		}
		if len(buf) != s.FrameSize() {
			t.Fatalf("tx buffer of %d bytes", len(buf))
		}
		if d.Addr < 128*2048 {
			t.Fatalf("tx frame %#x in the rx half", d.Addr)
		}
		n := copy(buf, fmt.Sprintf("tx %d", len(descs)))
		d.Len = uint32(n)
		descs = append(descs, d)
	}
	if len(descs) != 128 {
		t.Fatalf("got %d tx frames, want 128", len(descs))
	}
	// The tx ring holds 64: Submit posts a prefix, copy-mode budget of 32
	// per wake-up means several kicks.
	n := s.Submit(descs)
	if n != 64 {
		t.Fatalf("Submit posted %d, want 64", n)
	}
	if len(k.sent) != 64 || k.txWakes < 2 {
		t.Fatalf("sent %d after %d wake-ups, want 64 after >= 2", len(k.sent), k.txWakes)
	}
	rest := descs[n:]
	if m := s.Submit(rest); m != 64 {
		t.Fatalf("second Submit posted %d", m)
	}
	for i, f := range k.sent {
		if want := fmt.Sprintf("tx %d", i); string(f) != want {
			t.Fatalf("sent[%d] = %q, want %q", i, f, want)
		}
	}
	// Completions are reaped (by TxFrame and between kicks): every frame
	// comes back.
	var again []Desc
	for {
		d, _, ok := s.TxFrame()
		if !ok {
			break
		}
		again = append(again, d)
	}
	if len(again) != 128 {
		t.Fatalf("%d tx frames back after completion, want 128", len(again))
	}
	s.Discard(again)
	st, _ := s.Stats()
	if st.TxFrames != 128 || st.TxCompleted != 128 {
		t.Fatalf("stats %+v", st)
	}
	// Invalid descriptors stop Submit at the first one.
	d1, buf, _ := s.TxFrame()
	d1.Len = uint32(copy(buf, "ok"))
	bad := []Desc{d1, {Addr: 0, Len: 10}, d1}
	if m := s.Submit(bad); m != 1 {
		t.Fatalf("Submit with an rx-half desc posted %d, want 1", m)
	}
	d2, _, _ := s.TxFrame()
	for _, b := range []Desc{{Addr: d2.Addr, Len: 0}, {Addr: d2.Addr + 100, Len: 2000}, {Addr: 1 << 40, Len: 1}} {
		if m := s.Submit([]Desc{b}); m != 0 {
			t.Fatalf("Submit(%+v) posted %d", b, m)
		}
	}
	// Without need_wakeup nothing kicks; the fake then sends nothing.
	atomic.StoreUint32(&k.tx.flags, 0)
	wakes := k.txWakes
	d2.Len = 1
	if m := s.Submit([]Desc{d2}); m != 1 || k.txWakes != wakes {
		t.Fatalf("posted %d, wakes %d -> %d", m, wakes, k.txWakes)
	}
}

func TestSocketFlushFake(t *testing.T) {
	s, k := newFakeSocket(t, SocketConfig{NumFrames: 64, RingSize: 32}, 0)
	k.txBudget = 0 // a busy device: every wake-up sends nothing
	var batch []Desc
	for i := 0; i < 10; i++ {
		d, buf, _ := s.TxFrame()
		d.Len = uint32(copy(buf, "x"))
		batch = append(batch, d)
	}
	if n := s.Submit(batch); n != 10 {
		t.Fatalf("posted %d", n)
	}
	if p := s.Flush(); p != 10 {
		t.Fatalf("Flush with a busy device: %d pending, want 10", p)
	}
	k.txBudget = 32
	if p := s.Flush(); p != 0 || len(k.sent) != 10 {
		t.Fatalf("Flush: %d pending, %d sent; want 0 and 10", p, len(k.sent))
	}
	if st, _ := s.Stats(); st.TxCompleted != 10 {
		t.Fatalf("TxCompleted %d after Flush, want 10", st.TxCompleted)
	}
}

func TestSocketFrameBounds(t *testing.T) {
	s, _ := newFakeSocket(t, SocketConfig{NumFrames: 4}, 0)
	for _, d := range []Desc{{Addr: uint64(len(s.umem)), Len: 1}, {Addr: ^uint64(0), Len: 2}, {Addr: 4*2048 - 1, Len: 2}} {
		if b := s.Frame(d); b != nil {
			t.Errorf("Frame(%+v) = %d bytes, want nil", d, len(b))
		}
	}
	if b := s.Frame(Desc{Addr: 2048, Len: 2048}); len(b) != 2048 || cap(b) != 2048 {
		t.Errorf("Frame of a whole frame: len %d cap %d", len(b), cap(b))
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := SocketConfig{}.withDefaults()
	if err != nil || c.NumFrames != 4096 || c.FrameSize != 2048 || c.RingSize != 2048 || c.fqSize() != 2048 {
		t.Fatalf("defaults %+v %v", c, err)
	}
	c, _ = SocketConfig{NumFrames: 8192, RingSize: 512}.withDefaults()
	if c.fqSize() != 4096 {
		t.Fatalf("fill ring size %d for 4096 rx frames", c.fqSize())
	}
	for _, bad := range []SocketConfig{{NumFrames: 3}, {FrameSize: 3000}, {FrameSize: 1024}, {RingSize: 100}, {NumFrames: -2}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// The per-packet paths must not allocate.
func TestDataPathAllocs(t *testing.T) {
	s, k := newFakeSocket(t, SocketConfig{NumFrames: 64, RingSize: 32}, 0)
	frame := make([]byte, 60)
	descs := make([]Desc, 8)
	allocs := testing.AllocsPerRun(1000, func() {
		k.deliver(frame)
		n := s.Receive(descs)
		s.Release(descs[:n])
		d, _, ok := s.TxFrame()
		if ok {
			d.Len = 60
			descs[0] = d
			s.Submit(descs[:1])
		}
		k.sent = k.sent[:0]
	})
	// The fake's own bytes.Clone of each sent frame is the one allocation.
	if allocs > 1 {
		t.Fatalf("%v allocations per rx+tx round, want <= 1 (the fake's copy)", allocs)
	}
}

func TestSocketAfterClose(t *testing.T) {
	s, k := newFakeSocket(t, SocketConfig{NumFrames: 16, RingSize: 8}, 0)
	k.deliver([]byte("frame"))
	d, _, _ := s.TxFrame()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	descs := make([]Desc, 4)
	if n := s.Receive(descs); n != 0 {
		t.Fatalf("Receive after Close = %d", n)
	}
	if _, _, ok := s.TxFrame(); ok {
		t.Fatal("TxFrame after Close succeeded")
	}
	d.Len = 1
	if n := s.Submit([]Desc{d}); n != 0 {
		t.Fatalf("Submit after Close = %d", n)
	}
	if s.Frame(d) != nil || s.Flush() != 0 {
		t.Fatal("Frame/Flush after Close")
	}
	s.Release(descs)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
