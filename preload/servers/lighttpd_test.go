package servers

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const lighttpdConf = `server.document-root = "{{DIR}}/www"
server.bind = "198.18.0.1"
server.port = 80
server.pid-file = "{{DIR}}/lighttpd.pid"
server.errorlog = "{{DIR}}/error.log"
server.event-handler = "{{HANDLER}}"
server.max-fds = 4096
server.max-connections = 1024
server.max-keep-alive-requests = 1000
server.max-keep-alive-idle = 30
server.modules = ( "mod_accesslog" )
accesslog.filename = "{{DIR}}/access.log"
mimetype.assign = ( "" => "application/octet-stream" )
`

// TestLighttpd: lighttpd (one process, its default epoll event handler, and
// poll) serves a 64-byte and a 1 MiB file whose sha256 as curl gets them
// must match, on new connections and on one keep-alive connection; 200
// Connection: close requests; wrk with 200 concurrent connections,
// keep-alive and close, sees no error.
func TestLighttpd(t *testing.T) {
	for _, handler := range []string{"linux-sysepoll", "poll"} {
		t.Run(strings.TrimPrefix(handler, "linux-sys"), func(t *testing.T) {
			forModes(t, func(t *testing.T, mode string) { testLighttpd(t, mode, handler) })
		})
	}
}

func testLighttpd(t *testing.T, mode, handler string) {
	r := newRig(t, mode, "lighttpd", "wrk")
	files := nginxFiles{"small.bin": make([]byte, 64), "big.bin": make([]byte, 1<<20)}
	www := filepath.Join(r.dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(www, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(r.dir, "lighttpd.conf")
	text := strings.NewReplacer("{{DIR}}", r.dir, "{{HANDLER}}", handler).Replace(lighttpdConf)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p := r.startServer("lighttpd", "lighttpd", "-D", "-f", conf)
	r.waitListen(p, 80, "error.log")
	r.checkKernelListener(80)

	// each file on a new connection, then both files three times on one
	// keep-alive connection (curl reuses it: one connect in all)
	for name, want := range files {
		r.checkGet(name, want)
	}
	r.checkKeepAlive(files, 3)
	r.curlClose(200)
	r.wrkConns(false, 200, "small.bin")
	r.wrkConns(true, 200, "small.bin")
	r.wrkConns(false, 50, "big.bin")

	r.checkAccepted(200+2, 1)
	if p.exited() {
		t.Fatalf("lighttpd exited: %v\n%s%s", p.waitErr(), p.output(), r.files("error.log"))
	}
	if ok, left := p.stopWatch(syscall.SIGINT /* graceful: finish and exit */, 10*time.Second); !ok {
		t.Errorf("lighttpd did not stop within 10s of SIGINT; its processes then:\n%s", left)
	}
	r.checkReleased()
	r.checkShimLines(p, "error.log")
}

// checkGet fetches name with curl on a new connection and compares its
// sha256 with want's.
func (r *rig) checkGet(name string, want []byte) {
	t := r.t
	t.Helper()
	out, stderr, err := r.client(30*time.Second, "curl", "-sS", "--fail", "--max-time", "20", r.url(name))
	if err != nil {
		t.Fatalf("curl %s: %v: %s%s", name, err, stderr, r.files("error.log"))
	}
	if got, w := sha256.Sum256(out), sha256.Sum256(want); got != w {
		t.Errorf("%s: got %d bytes with sha256 %x, want %d bytes with %x", name, len(out), got, len(want), w)
	}
}

// checkKeepAlive fetches every file rounds times with one curl, which
// keeps one connection alive for all of them; every body must match and
// curl must have connected once.
func (r *rig) checkKeepAlive(files nginxFiles, rounds int) {
	t := r.t
	t.Helper()
	out := filepath.Join(r.dir, "ka")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"-sS", "--fail", "--max-time", "60", "-w", "%{num_connects}\n"}
	var names []string
	for i := range rounds {
		for name := range files {
			f := fmt.Sprintf("%s.%d", name, i)
			names = append(names, f)
			args = append(args, "-o", filepath.Join(out, f), r.url(name))
		}
	}
	stdout, stderr, err := r.client(90*time.Second, "curl", args...)
	if err != nil {
		t.Fatalf("keep-alive curl: %v: %s%s", err, stderr, r.files("error.log"))
	}
	connects := 0
	for l := range strings.SplitSeq(strings.TrimSpace(string(stdout)), "\n") {
		if l == "1" {
			connects++
		}
	}
	if connects != 1 {
		t.Errorf("keep-alive: curl connected %d times for %d requests, want 1 (num_connects per request: %q)", connects, len(names), stdout)
	}
	for _, f := range names {
		got, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		name := f[:strings.LastIndexByte(f, '.')]
		if sha256.Sum256(got) != sha256.Sum256(files[name]) {
			t.Errorf("keep-alive %s: %d bytes, sha256 differs from the %d-byte file", f, len(got), len(files[name]))
		}
	}
}
