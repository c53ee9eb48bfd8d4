package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with
//
//	go build -ldflags "-X main.version=v0.1.0" ./cmd/fsstack
//
// and otherwise taken from the module's build information.
var version = ""

// Version returns the version string.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += " " + rev + dirty
	}
	return v
}

func runVersion(e *env, args []string) int {
	fs := newFlags(e, "version", "", "Print fsstack's version, Go version and platform.")
	if rc := parseFlags(e, fs, args); rc >= 0 {
		return rc
	}
	fmt.Fprintf(e.stdout, "fsstack %s (%s %s/%s)\n", Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}
