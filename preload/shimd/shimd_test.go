package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fsstack/fsstack/preload/daemon"
)

// The end-to-end tests run the real C shim (built from preload/shim with
// its own Makefile) against this daemon on the kernel backend.

type e2e struct {
	dir, sock, so string
	d             *daemon.Daemon
}

func setup(t *testing.T, targets ...string) *e2e {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	shimDir := filepath.Join(filepath.Dir(file), "..", "shim")
	dir := t.TempDir()
	obj := filepath.Join(dir, "obj")
	so := filepath.Join(dir, "libfsstack.so")
	args := []string{"-s", "-C", shimDir, "OBJDIR=" + obj, "OUT=" + so, so}
	for _, tg := range targets {
		args = append(args, filepath.Join(obj, tg))
	}
	if out, err := exec.Command("make", args...).CombinedOutput(); err != nil {
		t.Fatalf("build the shim (make %s): %v\n%s", strings.Join(args, " "), err, out)
	}
	e := &e2e{dir: dir, sock: filepath.Join(dir, "fsstack.sock"), so: so}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *daemon.Daemon, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	go func() { done <- run(ctx, e.sock, 0, log, ready) }()
	select {
	case e.d = <-ready:
	case err := <-done:
		t.Fatalf("daemon: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return e
}

func (e *e2e) env() []string {
	return append(os.Environ(), "LD_PRELOAD="+e.so, "FSSTACK_SOCKET="+e.sock, "FSSTACK_FALLBACK=fail")
}

// TestShimEcho runs the shim's own echo program (socket options, non-
// blocking connect, accept4, epoll LT/ET, poll, select, readv/writev,
// sendmsg/recvmsg, sendfile, shutdown, FIONREAD, dup2, fork) on fsstack.
func TestShimEcho(t *testing.T) {
	e := setup(t, "t_echo")
	cmd := exec.Command(filepath.Join(e.dir, "obj", "t_echo"))
	cmd.Env = e.env()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "t_echo: ok") {
		t.Fatalf("t_echo under the shim: %v\n%s", err, out)
	}
	if st := e.d.Stats(); st.Attached < 2 {
		t.Errorf("t_echo forks, so at least 2 attaches; stats %+v", st)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestNginx: Debian's nginx, a master and 2 workers, sendfile on, serves a
// 64-byte and a 1 MiB file through the shim; what curl-like clients get
// must hash the same.
func TestNginx(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx is not installed (apt-get install nginx-light)")
	}
	e := setup(t)
	www := filepath.Join(e.dir, "www")
	os.MkdirAll(filepath.Join(e.dir, "logs"), 0o755)
	os.MkdirAll(www, 0o755)
	files := map[string][]byte{"small.bin": make([]byte, 64), "big.bin": make([]byte, 1<<20)}
	for name, b := range files {
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(www, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers must read the test's private temp dir
	}
	conf := fmt.Sprintf(`daemon off;
%[3]s
master_process on;
worker_processes 2;
error_log %[1]s/logs/error.log info;
pid %[1]s/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:%[2]d; root %[1]s/www; }
}
`, e.dir, port, user)
	confPath := filepath.Join(e.dir, "nginx.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	cmd := exec.Command(nginx, "-c", confPath, "-p", e.dir)
	cmd.Env = e.env()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var resp *http.Response
		if resp, last = client.Get(fmt.Sprintf("http://127.0.0.1:%d/small.bin", port)); last == nil {
			resp.Body.Close()
			break
		}
	}
	if last != nil {
		b, _ := os.ReadFile(filepath.Join(e.dir, "logs", "error.log"))
		t.Fatalf("nginx under the shim never answered: %v\n%s", last, b)
	}
	for round := range 20 {
		for name, want := range files {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/%s", port, name))
			if err != nil {
				t.Fatalf("round %d %s: %v", round, name, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || sha256.Sum256(got) != sha256.Sum256(want) {
				t.Fatalf("round %d %s: %s, %d bytes, %v; content differs", round, name, resp.Status, len(got), err)
			}
		}
	}
	if st := e.d.Stats(); st.Attached < 3 {
		t.Errorf("master and 2 workers attach; stats %+v", st)
	}
}

// TestLostDoorbell: a doorbell the daemon never sees (a lost wake-up, the
// fault LoseNextDoorbell makes) must not block the shim for good: a
// request unanswered for 100 ms rings again, and the program finishes.
func TestLostDoorbell(t *testing.T) {
	e := setup(t, "t_echo")
	lost := e.d.LoseNextDoorbell()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.dir, "obj", "t_echo"))
	cmd.Env = e.env()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "t_echo: ok") {
		t.Fatalf("t_echo under the shim with a doorbell lost: %v after %v\n%s", err, time.Since(start).Round(time.Millisecond), out)
	}
	if !lost() {
		t.Fatal("the daemon lost no doorbell: the fault never happened, so this proves nothing")
	}
}
