package servers

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fsstack/fsstack/internal/control"
)

// TestProbeAttach checks the one skip rule of the fsstack-mode tests: the
// probe skips only for a control socket that answers the attach hello
// with JSON (a daemon not wired to the shim), passes one that answers
// FSSR (even a refusal), and reports anything else as an error.
func TestProbeAttach(t *testing.T) {
	serve := func(t *testing.T, other control.ConnHandler) string {
		sock := filepath.Join(t.TempDir(), "fsstack.sock")
		ln, err := control.Listen(sock, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		srv := control.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)))
		if other != nil {
			srv.HandleOther(other)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close(); ln.Close() })
		return sock
	}

	t.Run("json-only", func(t *testing.T) {
		reason, err := probeAttach(serve(t, nil))
		if err != nil || !strings.Contains(reason, "answered the shim's attach hello with JSON only") {
			t.Errorf("JSON-only daemon: reason %q, err %v; want a skip reason", reason, err)
		}
		t.Logf("skip reason: %s", reason)
	})
	t.Run("attach", func(t *testing.T) {
		sock := serve(t, func(_ context.Context, c net.Conn, first []byte) error {
			defer c.Close()
			if string(first[:4]) != "FSSA" {
				t.Errorf("hello starts %q", first)
			}
			// A refusal (-EPROTONOSUPPORT) still speaks the protocol.
			reply := make([]byte, 32)
			copy(reply, "FSSR")
			reply[4], reply[5], reply[6], reply[7] = 0xa5, 0xff, 0xff, 0xff
			_, err := c.Write(reply)
			return err
		})
		reason, err := probeAttach(sock)
		if err != nil || reason != "" {
			t.Errorf("attach-speaking daemon: reason %q, err %v; want neither", reason, err)
		}
	})
	t.Run("closes", func(t *testing.T) {
		sock := serve(t, func(_ context.Context, c net.Conn, _ []byte) error { return c.Close() })
		reason, err := probeAttach(sock)
		if err == nil || reason != "" {
			t.Errorf("daemon that hangs up: reason %q, err %v; want an error, no skip", reason, err)
		}
	})
	t.Run("no-daemon", func(t *testing.T) {
		reason, err := probeAttach(filepath.Join(t.TempDir(), "none.sock"))
		if err == nil || reason != "" {
			t.Errorf("no daemon: reason %q, err %v; want an error, no skip", reason, err)
		}
	})
}
