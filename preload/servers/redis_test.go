package servers

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRedis: redis-server without persistence passes redis-benchmark's SET
// and GET with no errors, and a 1 MB value written over RESP reads back
// identical.
func TestRedis(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		r := newRig(t, mode, "redis-server", "redis-benchmark")
		p := r.startServer("redis", "redis-server",
			"--port", "6379", "--bind", r.lab.ServerAddr.String(), "--save", "", "--appendonly", "no",
			"--protected-mode", "no", "--daemonize", "no", "--dir", r.dir, "--logfile", "")
		r.waitListen(p, 6379)
		r.checkKernelListener(6379)

		out, stderr, err := r.client(90*time.Second, "redis-benchmark", "-h", r.lab.ServerAddr.String(), "-p", "6379",
			"-t", "set,get", "-n", "20000", "-q")
		if err != nil {
			t.Fatalf("redis-benchmark: %v\n%s%s\nredis-server:\n%s", err, out, stderr, p.output())
		}
		res := string(out) + stderr
		for _, op := range []string{"SET", "GET"} {
			if l := regexpLine(res, "^"+op+": [0-9.]+ requests per second"); l == "" {
				t.Errorf("redis-benchmark has no %s result:\n%s", op, res)
			} else {
				t.Logf("redis-benchmark: %s", l)
			}
		}
		if strings.Contains(strings.ToLower(res), "error") {
			t.Errorf("redis-benchmark reported errors:\n%s", res)
		}

		c, err := r.dial(6379, 5*time.Second)
		if err != nil {
			t.Fatalf("dial redis: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		rc := &resp{c: c, r: bufio.NewReader(c)}
		val := make([]byte, 1_000_000)
		rand.Read(val)
		if got, err := rc.do("SET", []byte("big"), val); err != nil || string(got) != "OK" {
			t.Fatalf("SET big (1 MB): %q, %v", got, err)
		}
		got, err := rc.do("GET", []byte("big"))
		if err != nil {
			t.Fatalf("GET big: %v", err)
		}
		if !bytes.Equal(got, val) {
			t.Errorf("GET big: %d bytes back, not the %d written (first difference at %d)", len(got), len(val), firstDiff(got, val))
		}
		if got, err := rc.do("DBSIZE"); err != nil {
			t.Errorf("DBSIZE: %v", err)
		} else {
			t.Logf("DBSIZE %s", got)
		}
		c.Close()

		r.checkAccepted(50, 1) // redis-benchmark's 50 clients at least
		if p.exited() {
			t.Fatalf("redis-server exited: %v\n%s", p.waitErr(), p.output())
		}
		if ok, left := p.stopWatch(syscall.SIGTERM, 10*time.Second); !ok {
			t.Errorf("redis-server did not stop within 10s of SIGTERM; its processes then:\n%s", left)
		}
		r.checkReleased()
		r.checkShimLines(p)
	})
}

// regexpLine returns the first line of s (lines end in \n or \r) that
// matches re, or "".
func regexpLine(s, re string) string {
	for l := range strings.SplitSeq(strings.ReplaceAll(s, "\r", "\n"), "\n") {
		if ok, _ := regexp.MatchString(re, strings.TrimSpace(l)); ok {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// resp is a minimal RESP2 client: commands as arrays of bulk strings,
// replies of the simple kinds redis sends for SET, GET and DBSIZE.
type resp struct {
	c net.Conn
	r *bufio.Reader
}

func (rc *resp) do(cmd string, args ...[]byte) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n$%d\r\n%s\r\n", len(args)+1, len(cmd), cmd)
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n", len(a))
		b.Write(a)
		b.WriteString("\r\n")
	}
	if _, err := rc.c.Write(b.Bytes()); err != nil {
		return nil, err
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return []byte(line[1:]), nil
	case '-':
		return nil, fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return nil, fmt.Errorf("nil reply")
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}
