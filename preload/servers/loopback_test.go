package servers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// haproxyLoopbackConf: the frontend on the lab's address (on fsstack with
// a daemon) and a second one on 127.0.0.1:81 (a loopback listener: a
// kernel socket under the shim), both to nginx on 127.0.0.1:8080 — a
// kernel server not under the shim, as a local app, php-fpm or redis on
// 127.0.0.1 would be.
const haproxyLoopbackConf = `global
	master-worker
	nbthread 2
	maxconn 4000
	pidfile {{DIR}}/haproxy.pid
	stats socket {{DIR}}/haproxy.sock mode 600 level admin expose-fd listeners
	log stderr format short local0 warning
defaults
	mode http
	log global
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	option http-keep-alive
	option splice-auto
frontend fe
	bind 198.18.0.1:80
	default_backend be
frontend lo
	bind 127.0.0.1:81
	default_backend be
backend be
	http-reuse safe
	server s1 127.0.0.1:8080
`

// TestHAProxyLoopbackBackend: haproxy under the shim proxies to a kernel
// nginx on 127.0.0.1:8080 in the server namespace. With a daemon, the
// stack has no loopback route, so the shim hands haproxy's backend
// sockets to the kernel at connect (sock.c, the handover); its frontend
// on the lab's address stays on fsstack (no kernel listener on port 80,
// the shards accept), and its frontend on 127.0.0.1:81 is handed over at
// bind, so a kernel client in the server namespace (a health check's
// curl 127.0.0.1) reaches it. Checked: the 64-byte and 1 MiB bodies by
// sha256 from the client namespace, keep-alive, Connection: close, wrk
// with and without keep-alive, parallel downloads, and the same through
// 127.0.0.1:81; nginx's access log must show the requests arrived.
func TestHAProxyLoopbackBackend(t *testing.T) {
	forModes(t, testHAProxyLoopback)
}

func testHAProxyLoopback(t *testing.T, mode string) {
	r := newRig(t, mode, "haproxy", "nginx", "wrk", "curl", "ss")
	backend, files := writeNginx(r, false, "127.0.0.1:8080", false)
	r.waitLoopback(backend, 8080, "error.log")

	conf := filepath.Join(r.dir, "haproxy.cfg")
	text := strings.NewReplacer("{{DIR}}", r.dir, "198.18.0.1", r.lab.ServerAddr.String()).Replace(haproxyLoopbackConf)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p := r.startServer("haproxy", "haproxy", "-W", "-f", conf)
	r.waitListen(p, 80)
	r.checkKernelListener(80)
	r.waitLoopback(p, 81)
	if !r.kernelListens("127.0.0.1:81") {
		t.Errorf("no kernel socket listens on 127.0.0.1:81 in the server namespace: haproxy's loopback frontend was not handed to the kernel")
	}

	for name, want := range files {
		r.checkGet(name, want)
	}
	r.checkKeepAlive(files, 3)
	r.curlClose(100)
	r.wrkConns(false, 50, "small.bin")
	r.wrkConns(true, 50, "small.bin")
	r.parallelBig(files["big.bin"], 8, 0)

	// the loopback frontend, from a kernel client in the server namespace
	for name, want := range files {
		out, stderr, err := r.serverClient(30*time.Second, "curl", "-sS", "--fail", "--max-time", "20", "http://127.0.0.1:81/"+name)
		if err != nil {
			t.Errorf("curl 127.0.0.1:81/%s in the server namespace: %v: %s", name, err, stderr)
		} else if sha256.Sum256(out) != sha256.Sum256(want) {
			t.Errorf("curl 127.0.0.1:81/%s: %d bytes, sha256 differs from the %d-byte file", name, len(out), len(want))
		}
	}

	r.checkAccepted(100, 1) // at least haproxy's worker
	log, _ := os.ReadFile(filepath.Join(r.dir, "access.log"))
	if n := bytes.Count(log, []byte(" 200 ")); n < 100 {
		t.Errorf("nginx on 127.0.0.1:8080 logged %d requests with status 200, want at least 100", n)
	}
	if backend.exited() {
		t.Errorf("nginx exited: %v\n%s%s", backend.waitErr(), backend.output(), r.files("error.log"))
	}
	if out := p.output(); strings.Contains(out, "ALERT") || strings.Contains(out, "is DOWN") {
		t.Errorf("haproxy:\n%s", out)
	}
	if err := syscall.Kill(p.pid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("haproxy did not exit within 15s of SIGUSR1:\n%s", p.output())
	}
	r.checkReleased()
	r.checkShimLinesExec(p)
}

// waitLoopback waits until something accepts on 127.0.0.1:port in the
// server namespace.
func (r *rig) waitLoopback(p *proc, port int, logs ...string) {
	t := r.t
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := netlab.Do(r.lab.ServerNS, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if p.exited() {
			t.Fatalf("%s exited before it listened on %s: %v\n%s%s", p.name, addr, p.waitErr(), p.output(), r.files(logs...))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept on %s in the server namespace after 30s (last: %v)\n%s%s", p.name, addr, err, p.output(), r.files(logs...))
		}
	}
}

// kernelListens reports whether a kernel socket listens on addr in the
// server namespace.
func (r *rig) kernelListens(addr string) bool {
	host, port, _ := net.SplitHostPort(addr)
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // ss's filter takes IPv6 addresses bracketed
	}
	out, err := exec.Command("ip", "netns", "exec", r.lab.ServerNS, "ss", "-Hltn",
		fmt.Sprintf("src %s and sport = :%s", host, port)).CombinedOutput()
	if err != nil {
		r.t.Fatalf("ss: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out)) != ""
}

// serverClient is client in the server namespace (never under the shim).
func (r *rig) serverClient(timeout time.Duration, name string, args ...string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := r.lab.Cmd(r.lab.ServerNS, name, args...)
	cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s did not finish in %v: %w", name, timeout, ctx.Err())
	}
	return so.Bytes(), se.String(), err
}
