package abi

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func newTestRing(n int) (*Ring, []Req) { return new(Ring), make([]Req, n) }

// TestRingAgainstReference drives one producer and one consumer over a ring
// with random interleavings and compares with a plain slice queue.
func TestRingAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 8, 64} {
		ring, ents := newTestRing(n)
		// Start near the uint32 wrap to exercise it.
		ring.Prod, ring.Cons = ^uint32(0)-5, ^uint32(0)-5
		p, c := NewProducer(ring, ents), NewConsumer(ring, ents)
		var ref []uint64
		next := uint64(0)
		for range 20000 {
			if r.IntN(2) == 0 {
				m := Req{Id: next, Op: uint32(next)}
				ok, err := p.Push(&m)
				if err != nil {
					t.Fatal(err)
				}
				if ok != (len(ref) < n) {
					t.Fatalf("n=%d push ok=%v with %d queued", n, ok, len(ref))
				}
				if ok {
					ref = append(ref, next)
					next++
				}
			} else {
				var m Req
				ok, err := c.Pop(&m)
				if err != nil {
					t.Fatal(err)
				}
				if ok != (len(ref) > 0) {
					t.Fatalf("n=%d pop ok=%v with %d queued", n, ok, len(ref))
				}
				if ok {
					if m.Id != ref[0] || m.Op != uint32(ref[0]) {
						t.Fatalf("popped %d, want %d", m.Id, ref[0])
					}
					ref = ref[1:]
				}
			}
			if pend, _ := c.Pending(); int(pend) != len(ref) {
				t.Fatalf("pending %d, reference %d", pend, len(ref))
			}
		}
	}
}

// TestRingConcurrent runs producer and consumer on two goroutines.
func TestRingConcurrent(t *testing.T) {
	ring, ents := newTestRing(16)
	p, c := NewProducer(ring, ents), NewConsumer(ring, ents)
	const total = 200000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := uint64(0); i < total; {
			m := Req{Id: i, Arg0: int32(i * 7)}
			if ok, err := p.Push(&m); err != nil {
				t.Error(err)
				return
			} else if ok {
				i++
			}
		}
	})
	for want := uint64(0); want < total; {
		var m Req
		ok, err := c.Pop(&m)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if m.Id != want || m.Arg0 != int32(want*7) {
				t.Fatalf("got %d/%d, want %d", m.Id, m.Arg0, want)
			}
			want++
		}
	}
	wg.Wait()
}

// TestRingCorruptIndices: a peer that writes any index never makes the
// other side panic or hand out an entry it should not.
func TestRingCorruptIndices(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		ring, ents := newTestRing(8)
		p, c := NewProducer(ring, ents), NewConsumer(ring, ents)
		for range r.IntN(5) {
			p.Push(&Req{})
		}
		// The peer of the consumer (producer side) scribbles Prod.
		atomic.StoreUint32(&ring.Prod, r.Uint32())
		var m Req
		for range 20 {
			ok, err := c.Pop(&m)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatal(err)
				}
				break
			}
			if !ok {
				break
			}
		}
		// The peer of the producer (consumer side) scribbles Cons.
		atomic.StoreUint32(&ring.Cons, r.Uint32())
		if _, err := p.Push(&Req{}); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatal(err)
		}
	}
}

// fifoPair makes a producer/consumer pair over one buffer.
func fifoPair(size int, start uint32) (*FIFOProducer, *FIFOConsumer, *[2]uint32) {
	idx := &[2]uint32{start, start} // [0] tail, [1] head
	buf := make([]byte, size)
	return NewFIFOProducer(buf, &idx[0], &idx[1]), NewFIFOConsumer(buf, &idx[1], &idx[0]), idx
}

