package servers

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const nginxConf = `daemon off;
master_process on;
worker_processes 2;
user root;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log info;
events {
	worker_connections 1024;
	accept_mutex {{ACCEPT_MUTEX}};
}
http {
	log_format withpid '$pid $status $body_bytes_sent $request';
	access_log {{DIR}}/access.log withpid;
	client_body_temp_path {{DIR}}/tmp/body;
	proxy_temp_path {{DIR}}/tmp/proxy;
	fastcgi_temp_path {{DIR}}/tmp/fastcgi;
	uwsgi_temp_path {{DIR}}/tmp/uwsgi;
	scgi_temp_path {{DIR}}/tmp/scgi;
	default_type application/octet-stream;
	sendfile on;
	keepalive_timeout 65;
	server {
		listen {{LISTEN}};
		root {{DIR}}/www;
	}
}
`

// nginxFiles are the files nginx serves, by name.
type nginxFiles map[string][]byte

// startNginx writes the config and the files and starts nginx (a master and
// two workers, accept_mutex as given) under the shim; it returns when nginx
// accepts on port 80.
func startNginx(r *rig, acceptMutex bool) (*proc, nginxFiles) {
	r.t.Helper()
	return startNginxOn(r, acceptMutex, 80)
}

// startNginxOn is startNginx listening on port.
func startNginxOn(r *rig, acceptMutex bool, port int) (*proc, nginxFiles) {
	r.t.Helper()
	p, files := writeNginx(r, acceptMutex, fmt.Sprintf("%s:%d", r.lab.ServerAddr, port), true)
	r.waitListen(p, port, "error.log")
	r.checkKernelListener(port)
	return p, files
}

// writeNginx writes nginx's config (listening on listen) and files and
// starts it in the server namespace, under the shim or not.
func writeNginx(r *rig, acceptMutex bool, listen string, underShim bool) (*proc, nginxFiles) {
	t := r.t
	t.Helper()
	files := nginxFiles{"small.bin": make([]byte, 64), "big.bin": make([]byte, 1<<20)}
	for _, b := range files {
		rand.Read(b)
	}
	www := filepath.Join(r.dir, "www")
	for _, d := range []string{www, filepath.Join(r.dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(www, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(r.dir, "nginx.conf")
	mutex := "off"
	if acceptMutex {
		mutex = "on"
	}
	text := strings.NewReplacer("{{DIR}}", r.dir, "{{ACCEPT_MUTEX}}", mutex, "{{LISTEN}}", listen).Replace(nginxConf)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := []string{"nginx", "-p", r.dir, "-c", conf, "-e", filepath.Join(r.dir, "error.log")}
	if !underShim {
		return r.startCmd("nginx", r.lab.Cmd(r.lab.ServerNS, argv[0], argv[1:]...)), files
	}
	return r.startServer("nginx", argv...), files
}

func (r *rig) url(name string) string { return fmt.Sprintf("http://%s/%s", r.lab.ServerAddr, name) }

// TestNginx: nginx with a master and 2 workers, sendfile on, serves a
// 64-byte and a 1 MiB file whose sha256 as curl gets them must match, 200
// requests with Connection: close all succeed, and wrk (keep-alive, then
// Connection: close) sees no error.
func TestNginx(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		r := newRig(t, mode, "nginx", "wrk")
		p, files := startNginx(r, false)

		for _, name := range []string{"small.bin", "big.bin"} {
			out, stderr, err := r.client(30*time.Second, "curl", "-sS", "--fail", "--max-time", "20", r.url(name))
			if err != nil {
				t.Fatalf("curl %s: %v: %s%s", name, err, stderr, r.files("error.log"))
			}
			want := sha256.Sum256(files[name])
			if got := sha256.Sum256(out); got != want {
				t.Errorf("%s: got %d bytes with sha256 %x, want %d bytes with %x", name, len(out), got, len(files[name]), want)
			}
		}

		const n = 200
		r.curlClose(n)
		r.wrk(false)
		r.wrk(true)
		t.Logf("requests per nginx worker: %s", workerSplit(r))

		r.checkAccepted(n+2, 3) // the master and its 2 workers attach
		if p.exited() {
			t.Fatalf("nginx exited: %v\n%s%s", p.waitErr(), p.output(), r.files("error.log"))
		}
		if ok, left := p.stopWatch(syscall.SIGQUIT /* graceful */, 10*time.Second); !ok {
			t.Errorf("nginx did not stop within 10s of SIGQUIT; its processes then:\n%s", left)
		}
		r.checkReleased()
		r.checkShimLines(p, "error.log")
		if crashes := crashLines(r.files("error.log")); crashes != "" {
			t.Errorf("nginx processes crashed:\n%s", crashes)
		}
	})
}

// TestNginxAcceptMutex: the same nginx with accept_mutex on (workers take
// turns holding the listener in their epoll set; Fastsocket's trap for
// per-core listen tables): no connection may be stranded.
func TestNginxAcceptMutex(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		r := newRig(t, mode, "nginx", "wrk")
		p, _ := startNginx(r, true)
		const n = 200
		r.curlClose(n)
		r.wrk(true)
		t.Logf("requests per nginx worker: %s", workerSplit(r))
		r.checkAccepted(n+1, 3)
		if p.exited() {
			t.Fatalf("nginx exited: %v\n%s%s", p.waitErr(), p.output(), r.files("error.log"))
		}
		if ok, left := p.stopWatch(syscall.SIGQUIT, 10*time.Second); !ok {
			t.Errorf("nginx did not stop within 10s of SIGQUIT; its processes then:\n%s", left)
		}
		r.checkReleased()
		r.checkShimLines(p, "error.log")
		if crashes := crashLines(r.files("error.log")); crashes != "" {
			t.Errorf("nginx processes crashed:\n%s", crashes)
		}
	})
}

