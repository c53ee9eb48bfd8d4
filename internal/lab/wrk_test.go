package lab

import (
	"strings"
	"testing"
	"time"
)

const wrkReport = `Running 4s test @ http://198.18.0.1:80/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.50ms   37.59ms 297.70ms   92.52%
    Req/Sec     8.65k     2.01k   12.31k    70.00%
  Latency Distribution
     50%  850.00us
     75%    2.34ms
     90%    5.67ms
     99%    1.02s
  68845 requests in 4.00s, 10.11MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  17211.15
Transfer/sec:      2.53MB
`

func TestParseWrk(t *testing.T) {
	res, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	if res.RPS != 17211.15 || res.Requests != 68845 || res.Duration != 4*time.Second {
		t.Errorf("rps %v requests %d duration %v", res.RPS, res.Requests, res.Duration)
	}
	if res.P50 != 850*time.Microsecond || res.P90 != 5670*time.Microsecond || res.P99 != 1020*time.Millisecond {
		t.Errorf("p50 %v p90 %v p99 %v", res.P50, res.P90, res.P99)
	}
	if res.Max != 297700*time.Microsecond || res.Mean != 14500*time.Microsecond {
		t.Errorf("max %v mean %v", res.Max, res.Mean)
	}
	if res.Errors != 20 || res.ErrorKinds["read"] != 12 || res.ErrorKinds["timeout"] != 3 || res.ErrorKinds["status"] != 5 {
		t.Errorf("errors %d %v", res.Errors, res.ErrorKinds)
	}
	if _, err := parseWrk("wrk: command not found\n"); err == nil {
		t.Error("garbage parsed")
	}
	noLatency := strings.Replace(wrkReport, "     50%  850.00us\n", "", 1)
	if _, err := parseWrk(noLatency); err == nil || !strings.Contains(err.Error(), "--latency") {
		t.Errorf("report without the distribution: %v", err)
	}
	for _, bad := range []string{"5", "1.2xs", "ms"} {
		if _, err := parseWrkDuration(bad); err == nil {
			t.Errorf("duration %q parsed", bad)
		}
	}
}
