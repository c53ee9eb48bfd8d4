package control

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/testutil"
)

// openToAll makes dir and its parent searchable by every uid (t.TempDir
// creates them 0700).
func openToAll(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// serveWith starts a server configured by set (before it serves) on a
// fresh socket that every uid may connect to.
func serveWith(t *testing.T, set func(*Server)) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	openToAll(t, dir)
	path := filepath.Join(dir, "ctl.sock")
	ln, err := Listen(path, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(nil)
	set(s)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return s, path
}

// askOps sends the "ops" request on c and reports whether a reply came
// (false: the server closed the connection).
func askOps(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, `{"op":"ops"}`+"\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("no reply and no close within 10s")
		}
		return false
	}
	return strings.Contains(line, `"ops"`)
}

// TestMaxConnsPerUID: a uid other than root holds at most MaxConnsPerUID
// connections; more are closed at accept, root is still served, and the
// uid gets a connection again once it closes one of its own.
func TestMaxConnsPerUID(t *testing.T) {
	s, path := serveWith(t, func(s *Server) { s.MaxConnsPerUID = 2 })
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	answered := 0
	testutil.AsUID(t, testutil.Nobody, func() {
		for range 4 {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Errorf("connect as uid %d: %v", testutil.Nobody, err)
				return
			}
			held = append(held, c)
			if askOps(t, c) {
				answered++
			}
		}
	})
	if answered != 2 {
		t.Fatalf("uid %d got %d of 4 connections served, want the cap, 2", testutil.Nobody, answered)
	}
	if n := s.ConnsRefused(); n != 2 {
		t.Errorf("ConnsRefused = %d, want 2", n)
	}
	// Root is not capped: an operator's stats still answer.
	for range 3 {
		if got := raw(t, path, `{"op":"ops"}`+"\n"); !strings.Contains(got[0], `"ops"`) {
			t.Fatalf("root's request while uid %d holds its cap: %q", testutil.Nobody, got)
		}
	}
	// One of the uid's served connections closes: it may connect again
	// (once the server has seen the close).
	held[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for ok := false; !ok; {
		testutil.AsUID(t, testutil.Nobody, func() {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Errorf("connect as uid %d: %v", testutil.Nobody, err)
				return
			}
			held = append(held, c)
			ok = askOps(t, c)
		})
		if !ok && time.Now().After(deadline) {
			t.Fatalf("uid %d still refused 10s after closing one of its connections", testutil.Nobody)
		}
	}
}

// TestHelloTimeout: a connection that never sends anything is closed
// after HelloTimeout; one that sent its first request is not bound by it
// any more (IdleTimeout 0: it may stay idle).
func TestHelloTimeout(t *testing.T) {
	other := make(chan struct{}, 1)
	_, path := serveWith(t, func(s *Server) {
		s.HelloTimeout = time.Second
		s.HandleOther(func(ctx context.Context, c net.Conn, first []byte) error {
			other <- struct{}{}
			c.Close()
			return nil
		})
	})
	silent, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("silent connection: read %d, %v; want EOF (closed by the server)", n, err)
	}
	select {
	case <-other:
		t.Fatal("a silent connection reached the other protocol's handler")
	default:
	}

	talker, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer talker.Close()
	if !askOps(t, talker) {
		t.Fatal("first request not answered")
	}
	time.Sleep(1500 * time.Millisecond) // past HelloTimeout
	if !askOps(t, talker) {
		t.Fatal("a connection that had spoken was closed by the hello deadline")
	}
}
