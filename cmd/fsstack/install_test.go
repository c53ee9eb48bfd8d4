package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall installs into a temporary DESTDIR and checks the layout
// the README promises, and that the unit's command line, with the
// settings file's defaults, is one `fsstack up` accepts.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make not found; install it (scripts/install-deps.sh)")
	}
	dest := t.TempDir()
	out, err := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr").CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for path, mode := range map[string]os.FileMode{
		"usr/bin/fsstack":                        0o755,
		"usr/lib/fsstack/libfsstack.so":          0o755,
		"usr/lib/systemd/system/fsstack.service": 0o644,
		"etc/default/fsstack":                    0o644,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/fsstack.service"))
	if err != nil {
		t.Fatal(err)
	}
	var exec0 string
	for _, want := range []string{"Type=notify", "EnvironmentFile=-/etc/default/fsstack", "ExecStart=/usr/bin/fsstack up "} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	for _, l := range strings.Split(string(unit), "\n") {
		if strings.HasPrefix(l, "ExecStart=") {
			exec0 = strings.TrimPrefix(l, "ExecStart=")
		}
	}
	if strings.Contains(string(unit), "@") {
		t.Errorf("unit has an unreplaced placeholder:\n%s", unit)
	}

	// The settings file's values, expanded as systemd does: ${X} is one
	// word, $X splits on white space.
	env := map[string]string{}
	f, err := os.Open(filepath.Join(dest, "etc/default/fsstack"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		env[k] = strings.Trim(v, `"`)
	}
	if env["FSSTACK_IFACE"] == "" {
		t.Fatalf("settings file names no interface: %v", env)
	}
	env["FSSTACK_IFACE"] = "fss-noiface0" // an interface that does not exist
	env["FSSTACK_ARGS"] = "--socket " + filepath.Join(dest, "fsstack.sock")
	var args []string
	for _, w := range strings.Fields(exec0) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			args = append(args, env[w[2:len(w)-1]])
		case strings.HasPrefix(w, "$"):
			args = append(args, strings.Fields(env[w[1:]])...)
		default:
			args = append(args, w)
		}
	}
	cmd := exec.Command(filepath.Join(dest, "usr/bin/fsstack"), args[1:]...)
	msg, err := cmd.CombinedOutput()
	// A flag the unit passes that up does not take would be a usage error
	// (exit 2); with every flag accepted, up gets as far as the interface.
	if code := cmd.ProcessState.ExitCode(); code == 2 || !strings.Contains(string(msg), "fss-noiface0 not found") {
		t.Fatalf("the unit's command line %q: exit %d (%v):\n%s", args, code, err, msg)
	}
}
