package nsthread

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

func TestInLeavesTheCallerWhereItWas(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create a network namespace")
	}
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	var created netns.NsHandle
	err = Isolated(func() error {
		h, err := netns.New() // switches this thread into a new namespace
		created = h
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer created.Close()
	if created.Equal(orig) {
		t.Fatal("netns.New did not make a new namespace")
	}
	var inside bool
	if err := In(created, func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		inside = cur.Equal(created)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !inside {
		t.Fatal("fn did not run inside the target namespace")
	}
	for i := 0; i < 3; i++ { // whichever thread the caller is on now
		cur, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		same := cur.Equal(orig)
		cur.Close()
		if !same {
			t.Fatal("the caller was left in another namespace")
		}
	}
	want := errors.New("boom")
	if err := In(created, func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("fn's error: %v", err)
	}
	if err := In(created, func() error { panic("oops") }); err == nil || !strings.Contains(err.Error(), "panic: oops") {
		t.Fatalf("panic: %v", err)
	}
}