// checkFIFO runs ops against a FIFO pair and a bytes.Buffer reference.
func checkFIFO(t *testing.T, size int, start uint32, ops []byte) {
	p, c, _ := fifoPair(size, start)
	var ref bytes.Buffer
	var seq byte
	for i := 0; i+1 < len(ops); i += 2 {
		n := int(ops[i+1]) * size / 97
		if ops[i]%2 == 0 {
			data := make([]byte, n)
			for j := range data {
				data[j] = seq
				seq++
			}
			w, err := p.Write(data)
			if err != nil {
				t.Fatal(err)
			}
			want := min(n, size-ref.Len())
			if w != want {
				t.Fatalf("write %d: wrote %d, want %d", n, w, want)
			}
			ref.Write(data[:w])
			seq -= byte(n - w)
		} else {
			got := make([]byte, n)
			r, err := c.Read(got)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, min(n, ref.Len()))
			ref.Read(want)
			if !bytes.Equal(got[:r], want) {
				t.Fatalf("read %d: got %d bytes %x..., want %d bytes", n, r, got[:min(r, 8)], len(want))
			}
		}
		if u, _ := c.Used(); int(u) != ref.Len() {
			t.Fatalf("used %d, reference %d", u, ref.Len())
		}
		if u, _ := p.Used(); int(u) != ref.Len() {
			t.Fatalf("producer used %d, reference %d", u, ref.Len())
		}
		// Unread must show exactly what the reference still holds.
		un := make([]byte, size)
		k, _ := p.Unread(un)
		if !bytes.Equal(un[:k], ref.Bytes()) {
			t.Fatalf("unread differs from reference")
		}
	}
}

func TestFIFOAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, size := range []int{1, 2, 16, 4096} {
		for _, start := range []uint32{0, ^uint32(0) - 3} {
			ops := make([]byte, 4000)
			for i := range ops {
				ops[i] = byte(r.Uint32())
			}
			checkFIFO(t, size, start, ops)
		}
	}
}

func FuzzFIFO(f *testing.F) {
	f.Add(uint8(4), uint32(0), []byte{0, 50, 1, 20, 0, 97, 1, 97})
	f.Fuzz(func(t *testing.T, sizeLog uint8, start uint32, ops []byte) {
		checkFIFO(t, 1<<(sizeLog%13), start, ops)
	})
}

// FuzzFIFOCorrupt: whatever the peer writes into its index, the other side
// returns ErrCorrupt or a count within the buffer, and never panics.
func FuzzFIFOCorrupt(f *testing.F) {
	f.Add(uint32(10), uint32(3), uint32(99))
	f.Fuzz(func(t *testing.T, wrote, read, scribble uint32) {
		p, c, idx := fifoPair(64, 0)
		p.Write(make([]byte, wrote%65))
		c.Read(make([]byte, read%65))
		atomic.StoreUint32(&idx[1], scribble) // consumer's peer view of head
		if n, err := p.Write(make([]byte, 64)); err != nil && !errors.Is(err, ErrCorrupt) || n > 64 {
			t.Fatalf("write after corrupt head: %d, %v", n, err)
		}
		atomic.StoreUint32(&idx[0], scribble) // tail
		if n, err := c.Read(make([]byte, 64)); err != nil && !errors.Is(err, ErrCorrupt) || n > 64 {
			t.Fatalf("read after corrupt tail: %d, %v", n, err)
		}
	})
}

func TestFIFOConcurrent(t *testing.T) {
	p, c, _ := fifoPair(1024, 0)
	const total = 4 << 20
	var wg sync.WaitGroup
	wg.Go(func() {
		var seq byte
		buf := make([]byte, 700)
		for sent := 0; sent < total; {
			n := min(len(buf), total-sent)
			for i := range n {
				buf[i] = seq + byte(i)
			}
			w, err := p.Write(buf[:n])
			if err != nil {
				t.Error(err)
				return
			}
			seq += byte(w)
			sent += w
		}
	})
	var seq byte
	buf := make([]byte, 500)
	for got := 0; got < total; {
		r, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		for i := range r {
			if buf[i] != seq {
				t.Fatalf("byte %d: %d, want %d", got+i, buf[i], seq)
			}
			seq++
		}
		got += r
	}
	wg.Wait()
}