// crashLines returns nginx's error.log lines about workers that died by a
// signal.
func crashLines(log string) string {
	var out []string
	for l := range strings.SplitSeq(log, "\n") {
		if strings.Contains(l, "exited on signal") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// clipLines keeps the first n lines of s.
func clipLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return strings.Join(lines[:n], "") + fmt.Sprintf("... (%d more lines)\n", len(lines)-n)
}

// curlClose makes n requests for small.bin with "Connection: close" in one
// curl, from the client namespace; each must be a 200 with 64 bytes on a
// new connection (curl reuses nothing after "Connection: close", and
// num_connects says so).
func (r *rig) curlClose(n int) {
	r.t.Helper()
	r.curlCloseURL(n, r.url("small.bin"), regexp.MustCompile(`^200 1 64$`))
}

// curlCloseURL is curlClose for url; curl's "code connects size" line of
// every request must match ok.
func (r *rig) curlCloseURL(n int, url string, ok *regexp.Regexp) {
	t := r.t
	t.Helper()
	args := []string{"-sS", "--max-time", "60", "-H", "Connection: close",
		"-w", "%{http_code} %{num_connects} %{size_download}\n"}
	for range n {
		args = append(args, "-o", "/dev/null", url)
	}
	out, stderr, err := r.client(90*time.Second, "curl", args...)
	if err != nil {
		t.Errorf("curl with %d Connection: close requests: %v: %s", n, err, stderr)
	}
	good := 0
	for l := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if ok.MatchString(l) {
			good++
		}
	}
	if good != n {
		t.Errorf("%d of %d Connection: close requests to %s were answered as %s on a new connection; curl said:\n%s\n%s%s",
			good, n, url, ok, clipLines(string(out), 20), stderr, r.files("error.log"))
	}
}

// wrk loads small.bin for 2s with 2 threads and 20 connections, keep-alive
// or "Connection: close"; every response must be a 2xx and no socket error
// may occur.
func (r *rig) wrk(closeConns bool) {
	r.t.Helper()
	r.wrkConns(closeConns, 20, "small.bin")
}

// wrkConns is wrk with conns connections, for the file name.
func (r *rig) wrkConns(closeConns bool, conns int, name string) {
	t := r.t
	t.Helper()
	args := []string{"-t", "2", "-c", strconv.Itoa(conns), "-d", "2s", "--timeout", "5s"}
	what := "keep-alive"
	if closeConns {
		args = append(args, "-H", "Connection: close")
		what = "Connection: close"
	}
	out, stderr, err := r.client(30*time.Second, "wrk", append(args, r.url(name))...)
	res := string(out) + stderr
	if err != nil {
		t.Errorf("wrk %s: %v\n%s", what, err, res)
		return
	}
	m := regexp.MustCompile(`(\d+) requests in`).FindStringSubmatch(res)
	if m == nil || m[1] == "0" {
		t.Errorf("wrk %s (%d connections) made no requests:\n%s", what, conns, res)
	}
	if strings.Contains(res, "Socket errors") || strings.Contains(res, "Non-2xx") {
		t.Errorf("wrk %s saw errors:\n%s%s", what, res, r.files("error.log"))
	}
	if l := regexpLine(res, `^Requests/sec:`); l != "" && m != nil {
		t.Logf("wrk %s: %s requests, %s", what, m[1], l)
	}
}

