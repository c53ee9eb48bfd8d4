package loadgen

import (
	"bufio"
	"bytes"
	"testing"
	"time"
)

// The generator must stay much cheaper than the servers it measures: no
// allocation per request on the parse and record paths.

func BenchmarkReadResponse(b *testing.B) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\nDate: Mon, 23 Nov 2026 16:00:00 GMT\r\n\r\n" +
		"fsstack lab: 64-byte body for the short-connection benchmark...\n")
	r := bytes.NewReader(resp)
	br := bufio.NewReader(r)
	b.ReportAllocs()
	b.SetBytes(int64(len(resp)))
	for b.Loop() {
		r.Reset(resp)
		br.Reset(r)
		if _, _, err := ReadResponse(br); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	d := time.Duration(1)
	for b.Loop() {
		h.Record(d)
		d = (d*7 + 13) & (1<<30 - 1)
	}
}

func TestReadResponseAllocs(t *testing.T) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	r := bytes.NewReader(resp)
	br := bufio.NewReader(r)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(resp)
		br.Reset(r)
		if _, _, err := ReadResponse(br); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReadResponse allocates %v times per response", allocs)
	}
}
