//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/internal/netlab"
	"github.com/fsstack/fsstack/internal/testutil"
	"github.com/fsstack/fsstack/stack"
)

// TestCaptureNeedsRoot: a capture shows every user's traffic, so the
// daemon refuses users other than root and its own, with an error that
// says so, both to the op and to the command.
func TestCaptureNeedsRoot(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		os.Chmod(d, 0o755) // nobody must reach the socket to be refused by the daemon
	}
	path := filepath.Join(dir, "ctl.sock")
	ln, err := control.Listen(path, SocketMode)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.HandleStream("capture", serveCapture(&fakeStack{}, "veth9", slog.New(slog.NewTextHandler(io.Discard, nil))))
	go srv.Serve(ln)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opErr error
	var code int
	var errs string
	testutil.AsUID(t, testutil.Nobody, func() {
		c, err := control.Dial(ctx, path)
		if err != nil {
			opErr = err
			return
		}
		defer c.Close()
		opErr = c.Stream(ctx, "capture", captureRequest{}, nil)
		code, _, errs = runCmd("capture", "--socket", path, "-w", "-")
	})
	var re *control.RemoteError
	if !errors.As(opErr, &re) || !strings.Contains(re.Msg, "capture needs root") || !strings.Contains(re.Msg, fmt.Sprint(testutil.Nobody)) {
		t.Errorf("capture op as nobody: %v; want a refusal saying capture needs root", opErr)
	}
	if code != 1 || !strings.Contains(errs, "fsstack capture: capture needs root") {
		t.Errorf("fsstack capture as nobody: exit %d, stderr %q", code, errs)
	}
	// Root is served; and the daemon says which interface it serves when
	// asked for another.
	c, err := control.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var start captureStart
	if err := c.Stream(ctx, "capture", captureRequest{}, &start); err != nil || !start.OK || start.Iface != "veth9" {
		t.Errorf("capture as root: %v %+v", err, start)
	}
	if code, _, errs := runCmd("capture", "--socket", path, "-i", "eth7", "-w", "-"); code != 1 || !strings.Contains(errs, "serves veth9, not eth7") {
		t.Errorf("-i eth7: exit %d, stderr %q", code, errs)
	}
}

func TestCaptureUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		errs string
	}{
		{[]string{"udp"}, 2, `"udp" is not supported; supported: tcp, [src|dst] host`},
		{[]string{"port", "80", "and"}, 2, "expression ends"},
		{[]string{"--shard", "-2"}, 2, "numbered from 0"},
		{[]string{"-c", "-1"}, 2, "must not be negative"},
		{[]string{"--socket", "/nonexistent/fsstack.sock", "-w", "-", "port", "80"}, 1, "no daemon at /nonexistent/fsstack.sock"},
	} {
		code, _, errs := runCmd(append([]string{"capture"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errs, tc.errs) {
			t.Errorf("capture %q: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.errs)
		}
	}
	code, out, _ := runCmd("capture", "--help")
	if code != 0 || !strings.Contains(out, "Usage: fsstack capture") || !strings.Contains(out, "src host A") || !strings.Contains(out, "--shard") {
		t.Errorf("capture --help: exit %d\n%s", code, out)
	}
}

// TestCaptureHTTP runs the daemon on a lab's stack, captures with the real
// binary while curl fetches a page over fsstack, and reads the pcap with
// gopacket: the whole handshake, the request, the response and both FINs
// are there, in both directions. A second capture at the same time,
// filtered to another port, records only that port's connection; a third
// for a shard that does not exist is refused naming the valid range.
func TestCaptureHTTP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root for network namespaces; run 'make test' as root")
	}
	if testing.Short() {
		t.Skip("builds the binary and runs a lab")
	}
	l, err := netlab.New(netlab.Options{Queues: 2, Name: "cap"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	bin := filepath.Join(dir, "fsstack")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	// The daemon, in this process, so the test can serve HTTP on its stack.
	started := make(chan *stack.Stack, 1)
	oldNew, oldSigs := newStack, upSignals
	newStack = func(cfg stack.Config) (daemonStack, error) {
		s, err := stack.New(cfg)
		if err != nil {
			return nil, err
		}
		started <- s
		return s, nil
	}
	upSignals = []os.Signal{syscall.SIGUSR1}
	defer func() { newStack, upSignals = oldNew, oldSigs }()
	sock := filepath.Join(dir, "run", "fsstack.sock")
	done := make(chan int, 1)
	var upErr syncBuffer
	go func() {
		done <- run(&env{stdout: &upErr, stderr: &upErr}, []string{"up", "--iface", l.ServerIf, "--netns", l.ServerNS, "--queues", "2", "--socket", sock})
	}()
	defer func() {
		syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("up did not stop\n%s", upErr.String())
		}
	}()
	var st *stack.Stack
	select {
	case st = <-started:
	case code := <-done:
		t.Fatalf("up exited %d before its stack started:\n%s", code, upErr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no stack after 30s:\n%s", upErr.String())
	}
	waitFor(t, "daemon ready", func() bool { return strings.Contains(upErr.String(), "daemon ready") })
	const body = "captured body\n"
	for _, port := range []string{":80", ":81"} {
		ln, err := st.Listen("tcp", port)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
		go srv.Serve(ln)
		defer srv.Close()
	}

	// startCapture runs `fsstack capture` and waits until it captures. The
	// returned channel closes once all of its stderr has been copied: Wait
	// does not wait for that, since the pipe is read here.
	startCapture := func(args ...string) (*exec.Cmd, *syncBuffer, chan struct{}) {
		cmd := exec.Command(bin, append([]string{"capture", "--socket", sock}, args...)...)
		stderr := &syncBuffer{}
		pr, pw, _ := os.Pipe()
		cmd.Stderr = pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		ready := make(chan bool, 1)
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			sc := bufio.NewScanner(pr)
			sent := false
			for sc.Scan() {
				stderr.Write([]byte(sc.Text() + "\n"))
				if !sent && strings.Contains(sc.Text(), "capturing on") {
					ready <- true
					sent = true
				}
			}
			if !sent {
				ready <- false
			}
		}()
		select {
		case ok := <-ready:
			if !ok {
				cmd.Wait()
				t.Fatalf("capture %q ended before capturing:\n%s", args, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("capture %q not capturing after 10s:\n%s", args, stderr.String())
		}
		return cmd, stderr, copied
	}
	all := filepath.Join(dir, "all.pcap")
	other := filepath.Join(dir, "port81.pcap")
	capAll, errAll, copiedAll := startCapture("-w", all)
	capOther, errOther, copiedOther := startCapture("-w", other, "tcp", "port", "81")

	code, _, errs := runCmd("capture", "--socket", sock, "--shard", "2", "-w", "-")
	if code != 1 || !strings.Contains(errs, "no such shard 2: this stack has shards 0-1") {
		t.Errorf("--shard 2 on 2 shards: exit %d, stderr %q", code, errs)
	}

	for _, port := range []string{"80", "81"} {
		out, err := l.Cmd(l.ClientNS, "curl", "-sS", "--max-time", "10", "-d", "hello=capture", "http://"+l.ServerAddr.String()+":"+port+"/").CombinedOutput()
		if err != nil || string(out) != body {
			t.Fatalf("curl port %s: %v: %q", port, err, out)
		}
	}
	// The server's FIN and the last ACK: every connection closed, then a
	// moment for the frames to reach the captures.
	waitFor(t, "connections closed", func() bool {
		var open int64
		for _, ss := range st.Stats() {
			open += ss.Open
		}
		return open == 0
	})
	time.Sleep(300 * time.Millisecond)

	stop := func(cmd *exec.Cmd, stderr *syncBuffer, copied chan struct{}) {
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		select {
		case <-copied:
		case <-time.After(5 * time.Second):
			t.Errorf("capture's stderr still open 5s after it exited")
		}
		if err != nil {
			t.Errorf("capture after SIGINT: %v\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "packets captured\n") || !strings.Contains(stderr.String(), "0 packets dropped because the reader was slow") {
			t.Errorf("capture's counts on stderr:\n%s", stderr.String())
		}
	}
	stop(capAll, errAll, copiedAll)
	stop(capOther, errOther, copiedOther)

	segs := readSegments(t, all)
	client, server := l.ClientAddr.String(), l.ServerAddr.String()
	for _, want := range []struct {
		what     string
		src, dst string
		port     uint16 // server port
		match    func(tcp *layers.TCP) bool
	}{
		{"client SYN", client, server, 80, func(tcp *layers.TCP) bool { return tcp.SYN && !tcp.ACK }},
		{"server SYN-ACK", server, client, 80, func(tcp *layers.TCP) bool { return tcp.SYN && tcp.ACK }},
		{"client ACK of the handshake", client, server, 80, func(tcp *layers.TCP) bool {
			return !tcp.SYN && tcp.ACK && len(tcp.Payload) == 0 && !tcp.FIN
		}},
		{"request", client, server, 80, func(tcp *layers.TCP) bool {
			return bytes.HasPrefix(tcp.Payload, []byte("POST / HTTP/1.1")) || bytes.Contains(tcp.Payload, []byte("hello=capture"))
		}},
		{"response", server, client, 80, func(tcp *layers.TCP) bool {
			return bytes.HasPrefix(tcp.Payload, []byte("HTTP/1.1 200 OK")) && bytes.Contains(tcp.Payload, []byte(body))
		}},
		{"client FIN", client, server, 80, func(tcp *layers.TCP) bool { return tcp.FIN }},
		{"server FIN", server, client, 80, func(tcp *layers.TCP) bool { return tcp.FIN }},
		{"port 81's request", client, server, 81, func(tcp *layers.TCP) bool { return len(tcp.Payload) > 0 }},
	} {
		found := false
		for _, s := range segs {
			port := s.tcp.DstPort
			if s.src == server {
				port = s.tcp.SrcPort
			}
			if s.src == want.src && s.dst == want.dst && uint16(port) == want.port && want.match(s.tcp) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s (%s -> %s, port %d) not in the capture of %d segments", want.what, want.src, want.dst, want.port, len(segs))
		}
	}

	// tcpdump, where installed, reads the file too.
	if td, err := exec.LookPath("tcpdump"); err == nil {
		out, err := exec.Command(td, "-nr", all, "tcp port 80").CombinedOutput()
		if err != nil || strings.Count(string(out), "Flags [S") < 2 || !strings.Contains(string(out), "Flags [F") {
			t.Errorf("tcpdump -r: %v\n%s", err, out)
		}
	}

	filtered := readSegments(t, other)
	t.Logf("%d segments captured; %d by the capture filtered to port 81", len(segs), len(filtered))
	if len(filtered) == 0 {
		t.Error("the capture filtered to port 81 recorded nothing")
	}
	in, out := 0, 0
	for _, s := range filtered {
		if s.tcp.SrcPort != 81 && s.tcp.DstPort != 81 {
			t.Errorf("the capture filtered to port 81 recorded %s:%d -> %s:%d", s.src, s.tcp.SrcPort, s.dst, s.tcp.DstPort)
		}
		if s.src == client {
			in++
		} else {
			out++
		}
	}
	if in == 0 || out == 0 {
		t.Errorf("the filtered capture has %d segments in and %d out; want both directions", in, out)
	}
}

type segment struct {
	src, dst string
	tcp      *layers.TCP
}

// readSegments decodes every TCP segment of a pcap file with gopacket.
func readSegments(t *testing.T, path string) []segment {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not pcap: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	var segs []segment
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil {
			t.Errorf("%s: a frame that is not IPv4 TCP: %v", path, p)
			continue
		}
		segs = append(segs, segment{src: ip.SrcIP.String(), dst: ip.DstIP.String(), tcp: tcp})
	}
	return segs
}
