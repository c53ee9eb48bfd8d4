package conformance_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeListsEveryProgram keeps README.md's table of programs and
// cases in step with c/t_*.c.
func TestReadmeListsEveryProgram(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (t_[a-z0-9_]+)`).FindAllStringSubmatch(string(readme), -1) {
		listed[m[1]] = true
	}
	srcs, err := filepath.Glob(filepath.Join("c", "t_*.c"))
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, src := range srcs {
		name := strings.TrimSuffix(filepath.Base(src), ".c")
		have[name] = true
		if !listed[name] {
			t.Errorf("README.md does not describe %s", name)
		}
	}
	for name := range listed {
		if !have[name] {
			t.Errorf("README.md describes %s, which is not in c/", name)
		}
	}
}
