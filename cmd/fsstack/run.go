package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/fsstack/fsstack/internal/control"
)

const runUsage = `Usage: fsstack run [--socket PATH] [--lib PATH] [--fallback kernel|fail] [--preload LIB]... -- COMMAND [ARGS...]

Run COMMAND with libfsstack.so preloaded, so its TCP sockets live on the
fsstack daemon listening on --socket. The command replaces fsstack (same
pid, same signals). If the daemon is not running, the shim says so once on
stderr and the program runs on the kernel stack (--fallback fail refuses
instead).

Other preloaded libraries: COMMAND gets
LD_PRELOAD=INHERITED:PRELOAD:libfsstack.so, that is the libraries of the
LD_PRELOAD fsstack run was started with, then each --preload LIB in the
order given, then the shim, last, nearest to libc. A library that wraps
socket calls, such as Fastsocket's libfsocket.so, thus sits on top of the
shim: its wrappers run first, and what they pass on (the next definition,
and its /dev/fastsocket ioctls) reaches the shim, which serves each call
once. These two are the same:

  LD_PRELOAD=/usr/lib/libfsocket.so fsstack run -- nginx
  fsstack run --preload /usr/lib/libfsocket.so -- nginx

A libfsstack.so already named there keeps its place (the shim serves each
call once in either order), and that one entry becomes the --lib shim:

  LD_PRELOAD=libfsstack.so:/usr/lib/libfsocket.so fsstack run -- nginx

fsstack itself is a static binary (no dynamic loader runs for it), so an
inherited LD_PRELOAD never loads into the launcher.

Flags:
`

// runRun execs COMMAND under the shim.
func runRun(e *env, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), runUsage); writeFlags(fs.Output(), fs) }
	sock := fs.String("socket", control.DefaultSocketPath, "control socket of the daemon")
	lib := fs.String("lib", "", "path of libfsstack.so (default: next to this binary, then $FSSTACK_LIB, then /usr/local/lib/fsstack)")
	fallback := fs.String("fallback", "kernel", "when the daemon is unreachable: kernel (run on the kernel stack) or fail")
	var preload []string
	fs.Func("preload", "a library to preload on top of the shim (repeatable; a `LIB` or a list as in LD_PRELOAD)", func(v string) error {
		for _, l := range splitPreload(v) {
			abs, err := preloadPath(l)
			if err != nil {
				return err
			}
			preload = append(preload, abs)
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(e.stderr, "fsstack run: no command given; usage: fsstack run -- COMMAND [ARGS...]")
		return 2
	}
	if *fallback != "kernel" && *fallback != "fail" {
		fmt.Fprintf(e.stderr, "fsstack run: --fallback %q: use kernel or fail\n", *fallback)
		return 2
	}
	so, err := findShim(*lib)
	if err != nil {
		fmt.Fprintf(e.stderr, "fsstack run: %v\n", err)
		return 1
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(e.stderr, "fsstack run: %s: %v\n", argv[0], err)
		return 127
	}
	env := shimEnv(os.Environ(), so, *sock, *fallback, preload)
	err = syscall.Exec(path, argv, env)
	fmt.Fprintf(e.stderr, "fsstack run: exec %s: %v\n", path, err)
	return 126
}

// preloadPath checks a --preload library and makes its path absolute (the
// dynamic loader would take a relative one from COMMAND's directory).
func preloadPath(lib string) (string, error) {
	abs, err := filepath.Abs(lib)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s: %w; name an existing shared library", lib, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file; name a shared library", lib)
	}
	return abs, nil
}

// findShim locates libfsstack.so.
func findShim(flagPath string) (string, error) {
	var candidates []string
	if flagPath != "" {
		candidates = []string{flagPath}
	} else {
		if exe, err := os.Executable(); err == nil {
			candidates = append(candidates, filepath.Join(filepath.Dir(exe), "libfsstack.so"))
		}
		if p := os.Getenv("FSSTACK_LIB"); p != "" {
			candidates = append(candidates, p)
		}
		candidates = append(candidates, "/usr/local/lib/fsstack/libfsstack.so", "/usr/lib/fsstack/libfsstack.so")
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			abs, err := filepath.Abs(c)
			if err != nil {
				return "", err
			}
			return abs, nil
		}
	}
	return "", fmt.Errorf("libfsstack.so not found (looked in %s); build it with 'make' or name it with --lib", strings.Join(candidates, ", "))
}

// splitPreload splits an LD_PRELOAD value: the dynamic loader takes
// colons and spaces as separators.
func splitPreload(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ' ' || r == '\t' })
}

// isShim reports whether an LD_PRELOAD entry is a libfsstack.so.
func isShim(entry, so string) bool {
	return entry == so || filepath.Base(entry) == "libfsstack.so"
}

// shimEnv returns environ with LD_PRELOAD composed for COMMAND: the
// inherited libraries, then preload, then the shim so, last, unless a
// libfsstack.so among them already has a place, which so takes (see
// runUsage); and the shim's settings.
func shimEnv(environ []string, so, sock, fallback string, preload []string) []string {
	out := make([]string, 0, len(environ)+3)
	var libs []string
	for _, kv := range environ {
		switch {
		case strings.HasPrefix(kv, "LD_PRELOAD="):
			libs = append(libs, splitPreload(strings.TrimPrefix(kv, "LD_PRELOAD="))...)
		case strings.HasPrefix(kv, "FSSTACK_SOCKET="), strings.HasPrefix(kv, "FSSTACK_FALLBACK="):
		default:
			out = append(out, kv)
		}
	}
	libs = append(libs, preload...)
	kept, placed := libs[:0], false
	for _, l := range libs {
		switch {
		case !isShim(l, so):
			kept = append(kept, l)
		case !placed: // the caller chose the shim's place
			kept, placed = append(kept, so), true
		}
	}
	if !placed {
		kept = append(kept, so)
	}
	return append(out, "LD_PRELOAD="+strings.Join(kept, ":"), "FSSTACK_SOCKET="+sock, "FSSTACK_FALLBACK="+fallback)
}
