package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// bulkSize is the response body of the bulk tests (not a multiple of the
// read size, so the last read of each body is short).
const bulkSize = 600 << 10

var bulkBody = bytes.Repeat([]byte("0123456789abcdef"), bulkSize/16)

// TestBulkCountsBytes serves exactly 20 whole responses, then holds every
// further request: the run must count exactly 20 responses and 20 bodies'
// bytes, however they were split into reads.
func TestBulkCountsBytes(t *testing.T) {
	const serve = 20
	var served atomic.Int64
	addr, _, closes := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) > serve {
			<-r.Context().Done() // the client gives up at the end of the window
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(bulkBody)))
		w.Write(bulkBody)
	})
	var gbps atomic.Bool
	res, err := Run(context.Background(), Config{
		Addr: addr, Path: "/bulk", Mode: Bulk, Conns: 4, Duration: time.Second, WantBody: bulkSize,
		ProgressInterval: 100 * time.Millisecond,
		Progress: func(p Progress) {
			if p.Gbps > 0 {
				gbps.Store(true)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Describe())
	if res.Requests != serve || res.Errors != 0 {
		t.Fatalf("responses %d errors %d (%s), want %d and 0", res.Requests, res.Errors, res.FirstError, serve)
	}
	if res.BodyBytes != serve*bulkSize {
		t.Errorf("body bytes %d, want %d", res.BodyBytes, serve*bulkSize)
	}
	want := float64(res.BodyBytes) * 8 / res.Duration.Seconds() / 1e9
	if res.Gbps != want || res.Gbps == 0 {
		t.Errorf("Gbit/s %v, want %v", res.Gbps, want)
	}
	if res.Late != 4 {
		t.Errorf("%d requests in flight at the end, want the 4 held ones", res.Late)
	}
	if res.Connections > 4 || closes.Load() != 0 {
		t.Errorf("bulk opened %d connections, %d asked to close: want keep-alive", res.Connections, closes.Load())
	}
	if !gbps.Load() {
		t.Error("progress never reported a body rate")
	}
	if !(res.P50 > 0 && res.P50 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("latencies p50 %v p99 %v max %v out of order", res.P50, res.P99, res.Max)
	}
}

// TestBulkCountsPartialBody: a response cut by the end of the window
// counts the bytes that arrived inside it, and is not a whole response.
func TestBulkCountsPartialBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const sent = 100000
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(bulkSize) + "\r\n\r\n"))
		c.Write(bulkBody[:sent])
		c.Read(make([]byte, 1)) // until the client closes
	}()
	res, err := Run(context.Background(), Config{Addr: ln.Addr().String(), Mode: Bulk, Conns: 1, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.BodyBytes != sent || res.Requests != 0 || res.Late != 1 || res.Errors != 0 {
		t.Errorf("half a response: body bytes %d (want %d), responses %d, late %d, errors %d (%s)",
			res.BodyBytes, sent, res.Requests, res.Late, res.Errors, res.FirstError)
	}
}

// TestBulkWrongSize: a server that answers with another body (the wrong
// file) is an error, not a fast result.
func TestBulkWrongSize(t *testing.T) {
	addr, _, _ := newServer(t, ok64)
	for _, mode := range []Mode{Bulk, KeepAlive} {
		res, err := Run(context.Background(), Config{Addr: addr, Mode: mode, Conns: 1, Duration: 100 * time.Millisecond, WantBody: bulkSize})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 0 || res.ErrorKinds["size"] == 0 {
			t.Errorf("%s: 64-byte bodies with WantBody %d: %+v", mode, bulkSize, res)
		}
	}
	if m, err := ParseMode("bulk"); err != nil || m != Bulk {
		t.Errorf("ParseMode(bulk) = %q, %v", m, err)
	}
}
