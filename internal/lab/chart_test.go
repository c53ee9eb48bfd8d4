package lab

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"strings"
	"testing"
)

// svgShapes decodes an SVG document with encoding/xml (failing on
// anything that is not well-formed XML) and returns its root element's
// name and the class attribute of every element, by element name.
func svgShapes(t *testing.T, doc []byte) (root string, classes map[string][]string, text string) {
	t.Helper()
	classes = map[string][]string{}
	var texts []string
	d := xml.NewDecoder(bytes.NewReader(doc))
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				root = tok.Name.Local
				if tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root element namespace %q", tok.Name.Space)
				}
			}
			depth++
			class := ""
			for _, a := range tok.Attr {
				if a.Name.Local == "class" {
					class = a.Value
				}
			}
			classes[tok.Name.Local] = append(classes[tok.Name.Local], class)
		case xml.EndElement:
			depth--
		case xml.CharData:
			texts = append(texts, string(tok))
		}
	}
	if depth != 0 {
		t.Errorf("SVG ends with %d elements open", depth)
	}
	return root, classes, strings.Join(texts, "|")
}

func count(list []string, want string) int {
	n := 0
	for _, s := range list {
		if s == want {
			n++
		}
	}
	return n
}

func TestWriteRatioSVG(t *testing.T) {
	goRep := bulkReport() // keep-alive 1.5x, close 1.5x, bulk 0.25x
	redis := bulkReport()
	redis.Server, redis.BulkSkipped = ServerRedis, bulkNotApplicable
	redis.Kernel.Bulk, redis.FSStack.Bulk = nil, nil
	redis.Ratios = ratios(redis)
	failed := &Report{Server: ServerNginx, FSStack: StackRun{Error: "fsstack up: no XDP"}}
	bars := ChartBars([]*Report{goRep, redis, failed})
	if len(bars) != 9 {
		t.Fatalf("%d bars, want 3 figures x 3 servers: %+v", len(bars), bars)
	}
	var buf bytes.Buffer
	if err := WriteRatioSVG(&buf, `fsstack lab <ratios> & "more"`, bars); err != nil {
		t.Fatal(err)
	}
	root, classes, text := svgShapes(t, buf.Bytes())
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	// A bar per measured figure: go's three and redis's keep-alive and close.
	if n := count(classes["rect"], "bar"); n != 5 {
		t.Errorf("%d bars drawn, want 5 (one per measured figure)", n)
	}
	if count(classes["line"], "parity") != 1 {
		t.Error("no line at 1.0x")
	}
	for _, want := range []string{"fsstack lab <ratios> & \"more\"", "built-in Go server (embedded API)", "redis-server (LD_PRELOAD shim)",
		"nginx (LD_PRELOAD shim)", "keep-alive requests/s", "bulk: body Gbit/s (1 MiB responses)", "1.50x", "0.25x", "1.0x",
		"n/a: no bulk phase for this server", "not measured (the run failed)"} {
		if !strings.Contains(text, want) {
			t.Errorf("chart lacks the text %q", want)
		}
	}
	if os.Getenv("FSSTACK_CHART_OUT") != "" { // to look at it: FSSTACK_CHART_OUT=/tmp/c.svg
		os.WriteFile(os.Getenv("FSSTACK_CHART_OUT"), buf.Bytes(), 0o644)
	}

	// A ratio far above 2 widens the scale rather than running off the edge.
	buf.Reset()
	if err := WriteRatioSVG(&buf, "wide", []ChartBar{{Server: "s", Figure: "f", Ratio: 7.3}}); err != nil {
		t.Fatal(err)
	}
	if _, classes, text := svgShapes(t, buf.Bytes()); count(classes["rect"], "bar") != 1 || !strings.Contains(text, "8.5x") {
		t.Errorf("scale for 7.3x: want ticks up to 8.5x:\n%s", buf.String())
	}
}
