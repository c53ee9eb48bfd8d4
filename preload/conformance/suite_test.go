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

// TestRequireMappedGuard checks the guard the shim half relies on: a
// program told to require a library that is not mapped into it exits 3
// before printing anything, so an LD_PRELOAD the dynamic loader ignored
// cannot pass for the shim.
func TestRequireMappedGuard(t *testing.T) {
	needPrograms(t)
	p := programs[0]
	r := execute(t, p, "FSCONF_REQUIRE_MAPPED=/nonexistent/libfsstack.so")
	if r.transcript != "exit status 3\n" || !strings.Contains(r.stderr, "is not mapped") {
		t.Errorf("%s with an unmapped FSCONF_REQUIRE_MAPPED: transcript %q, stderr %q; want exit 3 and no output",
			p.name, r.transcript, r.stderr)
	}
	// And the C library, which every program maps, passes the check.
	r = execute(t, p, "FSCONF_REQUIRE_MAPPED=libc.so")
	if !r.ok {
		t.Errorf("%s with FSCONF_REQUIRE_MAPPED=libc.so did not complete:\n%s%s", p.name, r.transcript, r.stderr)
	}
}
