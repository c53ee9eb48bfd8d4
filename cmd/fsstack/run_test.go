package main

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestShimEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
		preload []string
		want    []string
	}{
		{"inherited on top", []string{"A=1", "LD_PRELOAD=/x/other.so", "FSSTACK_SOCKET=/old", "FSSTACK_FALLBACK=x"}, nil,
			[]string{"A=1", "LD_PRELOAD=/x/other.so:/l/libfsstack.so", "FSSTACK_SOCKET=/s.sock", "FSSTACK_FALLBACK=fail"}},
		{"empty LD_PRELOAD", []string{"LD_PRELOAD="}, nil,
			[]string{"LD_PRELOAD=/l/libfsstack.so", "FSSTACK_SOCKET=/s.sock", "FSSTACK_FALLBACK=fail"}},
		{"spaces and colons", []string{"LD_PRELOAD= /a.so  /b.so::/c.so "}, nil,
			[]string{"LD_PRELOAD=/a.so:/b.so:/c.so:/l/libfsstack.so", "FSSTACK_SOCKET=/s.sock", "FSSTACK_FALLBACK=fail"}},
		{"--preload after the inherited ones", []string{"LD_PRELOAD=/a.so"}, []string{"/p.so", "/q.so"},
			[]string{"LD_PRELOAD=/a.so:/p.so:/q.so:/l/libfsstack.so", "FSSTACK_SOCKET=/s.sock", "FSSTACK_FALLBACK=fail"}},
		{"an inherited shim keeps its place, once", []string{"LD_PRELOAD=/old/libfsstack.so:/a.so:/l/libfsstack.so"}, []string{"/p.so"},
			[]string{"LD_PRELOAD=/l/libfsstack.so:/a.so:/p.so", "FSSTACK_SOCKET=/s.sock", "FSSTACK_FALLBACK=fail"}},
	} {
		env := shimEnv(tc.environ, "/l/libfsstack.so", "/s.sock", "fail", tc.preload)
		if strings.Join(env, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s: env %q, want %q", tc.name, env, tc.want)
		}
	}
}

func TestRunErrors(t *testing.T) {
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb}
	if rc := run(e, []string{"run"}); rc != 2 || !strings.Contains(errb.String(), "no command given") {
		t.Fatalf("no command: rc %d %q", rc, errb.String())
	}
	errb.Reset()
	if rc := run(e, []string{"run", "--fallback", "maybe", "--", "true"}); rc != 2 || !strings.Contains(errb.String(), "use kernel or fail") {
		t.Fatalf("bad fallback: rc %d %q", rc, errb.String())
	}
	errb.Reset()
	if rc := run(e, []string{"run", "--lib", "/nonexistent/libfsstack.so", "--", "true"}); rc != 1 || !strings.Contains(errb.String(), "libfsstack.so not found") {
		t.Fatalf("missing lib: rc %d %q", rc, errb.String())
	}
	errb.Reset()
	lib := filepath.Join(t.TempDir(), "libfsstack.so")
	os.WriteFile(lib, []byte{}, 0o644)
	if rc := run(e, []string{"run", "--lib", lib, "--", "fsstack-no-such-program"}); rc != 127 || !strings.Contains(errb.String(), "fsstack-no-such-program") {
		t.Fatalf("missing program: rc %d %q", rc, errb.String())
	}
	errb.Reset()
	if rc := run(e, []string{"run", "--lib", lib, "--preload", "/nonexistent/libx.so", "--", "true"}); rc != 2 || !strings.Contains(errb.String(), "name an existing shared library") {
		t.Fatalf("missing --preload library: rc %d %q", rc, errb.String())
	}
}

// exitingLib is a preloaded library that does what libfsocket.so does
// where /dev/fastsocket cannot be opened: its constructor exits 255. It
// stands down in processes that fsstack run started (FSSTACK_SOCKET set),
// so only the launcher would die of it.
const exitingLib = `#include <stdlib.h>
__attribute__((constructor)) static void init(void) { if (!getenv("FSSTACK_SOCKET")) exit(255); }
`

// TestRunInheritedPreload builds fsstack as the Makefile does and runs
// LD_PRELOAD=lib fsstack run with a lib whose constructor exits: the
// launcher is static, so the lib never loads into it, and the program gets
// the inherited lib, the --preload one, then the shim.
func TestRunInheritedPreload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatal("cc is not installed: run scripts/install-deps.sh as root")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fsstack")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as the Makefile builds it
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a dynamic loader (PT_INTERP): an inherited LD_PRELOAD would load into it", bin)
		}
	}
	f.Close()
	src := filepath.Join(dir, "exiting.c")
	if err := os.WriteFile(src, []byte(exitingLib), 0o644); err != nil {
		t.Fatal(err)
	}
	libs := map[string]string{"exiting.so": src, "libfsstack.so": src, "top.so": src}
	for name, c := range libs {
		if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", filepath.Join(dir, name), c).CombinedOutput(); err != nil {
			t.Fatalf("cc %s: %v\n%s", name, err, out)
		}
	}
	exiting, shim, top := filepath.Join(dir, "exiting.so"), filepath.Join(dir, "libfsstack.so"), filepath.Join(dir, "top.so")
	cmd := exec.Command(bin, "run", "--lib", shim, "--preload", top, "--", "sh", "-c", `echo "$LD_PRELOAD"`)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+exiting)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("LD_PRELOAD=%s fsstack run: %v\n%s", exiting, err, out)
	}
	if got, want := strings.TrimSpace(string(out)), exiting+":"+top+":"+shim; got != want {
		t.Errorf("the program's LD_PRELOAD is %q, want %q", got, want)
	}
}
