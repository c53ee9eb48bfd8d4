//go:build linux

package afxdp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestErrorsWithoutPrivileges re-runs the test binary as nobody and checks
// that loading, attaching and opening say how to get the privileges.
func TestErrorsWithoutPrivileges(t *testing.T) {
	if os.Getenv("AFXDP_UNPRIVILEGED_HELPER") == "1" {
		unprivilegedHelper(t)
		return
	}
	requireRoot(t)
	// The test binary's own directory is private to root: copy it.
	dir, err := os.MkdirTemp("", "afxdp-perm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "afxdp.test")
	if err := copyFile(exe, bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestErrorsWithoutPrivileges$", "-test.v")
	cmd.Env = append(os.Environ(), "AFXDP_UNPRIVILEGED_HELPER=1")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func unprivilegedHelper(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("helper runs as root")
	}
	check := func(what string, err error) {
		if err == nil {
			t.Errorf("%s: succeeded without privileges", what)
			return
		}
		if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
			t.Errorf("%s: %v; want an ErrPermission that names the capabilities", what, err)
		}
		fmt.Printf("%s: %v\n", what, err)
	}
	s, err := LoadSteering(SteeringOptions{Queues: 1})
	if err == nil {
		s.Close()
	}
	check("load steering", err)
	sock, err := Open(1, 0, SocketConfig{NumFrames: 64}) // lo
	if err == nil {
		sock.Close()
	}
	check("open socket", err)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
