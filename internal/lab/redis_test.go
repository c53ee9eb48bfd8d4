package lab

import (
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/loadgen"
)

func redisResult(set, get float64) *loadgen.Result {
	return &loadgen.Result{RPS: (set + get) / 2, Tests: []loadgen.TestResult{{Name: "set", RPS: set}, {Name: "get", RPS: get}}}
}

func TestParseRedisBenchmark(t *testing.T) {
	out := `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","40322.58","0.137","0.024","0.095","0.319","0.655","6.263"
"GET","36563.07","0.146","0.032","0.135","0.271","0.431","2.207"
`
	tests, err := parseRedisBenchmark(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(tests) != 2 || tests[0].Name != "set" || tests[1].Name != "get" {
		t.Fatalf("tests = %+v, want set and get", tests)
	}
	if tests[0].RPS != 40322.58 || tests[0].P50 != 95*time.Microsecond || tests[1].P99 != 431*time.Microsecond {
		t.Errorf("set/get figures = %+v", tests)
	}
	for _, bad := range []string{"", "WARNING: Keepalive disabled\n", `"test","rps"` + "\n" + `"SET","1"` + "\n",
		`"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"` + "\n" + `"SET","x","0","0","0","0","0","0"` + "\n"} {
		if _, err := parseRedisBenchmark(bad); err == nil {
			t.Errorf("parseRedisBenchmark(%q) accepted it", bad)
		}
	}
}

func TestTestRatios(t *testing.T) {
	rep := &Report{}
	rep.Kernel.KeepAlive = &Phase{Mode: "keepalive", Result: redisResult(100, 200)}
	rep.FSStack.KeepAlive = &Phase{Mode: "keepalive", Result: redisResult(50, 300)}
	rep.Kernel.Close = &Phase{Mode: "close", Result: redisResult(10, 10)}
	rep.FSStack.Close = &Phase{Mode: "close", Result: redisResult(20, 5)}
	got := testRatios(rep)
	want := map[string]float64{"set": 0.5, "get": 1.5, "newconn-set": 2, "newconn-get": 0.5}
	if len(got) != len(want) {
		t.Fatalf("testRatios = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("testRatios[%q] = %v, want %v", k, got[k], v)
		}
	}
	rep.TestRatios = got
	var lines int
	for _, l := range rep.SummaryLines() {
		if len(l) > 3 && (l[:3] == "set" || l[:3] == "get") {
			lines++
		}
	}
	if lines != 4 {
		t.Errorf("summary has %d set/get lines, want 4:\n%v", lines, rep.SummaryLines())
	}
}
