//go:build linux

package lab

import (
	"bufio"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChildrenOnLoopback runs the hidden lab-serve and lab-load
// subcommands of the real binary on loopback (no namespaces): the event
// protocol the lab depends on, and a clean exit on SIGTERM.
func TestChildrenOnLoopback(t *testing.T) {
	bin := fsstackBin(t)
	srv := exec.Command(bin, "lab-serve", "--stack", "kernel", "--listen", "127.0.0.1:0")
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatalf("lab-serve wrote nothing: %v", sc.Err())
	}
	var ready Event
	if err := json.Unmarshal(sc.Bytes(), &ready); err != nil || ready.Event != "ready" || !strings.HasPrefix(ready.Addr, "127.0.0.1:") {
		t.Fatalf("first event %q (%v), want ready with an address", sc.Text(), err)
	}

	load := exec.Command(bin, "lab-load", "--addr", ready.Addr, "--conns", "2", "--duration", "1s", "--warmup", "0s")
	lout, err := load.Output()
	if err != nil {
		t.Fatalf("lab-load: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(lout)), "\n")
	var last Event
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Event != "result" || last.Result == nil {
		t.Fatalf("last lab-load event %q (%v), want a result", lines[len(lines)-1], err)
	}
	if last.Result.Requests == 0 || last.Result.Errors != 0 || last.Result.BodyBytes != last.Result.Requests*uint64(len(Body)) {
		t.Errorf("result %+v", last.Result)
	}

	srv.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("lab-serve after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("lab-serve ignored SIGTERM")
	}

	// Failures are events too, with a non-zero exit.
	bad, err := exec.Command(bin, "lab-serve", "--stack", "bogus").Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(bad), `"event":"error"`) {
		t.Errorf("lab-serve --stack bogus: %v, %q", err, bad)
	}
	bad, err = exec.Command(bin, "lab-load", "--addr", "127.0.0.1:1", "--mode", "sideways").Output()
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(bad), `"event":"error"`) {
		t.Errorf("lab-load --mode sideways: %v, %q", err, bad)
	}
}
