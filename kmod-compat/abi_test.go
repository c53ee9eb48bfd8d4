package kmodcompat

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestABIHeaderCompiles compiles fastsocket_abi.h, whose static
// assertions pin the layout existing Fastsocket binaries use, and checks
// the ioctl numbers a C program sees.
func TestABIHeaderCompiles(t *testing.T) {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatal("gcc is needed to check the C ABI header; install it (apt-get install gcc)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "abi.c")
	os.WriteFile(src, []byte(`#include "fastsocket_abi.h"
#include <stdio.h>
int main(void) {
	printf("%lx %lx %lx %zu\n", (unsigned long)FSOCKET_IOC_SOCKET, (unsigned long)FSOCKET_IOC_ACCEPT,
		(unsigned long)FSOCKET_IOC_SPAWN_ALL_LISTEN, sizeof(struct fsocket_ioctl_arg));
	return 0;
}
`), 0o644)
	wd, _ := os.Getwd()
	bin := filepath.Join(dir, "abi")
	if out, err := exec.Command(cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", wd, "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("compile: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "f501 f503 f508 32" {
		t.Fatalf("ABI values %q", got)
	}
}
