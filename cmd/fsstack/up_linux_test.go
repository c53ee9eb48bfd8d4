//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/internal/netlab"
)

// TestUpOnLab runs the real binary's `up` on a netlab veth in its namespace.
// Whether the stack starts depends on the stack package; either way the
// daemon must behave: it serves stats with one shard per queue and stops
// cleanly on SIGTERM, or it exits 1 with one clear error line. Neither may
// leave the socket behind.
func TestUpOnLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if testing.Short() {
		t.Skip("builds the binary")
	}
	l, err := netlab.New(netlab.Options{Queues: 2, Name: "up"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bin := filepath.Join(t.TempDir(), "fsstack")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	sock := filepath.Join(t.TempDir(), "run", "fsstack.sock")
	cmd := exec.Command(bin, "up", "--iface", l.ServerIf, "--netns", l.ServerNS, "--queues", "2", "--socket", sock)
	var stderr syncBuffer
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer cmd.Process.Kill()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			stderr.Write([]byte(sc.Text() + "\n"))
			if !sent && strings.Contains(sc.Text(), "daemon ready") {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
	}()
	select {
	case up := <-ready:
		if !up {
			err := cmd.Wait()
			var ee *exec.ExitError
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(last, "fsstack up: start stack on "+l.ServerIf) {
				t.Fatalf("up failed without the clear error: %v\n%s", err, stderr.String())
			}
			t.Logf("stack did not start (allowed here): %s", last)
			break
		}
		var reply struct {
			Shards []map[string]any `json:"shards"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := control.Do(ctx, sock, "stats", nil, &reply)
		cancel()
		if err != nil || len(reply.Shards) != 2 {
			t.Errorf("stats: %v, %d shards", err, len(reply.Shards))
		}
		code, out, errs := runCmd("stats", "--socket", sock, "--json")
		if code != 0 || !json.Valid([]byte(out)) {
			t.Errorf("fsstack stats: %d %q %q", code, out, errs)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("up after SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("up did not stop on SIGTERM\n%s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("up neither ready nor failed after 30s\n%s", stderr.String())
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestLabCommand runs `fsstack lab` through the real binary, very short:
// the table goes to stdout, the JSON report to --json, and the exit status
// is 0, or 1 with the fsstack error said clearly while the kernel's numbers
// are still printed.
func TestLabCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if testing.Short() {
		t.Skip("builds the binary and runs a lab")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fsstack")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	report := filepath.Join(dir, "lab.json")
	cmd := exec.Command(bin, "lab", "--queues", "1", "--conns", "2", "--duration", "1s", "--warmup", "0", "--json", report)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		if !strings.Contains(stderr.String(), "fsstack lab: fsstack could not be measured (kernel numbers above): ") {
			t.Errorf("exit 1 without the fsstack error:\n%s", stderr.String())
		}
	default:
		t.Fatalf("fsstack lab: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "keep-alive requests/s") || !strings.Contains(stdout.String(), "report written to "+report) {
		t.Errorf("stdout:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "[kernel keepalive] done") {
		t.Errorf("no progress on stderr:\n%s", stderr.String())
	}
	b, rerr := os.ReadFile(report)
	var rep struct {
		Kernel struct {
			KeepAlive struct {
				Result struct {
					Requests uint64 `json:"requests"`
				} `json:"result"`
			} `json:"keepalive"`
		} `json:"kernel"`
	}
	if rerr != nil || json.Unmarshal(b, &rep) != nil || rep.Kernel.KeepAlive.Result.Requests == 0 {
		t.Errorf("report %s: %v\n%s", report, rerr, b)
	}
}

// startUpReady starts `up` and waits for "daemon ready"; it fails the test
// if the daemon does not get there.
func startUpReady(t *testing.T, bin string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"up"}, args...)...)
	stderr := &syncBuffer{}
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			stderr.Write([]byte(sc.Text() + "\n"))
			if !sent && strings.Contains(sc.Text(), "daemon ready") {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
	}()
	select {
	case up := <-ready:
		if !up {
			cmd.Wait()
			t.Fatalf("up exited before it was ready:\n%s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("up not ready after 30s\n%s", stderr.String())
	}
	return cmd, stderr
}

// TestUpAfterKill: `up` killed with SIGKILL leaves its ephemeral range in
// the namespace's ip_local_reserved_ports (and its lock file). The next
// `up` on the same socket starts, and once it stops cleanly the value the
// namespace had before the first one is back, and neither the lock file
// nor the reserved ports state file is left in the socket's directory.
func TestUpAfterKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if testing.Short() {
		t.Skip("builds the binary")
	}
	l, err := netlab.New(netlab.Options{Queues: 2, Name: "upk"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const orig = "1000,2000-2010"
	reserved := func() string {
		out, err := l.Cmd(l.ServerNS, "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports").Output()
		if err != nil {
			t.Fatalf("read ip_local_reserved_ports: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	if out, err := l.Cmd(l.ServerNS, "sysctl", "-qw", "net.ipv4.ip_local_reserved_ports="+orig).CombinedOutput(); err != nil {
		t.Fatalf("set ip_local_reserved_ports: %v: %s", err, out)
	}
	bin := filepath.Join(t.TempDir(), "fsstack")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "run")
	sock := filepath.Join(dir, "fsstack.sock")
	args := []string{"--iface", l.ServerIf, "--netns", l.ServerNS, "--queues", "2", "--socket", sock, "--ephemeral-ports", "61000-65499"}

	first, _ := startUpReady(t, bin, args...)
	first.Process.Kill()
	first.Wait()
	if got := reserved(); got != orig+",61000-65499" {
		t.Fatalf("after SIGKILL: ip_local_reserved_ports %q, want the range left reserved", got)
	}

	second, stderr := startUpReady(t, bin, args...)
	second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Fatalf("second up after SIGTERM: %v\n%s", err, stderr.String())
	}
	if got := reserved(); got != orig {
		t.Errorf("after the next clean stop: ip_local_reserved_ports %q, want the original %q\n%s", got, orig, stderr.String())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("left in the socket's directory after a clean stop: %s", e.Name())
	}
}
