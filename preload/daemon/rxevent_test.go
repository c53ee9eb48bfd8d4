package daemon

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/fsstack/fsstack/preload/abi"
)

// TestFIFOWriter: the writer netstack fills an rx FIFO through takes up to
// its room, says io.ErrShortWrite when it cannot take a whole chunk, wraps
// around the FIFO's end, and reports a FIFO whose consumer index is
// corrupt as that error (nothing written).
func TestFIFOWriter(t *testing.T) {
	buf := make([]byte, 16)
	var head, tail uint32
	f := abi.NewFIFOProducer(buf, &tail, &head)
	cons := abi.NewFIFOConsumer(buf, &head, &tail)

	w := fifoWriter{f: f, room: 10}
	if n, err := w.Write([]byte("0123456")); n != 7 || err != nil {
		t.Fatalf("first chunk: %d, %v; want 7, nil", n, err)
	}
	if n, err := w.Write([]byte("789abc")); n != 3 || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("chunk past the room: %d, %v; want 3, ErrShortWrite", n, err)
	}
	if w.n != 10 || w.err != nil {
		t.Fatalf("took %d (err %v), want 10", w.n, w.err)
	}
	got := make([]byte, 16)
	if n, _ := cons.Read(got); !bytes.Equal(got[:n], []byte("0123456789")) {
		t.Fatalf("FIFO holds %q", got[:n])
	}

	// The room is more than the FIFO has: the FIFO's own limit applies,
	// and the bytes wrap around its end.
	w = fifoWriter{f: f, room: 100}
	in := []byte("ABCDEFGHIJKLMNOPQ")
	if n, err := w.Write(in); n != 16 || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("chunk past the FIFO: %d, %v; want 16, ErrShortWrite", n, err)
	}
	if n, _ := cons.Read(got); !bytes.Equal(got[:n], in[:16]) {
		t.Fatalf("FIFO holds %q after wrapping", got[:n])
	}

	// A consumer index moved past the producer's: corrupt.
	head = tail + 100
	w = fifoWriter{f: f, room: 4}
	if n, err := w.Write([]byte("xy")); n != 0 || err == nil || w.err == nil {
		t.Fatalf("write to a corrupt FIFO: %d, %v (recorded %v); want 0 and the error", n, err, w.err)
	}
}
