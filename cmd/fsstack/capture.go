package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/capture"
	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/stack"
)

// The "capture" op streams frames to its client (control.HandleStream):
//
//	client                                           daemon
//	  {"op":"capture","iface":"eth1","shards":[1],
//	   "filter":"port 80","snaplen":0}\n   ------>   peer must be root or the daemon's uid
//	                                        <------  {"ok":true,"iface":...,"queues":N}\n  or {"error":...}\n
//	                                        <------  {"t":UNIXNANO,"shard":1,"dir":"in","len":74,"data":BASE64}\n ...
//	  half-close (Ctrl-C, -c reached)       ------>
//	                                        <------  the frames still buffered, then
//	                                                 {"end":true,"captured":N,"dropped":M}\n, close
//
// Several captures may run at once; each has its own buffer and counts.

// captureRequest is the "capture" op's request.
type captureRequest struct {
	Iface   string `json:"iface,omitempty"`  // must be the daemon's interface if set
	Shards  []int  `json:"shards,omitempty"` // nil: every shard
	Filter  string `json:"filter,omitempty"` // capture.ParseFilter's syntax
	SnapLen int    `json:"snaplen,omitempty"`
}

// captureStart is the first reply line.
type captureStart struct {
	OK     bool   `json:"ok"`
	Iface  string `json:"iface"`
	Queues int    `json:"queues"`
}

// captureRecord is one frame, or (End set) the closing counts.
type captureRecord struct {
	Time  int64  `json:"t,omitempty"` // UnixNano
	Shard int    `json:"shard"`
	Dir   string `json:"dir,omitempty"`
	Len   int    `json:"len,omitempty"`
	Data  []byte `json:"data,omitempty"`

	End      bool   `json:"end,omitempty"`
	Captured uint64 `json:"captured,omitempty"`
	Dropped  uint64 `json:"dropped,omitempty"`
}

// errCaptureNeedsRoot is the refusal of a capture to other users: a
// capture shows every user's traffic.
var errCaptureNeedsRoot = errors.New("capture needs root")

// captureAllowed passes root and the daemon's own uid.
func captureAllowed(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%w: cannot tell who asks over a %T", errCaptureNeedsRoot, c)
	}
	cred, err := control.PeerCred(uc)
	if err != nil {
		return fmt.Errorf("%w: %v", errCaptureNeedsRoot, err)
	}
	if cred.UID == 0 || cred.UID == uint32(os.Getuid()) {
		return nil
	}
	return fmt.Errorf("%w: it shows every user's traffic (uid %d refused); run it as root, e.g. sudo fsstack capture", errCaptureNeedsRoot, cred.UID)
}

// serveCapture is the daemon's "capture" op.
func serveCapture(st daemonStack, iface string, log *slog.Logger) control.StreamHandler {
	return func(ctx context.Context, req *control.Request, r *bufio.Reader, w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		refuse := func(err error) error {
			b, _ := json.Marshal(map[string]string{"error": err.Error()})
			bw.Write(append(b, '\n'))
			bw.Flush()
			return err
		}
		if err := captureAllowed(req.Conn); err != nil {
			return refuse(err)
		}
		var a captureRequest
		if err := req.Decode(&a); err != nil {
			return refuse(err)
		}
		if a.Iface != "" && a.Iface != iface {
			return refuse(fmt.Errorf("this daemon serves %s, not %s (leave out -i, or pass the --socket of the daemon on %s)", iface, a.Iface, a.Iface))
		}
		flt, err := capture.ParseFilter(a.Filter)
		if err != nil {
			return refuse(err)
		}
		opts := stack.CaptureOptions{Shards: a.Shards, SnapLen: a.SnapLen}
		if flt != nil {
			opts.Match = flt.Match
		}
		c, err := st.Capture(opts)
		if err != nil {
			return refuse(err)
		}
		defer c.Close()
		peer := ""
		if cred, err := control.PeerCred(req.Conn.(*net.UnixConn)); err == nil {
			peer = fmt.Sprintf("pid=%d uid=%d", cred.PID, cred.UID)
		}
		log.Info("capture started", "peer", peer, "shards", a.Shards, "filter", flt.String())
		start, _ := json.Marshal(captureStart{OK: true, Iface: iface, Queues: st.Queues()})
		bw.Write(append(start, '\n'))
		if err := bw.Flush(); err != nil {
			return err
		}

		// The client half-closes (or hangs up) to stop.
		stop := make(chan struct{})
		go func() {
			io.Copy(io.Discard, r)
			close(stop)
		}()
		var sent uint64
		enc := json.NewEncoder(bw)
		write := func(f stack.CapturedFrame) error {
			sent++
			return enc.Encode(captureRecord{Time: f.Time.UnixNano(), Shard: f.Shard, Dir: f.Dir.String(), Len: f.Len, Data: f.Data})
		}
		frames := c.Frames()
	loop:
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					break loop // the stack is closing
				}
				if err := write(f); err != nil {
					return err
				}
				if len(frames) == 0 {
					if err := bw.Flush(); err != nil {
						return err // the client is gone
					}
				}
			case <-stop:
				c.Close()
				for f := range frames { // what was buffered when the client stopped
					if err := write(f); err != nil {
						return err
					}
				}
				break loop
			case <-ctx.Done():
				c.Close()
				break loop
			}
		}
		c.Close()
		log.Info("capture ended", "peer", peer, "captured", sent, "dropped", c.Dropped())
		enc.Encode(captureRecord{End: true, Captured: sent, Dropped: c.Dropped()})
		return bw.Flush()
	}
}

