package conformance_test

import (
	"fmt"
	"strings"
	"testing"
)

// diff renders a line diff of a and b, unified style with three lines of
// context: "-" lines only in a, "+" lines only in b. Transcripts are a few
// hundred lines, so the quadratic longest-common-subsequence table is fine.
func diff(aName, a, bName, b string) string {
	x := strings.SplitAfter(a, "\n")
	y := strings.SplitAfter(b, "\n")
	if x[len(x)-1] == "" {
		x = x[:len(x)-1]
	}
	if y[len(y)-1] == "" {
		y = y[:len(y)-1]
	}
	// lcs[i][j] = length of the LCS of x[i:] and y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var ops []line
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			ops = append(ops, line{' ', x[i]})
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, line{'-', x[i]})
			i++
		default:
			ops = append(ops, line{'+', y[j]})
			j++
		}
	}
	const context = 3
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", aName, bName)
	lastShown := -1
	for k, op := range ops {
		if op.op == ' ' {
			near := false
			for d := max(0, k-context); d <= min(len(ops)-1, k+context); d++ {
				if ops[d].op != ' ' {
					near = true
					break
				}
			}
			if !near {
				continue
			}
		}
		if lastShown >= 0 && k > lastShown+1 {
			sb.WriteString("@@\n")
		}
		lastShown = k
		text := op.text
		if !strings.HasSuffix(text, "\n") {
			text += "\n\\ no newline\n"
		}
		sb.WriteByte(op.op)
		sb.WriteString(text)
	}
	return sb.String()
}

func TestDiff(t *testing.T) {
	a := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n"
	b := "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\nl\n"
	got := diff("x", a, "y", b)
	want := "--- x\n+++ y\n a\n b\n c\n-d\n+D\n e\n f\n g\n@@\n i\n j\n k\n+l\n"
	if got != want {
		t.Errorf("diff:\n%s\nwant:\n%s", got, want)
	}
	if got := diff("x", a, "y", a); got != "--- x\n+++ y\n" {
		t.Errorf("diff of equal texts = %q", got)
	}
}
