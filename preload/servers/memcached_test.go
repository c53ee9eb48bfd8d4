package servers

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMemcached: memcached with 4 threads; set and get of several keys,
// one of them 500 KB, from a Go client in the client namespace, on
// several connections at once (so more than one of its threads serves).
func TestMemcached(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		r := newRig(t, mode, "memcached")
		p := r.startServer("memcached", "memcached", "-u", "root", "-t", "4",
			"-l", r.lab.ServerAddr.String(), "-p", "11211", "-U", "0", "-m", "64")
		r.waitListen(p, 11211)
		r.checkKernelListener(11211)

		const conns = 4
		var wg sync.WaitGroup
		errs := make([]error, conns)
		for i := range conns {
			wg.Go(func() { errs[i] = memcachedRound(r, i) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
			}
		}

		r.checkAccepted(conns, 1)
		if p.exited() {
			t.Fatalf("memcached exited: %v\n%s", p.waitErr(), p.output())
		}
		if ok, left := p.stopWatch(syscall.SIGTERM, 10*time.Second); !ok {
			t.Errorf("memcached did not stop within 10s of SIGTERM; its processes then:\n%s", left)
		}
		r.checkReleased()
		r.checkShimLines(p)
	})
}

// memcachedRound sets several keys on one connection (one of 500 KB),
// reads them back one by one and with one multi-key get, and deletes one.
func memcachedRound(r *rig, id int) error {
	c, err := r.dial(11211, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	mc := &mcClient{c: c, r: bufio.NewReader(c)}
	vals := map[string][]byte{}
	for i, size := range []int{1, 100, 4096, 65536, 500_000} {
		v := make([]byte, size)
		rand.Read(v)
		vals[fmt.Sprintf("c%d-k%d", id, i)] = v
	}
	var keys []string
	for k, v := range vals {
		keys = append(keys, k)
		if err := mc.set(k, v); err != nil {
			return fmt.Errorf("set %s (%d bytes): %w", k, len(v), err)
		}
	}
	for _, k := range keys {
		got, err := mc.get(k)
		if err != nil {
			return fmt.Errorf("get %s: %w", k, err)
		}
		if !bytes.Equal(got[k], vals[k]) {
			return fmt.Errorf("get %s: %d bytes back, not the %d set", k, len(got[k]), len(vals[k]))
		}
	}
	got, err := mc.get(keys...)
	if err != nil {
		return fmt.Errorf("multi-get: %w", err)
	}
	for _, k := range keys {
		if !bytes.Equal(got[k], vals[k]) {
			return fmt.Errorf("multi-get %s: %d bytes back, not the %d set", k, len(got[k]), len(vals[k]))
		}
	}
	if err := mc.simple("delete "+keys[0], "DELETED"); err != nil {
		return err
	}
	if got, err := mc.get(keys[0]); err != nil || len(got) != 0 {
		return fmt.Errorf("get after delete: %d values, %v", len(got), err)
	}
	return nil
}

// mcClient speaks memcached's text protocol.
type mcClient struct {
	c net.Conn
	r *bufio.Reader
}

func (mc *mcClient) line() (string, error) {
	l, err := mc.r.ReadString('\n')
	return strings.TrimSuffix(l, "\r\n"), err
}

func (mc *mcClient) simple(cmd, want string) error {
	if _, err := io.WriteString(mc.c, cmd+"\r\n"); err != nil {
		return err
	}
	l, err := mc.line()
	if err != nil {
		return err
	}
	if l != want {
		return fmt.Errorf("%s: got %q, want %q", cmd, l, want)
	}
	return nil
}

func (mc *mcClient) set(key string, v []byte) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "set %s 0 0 %d\r\n", key, len(v))
	b.Write(v)
	b.WriteString("\r\n")
	if _, err := mc.c.Write(b.Bytes()); err != nil {
		return err
	}
	l, err := mc.line()
	if err != nil {
		return err
	}
	if l != "STORED" {
		return fmt.Errorf("got %q, want STORED", l)
	}
	return nil
}

func (mc *mcClient) get(keys ...string) (map[string][]byte, error) {
	if _, err := io.WriteString(mc.c, "get "+strings.Join(keys, " ")+"\r\n"); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for {
		l, err := mc.line()
		if err != nil {
			return out, err
		}
		if l == "END" {
			return out, nil
		}
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != "VALUE" {
			return out, fmt.Errorf("unexpected %q", l)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil {
			return out, fmt.Errorf("bad length in %q", l)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(mc.r, buf); err != nil {
			return out, err
		}
		out[f[1]] = buf[:n]
	}
}
