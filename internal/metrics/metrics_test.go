package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fsstack/fsstack/stack"
)

func TestHandlerWithoutShim(t *testing.T) {
	h, err := Handler(Sources{Shards: func() []stack.ShardStats {
		return []stack.ShardStats{{Shard: 0, Queue: 3, RxPackets: 5, XSKFillEmpty: 2}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`fsstack_shard_rx_packets_total{queue="3",shard="0"} 5`,
		`fsstack_shard_xsk_fill_ring_empty_total{queue="3",shard="0"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %q in:\n%s", want, body)
		}
	}
	if strings.Contains(string(body), "fsstack_shim_") {
		t.Errorf("shim series without a shim service:\n%s", body)
	}
}

func TestHandlerNeedsShards(t *testing.T) {
	if _, err := Handler(Sources{}); err == nil {
		t.Fatal("Handler without shard counters: no error")
	}
}
