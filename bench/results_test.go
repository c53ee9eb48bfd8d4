package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/fsstack/fsstack/internal/lab"
)

// TestResultsFiles writes results.json and the chart for a measured
// server, a server without a bulk phase and one whose lab failed, without
// running a lab.
func TestResultsFiles(t *testing.T) {
	dir := t.TempDir()
	r := results{Runs: []run{
		{Server: lab.ServerGo, OK: true, Report: &lab.Report{Server: lab.ServerGo, BulkBytes: lab.BulkSize,
			Ratios: lab.Ratios{KeepAliveRPS: 0.6, CloseConnRate: 0.5, BulkGbps: 0.1}}},
		{Server: lab.ServerRedis, OK: true, Report: &lab.Report{Server: lab.ServerRedis, BulkSkipped: "redis-server: n/a",
			Ratios: lab.Ratios{KeepAliveRPS: 0.9, CloseConnRate: 0.3}}},
		{Server: lab.ServerNginx, Error: "create network lab (needs root)"},
	}}
	jsonPath, svgPath := filepath.Join(dir, "results.json"), filepath.Join(dir, "results.svg")
	if err := writeResults(jsonPath, r); err != nil {
		t.Fatal(err)
	}
	if err := writeChart(svgPath, "test", r); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var back results
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if g := back.Ratios[lab.ServerGo]; g.BulkGbps != 0.1 || g.KeepAliveRPS != 0.6 {
		t.Errorf("go ratios %+v", g)
	}
	if rd := back.Ratios[lab.ServerRedis]; rd.BulkGbps != 0 || rd.BulkSkipped == "" {
		t.Errorf("redis ratios %+v: want no bulk ratio and the reason", rd)
	}
	if bytes.Contains(data, []byte(`"bulk_gbit_s": 0,`)) || bytes.Contains(data, []byte("\"bulk_gbit_s\": 0\n")) {
		t.Errorf("results.json has a zero bulk ratio:\n%s", data)
	}

	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	bars := 0
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("results.svg is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			for _, a := range se.Attr {
				if a.Name.Local == "class" && a.Value == "bar" {
					bars++
				}
			}
		}
	}
	if bars != 5 { // go: 3; redis: keep-alive and close; nginx: none
		t.Errorf("%d bars, want 5", bars)
	}
}
