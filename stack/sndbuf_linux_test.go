package stack

import (
	"context"
	"testing"
	"time"
)

// TestSendBudget: new connections start with SendBufferMax while the
// stack's SendBudget lasts, then with SendBuffer; a closed connection
// gives its share back.
func TestSendBudget(t *testing.T) {
	lab := newLab(t)
	const base, big = 256 << 10, 4 << 20
	s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS,
		SendBuffer: base, SendBufferMax: big, SendBudget: big})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kl := listenIn(t, lab.ClientNS, lab.ClientAddr.String()+":7950")
	go func() {
		for {
			c, err := kl.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dial := func() *Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := s.DialContext(ctx, "tcp4", lab.ClientAddr.String()+":7950")
		if err != nil {
			t.Fatal(err)
		}
		return c.(*Conn)
	}
	size := func(c *Conn) int64 { return c.ep.SocketOptions().GetSendBufferSize() }
	first := dial()
	if got := size(first); got != big {
		t.Fatalf("first connection's send buffer %d, want %d", got, big)
	}
	second := dial()
	if got := size(second); got != base {
		t.Fatalf("second connection's send buffer %d with the budget spent, want %d", got, base)
	}
	first.Close()
	second.Close()
	third := dial()
	defer third.Close()
	if got := size(third); got != big {
		t.Fatalf("after the first closed, a new connection's send buffer %d, want %d", got, big)
	}
	if left := s.shards[0].sndBudget.left.Load(); left != big-(big-base) {
		t.Errorf("budget left %d, want %d", left, big-(big-base))
	}
}