// captureSignals stop a capture; a variable for tests.
var captureSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM}

func runCapture(e *env, args []string) int {
	fs := newFlags(e, "capture", "[-i IFACE] [-w FILE.pcap] [--shard N] [-c COUNT] [--snaplen N] [--socket PATH] [FILTER]",
		`Record the frames the running daemon's shards receive and send. XDP steers them
past the kernel, so tcpdump on the interface does not see them; this does.

With -w FILE the frames are written to FILE as pcap (tcpdump -r, tshark -r and
Wireshark read it); with -w - or without -w when stdout is not a terminal, pcap
goes to stdout (fsstack capture | tshark -r -). On a terminal without -w, one
line per frame is printed instead. Ctrl-C (or -c COUNT frames) stops; the counts
of frames captured and of frames dropped because this reader was too slow go to
stderr. Several captures may run at once.

A capture shows every user's traffic: only root (or the daemon's own user) may
capture.

FILTER is a subset of tcpdump's syntax:
  tcp                                  every TCP segment (all fsstack carries)
  host A, src host A, dst host A       IPv4 or IPv6 address A at either end, the source, the destination
  port N, src port N, dst port N       TCP port N, likewise (also written tcp port N)
  E and E, E or E, not E, ( E )        also &&, ||, !; "and" and "or" bind equally, left to right
e.g. fsstack capture -w web.pcap port 80 and not host 10.0.0.9`)
	iface := fs.String("i", "", "`IFACE` the daemon serves, checked (default: the daemon's)")
	out := fs.String("w", "", "write pcap to `FILE` (- for stdout)")
	shard := fs.Int("shard", -1, "record only shard `N`, 0 to queues-1 (-1: every shard)")
	count := fs.Int("c", 0, "stop after `COUNT` frames (0: until interrupted)")
	snap := fs.Int("snaplen", 0, "keep at most `N` bytes of each frame (0: whole frames)")
	sock := fs.String("socket", control.DefaultSocketPath, "control socket of the daemon")
	// The filter follows the flags, as tcpdump's does.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if u, ok := usages.Load(fs); ok {
				u.(func())()
			}
			return 0
		}
		fmt.Fprintf(e.stderr, "fsstack capture: %v\nRun 'fsstack capture --help' for usage.\n", err)
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "fsstack capture: "+format+"\nRun 'fsstack capture --help' for usage.\n", a...)
		return 2
	}
	expr := strings.Join(fs.Args(), " ")
	flt, err := capture.ParseFilter(expr)
	if err != nil {
		return usageErr("%v", err)
	}
	if *count < 0 || *snap < 0 {
		return usageErr("-c and --snaplen must not be negative")
	}
	if *shard < -1 {
		return usageErr("--shard %d: shards are numbered from 0", *shard)
	}
	req := captureRequest{Iface: *iface, Filter: flt.String(), SnapLen: *snap}
	if *shard >= 0 {
		req.Shards = []int{*shard}
	}

	// Where the frames go: pcap to a file or stdout, or lines on a terminal.
	var (
		pw    *capture.PcapWriter
		bw    *bufio.Writer
		file  *os.File
		lines = false
	)
	switch {
	case *out == "" && isTerminal(e.stdout):
		lines = true
	case *out == "" || *out == "-":
		bw = bufio.NewWriterSize(e.stdout, 64<<10)
	default:
		f, err := os.Create(*out)
		if err != nil {
			errorLine(e, "capture", fmt.Errorf("%w (pass -w a writable path)", err))
			return 1
		}
		file = f
		defer file.Close()
		bw = bufio.NewWriterSize(f, 64<<10)
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), captureSignals...)
	defer stopSignals()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cl, err := control.Dial(dctx, *sock)
	if err == nil {
		defer cl.Close()
		var start captureStart
		err = cl.Stream(dctx, "capture", req, &start)
		if err == nil {
			where := start.Iface
			if *shard >= 0 {
				where += fmt.Sprintf(" shard %d", *shard)
			} else {
				where += fmt.Sprintf(" (%d shards)", start.Queues)
			}
			if expr != "" {
				where += ", filter " + flt.String()
			}
			fmt.Fprintf(e.stderr, "fsstack capture: capturing on %s; Ctrl-C stops\n", where)
		}
	}
	cancel()
	if err != nil {
		var re *control.RemoteError
		switch {
		case errors.Is(err, control.ErrNoDaemon):
			fmt.Fprintf(e.stderr, "fsstack: no daemon at %s; start one with 'fsstack up --iface IFACE'\n", *sock)
		case errors.As(err, &re):
			fmt.Fprintf(e.stderr, "fsstack capture: %s\n", re.Msg)
		default:
			errorLine(e, "capture", fmt.Errorf("ask daemon at %s: %w", *sock, err))
		}
		if file != nil {
			os.Remove(*out) // nothing was captured into it
		}
		return 1
	}
	if bw != nil {
		if pw, err = capture.NewPcapWriter(bw, *snap); err == nil {
			err = bw.Flush()
		}
		if err != nil {
			errorLine(e, "capture", err)
			return 1
		}
	}

	// A reader of the pcap (a pipe into tshark) sees frames within
	// flushEvery, however few arrive.
	const flushEvery = 200 * time.Millisecond
	var outMu sync.Mutex
	var writeErr error
	flushDone := make(chan struct{})
	defer close(flushDone)
	if bw != nil {
		go func() {
			t := time.NewTicker(flushEvery)
			defer t.Stop()
			for {
				select {
				case <-flushDone:
					return
				case <-t.C:
					outMu.Lock()
					if writeErr == nil {
						writeErr = bw.Flush()
					}
					outMu.Unlock()
				}
			}
		}()
	}
	// Ctrl-C or -c: tell the daemon, then take what it still sends.
	var stopOnce sync.Once
	stopping := make(chan struct{})
	stop := func() {
		stopOnce.Do(func() {
			close(stopping)
			cl.CloseWrite()
			cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		})
	}
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-stopping:
		}
	}()

	var captured uint64
	var end *captureRecord
	for {
		line, err := cl.ReadLine()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				errorLine(e, "capture", fmt.Errorf("read from daemon at %s: %w", *sock, err))
			}
			break
		}
		var rec captureRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			errorLine(e, "capture", fmt.Errorf("decode frame from daemon: %w", err))
			break
		}
		if rec.End {
			end = &rec
			continue
		}
		if *count > 0 && captured >= uint64(*count) {
			continue // stopping: the daemon flushes what it had
		}
		t := time.Unix(0, rec.Time)
		outMu.Lock()
		if lines {
			_, writeErr = fmt.Fprintln(e.stdout, capture.Summary(t, rec.Shard, rec.Dir, rec.Data))
		} else if writeErr == nil {
			writeErr = pw.WriteFrame(t, rec.Data, rec.Len)
		}
		werr := writeErr
		outMu.Unlock()
		if werr != nil {
			errorLine(e, "capture", fmt.Errorf("write frames: %w", werr))
			stop()
			break
		}
		captured++
		if *count > 0 && captured == uint64(*count) {
			stop()
		}
	}
	stop()
	rc := 0
	outMu.Lock()
	if bw != nil && writeErr == nil {
		writeErr = bw.Flush()
	}
	if writeErr != nil {
		if !lines {
			errorLine(e, "capture", fmt.Errorf("write pcap: %w", writeErr))
		}
		rc = 1
	}
	outMu.Unlock()
	if file != nil {
		if err := file.Close(); err != nil {
			errorLine(e, "capture", fmt.Errorf("write pcap: %w", err))
			rc = 1
		}
	}
	fmt.Fprintf(e.stderr, "%d packets captured\n", captured)
	if end == nil {
		fmt.Fprintf(e.stderr, "fsstack capture: the daemon closed the capture without its counts (did it stop?)\n")
		return 1
	}
	fmt.Fprintf(e.stderr, "%d packets dropped because the reader was slow\n", end.Dropped)
	return rc
}
