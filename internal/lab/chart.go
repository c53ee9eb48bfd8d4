package lab

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// ChartBar is one bar of the ratio chart: one figure of one server.
type ChartBar struct {
	Server string  // the group it is drawn in ("built-in Go server", ...)
	Figure string  // "keep-alive requests/s", ...
	Ratio  float64 // fsstack/kernel; 0 where it was not measured
	Note   string  // written instead of a bar where Ratio is 0
}

// serverLabel names a server for people.
func serverLabel(server string) string {
	switch server {
	case ServerGo:
		return "built-in Go server (embedded API)"
	case ServerNginx:
		return "nginx (LD_PRELOAD shim)"
	case ServerRedis:
		return "redis-server (LD_PRELOAD shim)"
	}
	return server
}

// ChartBars lists the rate figure of each phase of each report, where
// above 1.0x means fsstack is faster: keep-alive requests/s, close new
// connections/s and bulk Gbit/s. A figure that does not apply or was not
// measured gets a note instead of a ratio.
func ChartBars(reps []*Report) []ChartBar {
	var bars []ChartBar
	for _, rep := range reps {
		name := serverLabel(rep.Server)
		missing := "not measured"
		if rep.FSStack.Error != "" || rep.Kernel.Error != "" {
			missing = "not measured (the run failed)"
		}
		bar := func(figure string, r float64) ChartBar {
			b := ChartBar{Server: name, Figure: figure, Ratio: r}
			if r == 0 {
				b.Note = missing
			}
			return b
		}
		bars = append(bars,
			bar("keep-alive requests/s", rep.Ratios.KeepAliveRPS),
			bar("close: new connections/s", rep.Ratios.CloseConnRate))
		size := rep.BulkBytes
		if size == 0 {
			size = BulkSize
		}
		b := bar(fmt.Sprintf("bulk: body Gbit/s (%s responses)", fmtBytes(size)), rep.Ratios.BulkGbps)
		if rep.BulkSkipped != "" {
			b.Figure, b.Note = "bulk: body Gbit/s", "n/a: no bulk phase for this server"
		}
		bars = append(bars, b)
	}
	return bars
}

// Geometry of the chart, in SVG user units (pixels).
const (
	chartWidth  = 760
	chartLabelX = 16  // left edge of the labels
	chartBarX   = 330 // where bars start (ratio 0)
	chartBarEnd = 690 // the widest scale value
	chartRow    = 24  // height of one bar's row
	chartBarH   = 16
	chartTop    = 72 // first row, below title and axis labels
)

// WriteRatioSVG draws bars as a horizontal bar chart, grouped by server
// in the order given: one bar per figure with its ratio written beside
// it, a dashed line at 1.0x (above it fsstack is faster), and the scale
// from 0 to at least 2.0x. It is plain SVG 1.1 with no scripts or
// external references.
func WriteRatioSVG(w io.Writer, title string, bars []ChartBar) error {
	scale := 2.0
	for _, b := range bars {
		scale = max(scale, math.Ceil(b.Ratio*1.1*2)/2) // room for the label, in steps of 0.5
	}
	x := func(r float64) float64 { return chartBarX + r/scale*(chartBarEnd-chartBarX) }

	// Rows: a header per server, then its bars.
	type row struct {
		header string
		bar    *ChartBar
	}
	var rows []row
	for i := range bars {
		if i == 0 || bars[i].Server != bars[i-1].Server {
			rows = append(rows, row{header: bars[i].Server})
		}
		rows = append(rows, row{bar: &bars[i]})
	}
	height := chartTop + len(rows)*chartRow + 36

	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	p(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	p(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartWidth, height, chartWidth, height)
	p(`<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", chartWidth, height)
	p(`<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", chartLabelX, esc(title))
	p(`<text x="%d" y="40" fill="#555555">fsstack / kernel, measured in the same run; right of the dashed 1.0x line fsstack is faster</text>`+"\n", chartLabelX)

	// Scale: a tick and a faint line every 0.5x.
	bottom := chartTop + len(rows)*chartRow
	for t := 0.0; t <= scale+1e-9; t += 0.5 {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e4e4e4"/>`+"\n", x(t), chartTop-6, x(t), bottom)
		p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#777777">%.1fx</text>`+"\n", x(t), bottom+16, t)
	}

	for i, r := range rows {
		y := chartTop + i*chartRow
		if r.bar == nil {
			p(`<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", chartLabelX, y+chartBarH-3, esc(r.header))
			continue
		}
		b := r.bar
		p(`<text x="%d" y="%d">%s</text>`+"\n", chartLabelX+12, y+chartBarH-3, esc(b.Figure))
		if b.Ratio <= 0 {
			p(`<text x="%d" y="%d" fill="#777777" font-style="italic">%s</text>`+"\n", chartBarX+4, y+chartBarH-3, esc(b.Note))
			continue
		}
		fill := "#c9463d" // slower than the kernel
		if b.Ratio >= 1 {
			fill = "#3a8f4b"
		}
		end := x(b.Ratio)
		p(`<rect class="bar" x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
			chartBarX, y, end-chartBarX, chartBarH, fill, esc(fmt.Sprintf("%s, %s: %.2fx", b.Server, b.Figure, b.Ratio)))
		p(`<text x="%.1f" y="%d">%.2fx</text>`+"\n", end+4, y+chartBarH-3, b.Ratio)
	}

	// The 1.0x line last, over the bars.
	p(`<line class="parity" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222222" stroke-width="1.5" stroke-dasharray="5,3"/>`+"\n",
		x(1), chartTop-10, x(1), bottom)
	p(`<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">1.0x</text>`+"\n", x(1), chartTop-14)
	p("</svg>\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write SVG chart: %w", err)
	}
	return nil
}

// esc escapes s for SVG text and attribute values.
func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
