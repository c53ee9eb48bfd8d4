package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestShimEnv(t *testing.T) {
	env := shimEnv([]string{"A=1", "LD_PRELOAD=/x/other.so", "FSSTACK_SOCKET=/old", "FSSTACK_FALLBACK=x"}, "/l/libfsstack.so", "/s.sock", "fail")
	want := []string{"A=1", "LD_PRELOAD=/l/libfsstack.so:/x/other.so", "FSSTACK_SOCKET=/s.sock", "FSSTACK_FALLBACK=fail"}
	if strings.Join(env, "|") != strings.Join(want, "|") {
		t.Fatalf("env %q, want %q", env, want)
	}
	env = shimEnv([]string{"LD_PRELOAD="}, "/l.so", "/s", "kernel")
	if env[0] != "LD_PRELOAD=/l.so" {
		t.Fatalf("empty LD_PRELOAD: %q", env)
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
}
