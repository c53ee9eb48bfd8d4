package stack

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fsstack/fsstack/internal/netlab"
)

func TestPortSet(t *testing.T) {
	for _, c := range []struct{ in, norm string }{
		{"", ""},
		{"\n", ""},
		{"1000", "1000"},
		{"2000-2010,1000", "1000,2000-2010"},
		{"1000-1005,1006,1003-1010", "1000-1010"},
		{"61000-65499,61000-65499", "61000-65499"},
		{"0-65535", "0-65535"},
	} {
		p, err := parsePortSet(c.in)
		if err != nil || p.String() != c.norm {
			t.Errorf("parsePortSet(%q) = %q, %v; want %q", c.in, p.String(), err, c.norm)
		}
	}
	for _, bad := range []string{"x", "1000-", "10-5", "70000", "1,,2"} {
		if _, err := parsePortSet(bad); err == nil {
			t.Errorf("parsePortSet(%q) accepted", bad)
		}
	}
	for _, c := range []struct{ a, b, want string }{
		{"1000-2000", "1500", "1000-1499,1501-2000"},
		{"1000-2000", "0-65535", ""},
		{"1000-2000,3000", "1000-1999", "2000,3000"},
		{"1000,61000-65499", "61000-65499", "1000"},
		{"60000-65535", "61000-65499", "60000-60999,65500-65535"},
		{"0-10", "", "0-10"},
	} {
		a, _ := parsePortSet(c.a)
		b, _ := parsePortSet(c.b)
		if got := a.minus(b).String(); got != c.want {
			t.Errorf("%s minus %s = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

// readReserved and setReserved read and write the lab server namespace's
// ip_local_reserved_ports.
func readReserved(t *testing.T, ns string) string {
	t.Helper()
	var v string
	if err := netlab.Do(ns, func() error {
		b, err := os.ReadFile(reservedPortsPath)
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func setReserved(t *testing.T, ns, v string) {
	t.Helper()
	if v == "" {
		v = "\n"
	}
	if err := netlab.Do(ns, func() error { return os.WriteFile(reservedPortsPath, []byte(v), 0o644) }); err != nil {
		t.Fatal(err)
	}
}

// TestReservedPortsAfterKill: a stack that was killed leaves its range in
// ip_local_reserved_ports. With a state directory the next stack in the
// namespace recognises the leftover, and its Close restores the value the
// administrator had, not the leftover; the state file goes with it.
func TestReservedPortsAfterKill(t *testing.T) {
	lab := newLab(t)
	r := DefaultEphemeralPorts
	for _, orig := range []string{"", "1000,2000-2010", "61000-61010"} {
		t.Run("orig="+orig, func(t *testing.T) {
			dir := t.TempDir()
			setReserved(t, lab.ServerNS, orig)
			// A run killed with SIGKILL: it reserved and never released.
			if err := netlab.Do(lab.ServerNS, func() error {
				_, err := reservePorts(r, dir, slog.Default())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			leaked := readReserved(t, lab.ServerNS)
			if !strings.Contains(leaked, "65499") {
				t.Fatalf("after the killed run: %q, want the range reserved", leaked)
			}
			s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS, EphemeralPorts: r, StateDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if got := readReserved(t, lab.ServerNS); got != leaked {
				t.Errorf("while the next stack runs: %q, want %q", got, leaked)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := readReserved(t, lab.ServerNS); got != orig {
				t.Errorf("after the next stack's Close: %q, want the original %q", got, orig)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("state directory after Close: %v, want it empty", ents)
			}
		})
	}
	setReserved(t, lab.ServerNS, "")
}

// TestReservedPortsStateIgnoredElsewhere: a state file that does not
// match the namespace (its ports are not all reserved there: the file
// outlived its namespace, or the administrator reset the value) changes
// nothing; the value found is the one restored.
func TestReservedPortsStateIgnoredElsewhere(t *testing.T) {
	lab := newLab(t)
	r := DefaultEphemeralPorts
	dir := t.TempDir()
	setReserved(t, lab.ServerNS, "1000")
	var path string
	if err := netlab.Do(lab.ServerNS, func() (err error) {
		path, err = reservationStatePath(dir, r)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := writeReservationState(path, reservationState{Original: "", Added: r.String()}); err != nil {
		t.Fatal(err)
	}
	var res *portReservation
	if err := netlab.Do(lab.ServerNS, func() (err error) {
		res, err = reservePorts(r, dir, slog.Default())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := netlab.Do(lab.ServerNS, res.release); err != nil {
		t.Fatal(err)
	}
	if got := readReserved(t, lab.ServerNS); got != "1000" {
		t.Errorf("after release: %q, want %q", got, "1000")
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.Base(path))); !os.IsNotExist(err) {
		t.Errorf("state file after release: %v, want it gone", err)
	}
	setReserved(t, lab.ServerNS, "")
}
