package daemon

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status string
		euid   uint32
		capEff uint64
		ok     bool
	}{
		{"root", "Name:\tnginx\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n", 0, 0x1ffffffffff, true},
		{"seteuid", "Uid:\t0\t65534\t0\t65534\nCapInh:\t0000000000000000\nCapEff:\t0000000000000000\n", 65534, 0, true},
		{"file capability", "Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000400\n", 1000, 1 << capNetBindService, true},
		{"no CapEff", "Uid:\t0\t0\t0\t0\n", 0, 0, false},
		{"no Uid", "CapEff:\t0000000000000000\n", 0, 0, false},
		{"short Uid", "Uid:\t0\nCapEff:\t0\n", 0, 0, false},
		{"bad CapEff", "Uid:\t0\t0\t0\t0\nCapEff:\tzz\n", 0, 0, false},
	} {
		euid, capEff, ok := parseStatus([]byte(tc.status))
		if ok != tc.ok || ok && (euid != tc.euid || capEff != tc.capEff) {
			t.Errorf("%s: %d %#x %v, want %d %#x %v", tc.name, euid, capEff, ok, tc.euid, tc.capEff, tc.ok)
		}
	}
}

// TestProcCreds reads the credentials of this process and of a child
// running as uid 65534, and sees a pid that exits stop answering.
func TestProcCreds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a child runs as uid 65534); run the tests as root")
	}
	self, err := openProcCreds(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if cr, err := self.read(); err != nil || cr.euid != 0 {
		t.Errorf("own credentials: %+v %v, want euid 0", cr, err)
	}
	if ok, err := self.mayBindService(); !ok || err != nil {
		t.Errorf("root may bind privileged ports: %v %v", ok, err)
	}

	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child, err := openProcCreds(int32(cmd.Process.Pid))
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	defer child.Close()
	if cr, err := child.read(); err != nil || cr.euid != 65534 || cr.capEff != 0 {
		t.Errorf("child's credentials: %+v %v, want euid 65534 without capabilities", cr, err)
	}
	if ok, err := child.mayBindService(); ok || err != nil {
		t.Errorf("uid 65534 may bind privileged ports: %v %v", ok, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if cr, err := child.read(); err == nil {
		t.Errorf("credentials of a process that exited: %+v, want an error", cr)
	}
}