// workerSplit counts the requests in access.log by nginx worker pid.
func workerSplit(r *rig) string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "access.log"))
	count := map[string]int{}
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if pid, _, ok := strings.Cut(l, " "); ok {
			count[pid]++
		}
	}
	var parts []string
	for pid, c := range count {
		parts = append(parts, fmt.Sprintf("pid %s: %d", pid, c))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// TestNginxAnyLoopback: nginx listening on 0.0.0.0:80 (`listen 80`) serves
// the client namespace through the server address and, as on the kernel, a
// health check in the server namespace through 127.0.0.1 (a kernel client:
// the stack has no loopback, so the listener's placeholder listens on
// 127.0.0.1:80 too and accept merges both queues). The access log shows
// both kinds of request.
func TestNginxAnyLoopback(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		r := newRig(t, mode, "nginx", "curl", "ss")
		p, files := writeNginx(r, false, "80", true)
		r.waitListen(p, 80, "error.log")
		r.checkKernelListener(80)
		if mode == modeFsstack && !r.kernelListens("127.0.0.1:80") {
			t.Errorf("fsstack: nothing listens on 127.0.0.1:80 in the server namespace: the 0.0.0.0 listener's placeholder does not")
		}
		for round := 0; round < 3; round++ {
			for name, want := range files {
				r.checkGet(name, want)
				out, stderr, err := r.serverClient(30*time.Second, "curl", "-sS", "--fail", "--max-time", "20", "http://127.0.0.1/"+name)
				if err != nil {
					t.Fatalf("curl 127.0.0.1/%s in the server namespace: %v: %s%s", name, err, stderr, r.files("error.log"))
				}
				if sha256.Sum256(out) != sha256.Sum256(want) {
					t.Errorf("curl 127.0.0.1/%s: %d bytes, sha256 differs from the %d-byte file", name, len(out), len(want))
				}
			}
		}
		if ok, left := p.stopWatch(syscall.SIGQUIT, 15*time.Second); !ok {
			t.Errorf("nginx did not stop within 15s of SIGQUIT; its processes then:\n%s", left)
		}
		r.checkReleased()
	})
}

// TestNginxDualStack: nginx with Debian's stock listen lines (`listen 80;
// listen [::]:80;`: an AF_INET socket on 0.0.0.0 and an AF_INET6 one on
// [::] with IPV6_V6ONLY, nginx's ipv6only=on) serves the 64-byte and the
// 1 MiB file byte-exact to the client namespace over IPv4 and over IPv6,
// keep-alive and not; with a daemon both listeners are on fsstack (no
// kernel listener but their loopback sides, 127.0.0.1:80 and [::1]:80),
// and a health check in the server namespace reaches both of those.
func TestNginxDualStack(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		r := newRig(t, mode, "nginx", "curl", "ss")
		if !r.lab.ServerAddr6.IsValid() {
			t.Fatal("the lab has no IPv6 addresses")
		}
		p, files := writeNginx(r, false, "80;\n\t\tlisten [::]:80", true)
		r.waitListen(p, 80, "error.log")
		r.checkKernelListener(80)
		if mode == modeFsstack {
			for _, lo := range []string{"127.0.0.1:80", "[::1]:80"} {
				if !r.kernelListens(lo) {
					t.Errorf("fsstack: nothing listens on %s in the server namespace: the wildcard listener's placeholder does not", lo)
				}
			}
		}
		v6 := "[" + r.lab.ServerAddr6.String() + "]"
		get := func(client func(time.Duration, string, ...string) ([]byte, string, error), url string, want []byte) {
			t.Helper()
			out, stderr, err := client(30*time.Second, "curl", "-sS", "--fail", "--max-time", "20", url)
			if err != nil {
				t.Fatalf("curl %s: %v: %s%s", url, err, stderr, r.files("error.log"))
			}
			if !bytes.Equal(out, want) {
				t.Errorf("curl %s: %d bytes, differ from the %d-byte file", url, len(out), len(want))
			}
		}
		for round := 0; round < 3; round++ {
			for name, want := range files {
				get(r.client, "http://"+r.lab.ServerAddr.String()+"/"+name, want)
				get(r.client, "http://"+v6+"/"+name, want)
				get(r.serverClient, "http://127.0.0.1/"+name, want)
				get(r.serverClient, "http://[::1]/"+name, want)
			}
		}
		// keep-alive over IPv6: one connection for every request
		args := []string{"-sS", "--fail", "--max-time", "60", "-w", "%{num_connects}\n"}
		for range 3 {
			for name := range files {
				args = append(args, "-o", "/dev/null", "http://"+v6+"/"+name)
			}
		}
		out, stderr, err := r.client(60*time.Second, "curl", args...)
		if err != nil {
			t.Fatalf("keep-alive curl over IPv6: %v: %s", err, stderr)
		}
		if n := strings.Count(string(out), "1\n"); n != 1 {
			t.Errorf("keep-alive curl over IPv6 connected %q times, want once then reuse", out)
		}
		log, _ := os.ReadFile(filepath.Join(r.dir, "access.log"))
		if n := bytes.Count(log, []byte(" 200 ")); n < 4*3*len(files) {
			t.Errorf("nginx logged %d requests with status 200, want at least %d", n, 4*3*len(files))
		}
		if ok, left := p.stopWatch(syscall.SIGQUIT, 15*time.Second); !ok {
			t.Errorf("nginx did not stop within 15s of SIGQUIT; its processes then:\n%s", left)
		}
		r.checkReleased()
	})
}
