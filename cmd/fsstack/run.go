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

const runUsage = `Usage: fsstack run [--socket PATH] [--lib PATH] [--fallback kernel|fail] -- COMMAND [ARGS...]

Run COMMAND with libfsstack.so preloaded, so its TCP sockets live on the
fsstack daemon listening on --socket. The command replaces fsstack (same
pid, same signals). If the daemon is not running, the shim says so once on
stderr and the program runs on the kernel stack (--fallback fail refuses
instead).

Flags:
`

// runRun execs COMMAND under the shim.
func runRun(e *env, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), runUsage); fs.PrintDefaults() }
	sock := fs.String("socket", control.DefaultSocketPath, "control socket of the daemon")
	lib := fs.String("lib", "", "path of libfsstack.so (default: next to this binary, then $FSSTACK_LIB, then /usr/local/lib/fsstack)")
	fallback := fs.String("fallback", "kernel", "when the daemon is unreachable: kernel (run on the kernel stack) or fail")
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
	env := shimEnv(os.Environ(), so, *sock, *fallback)
	err = syscall.Exec(path, argv, env)
	fmt.Fprintf(e.stderr, "fsstack run: exec %s: %v\n", path, err)
	return 126
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

// shimEnv returns environ with the shim preloaded (ahead of any existing
// LD_PRELOAD) and its settings.
func shimEnv(environ []string, so, sock, fallback string) []string {
	out := make([]string, 0, len(environ)+3)
	preload := so
	for _, kv := range environ {
		switch {
		case strings.HasPrefix(kv, "LD_PRELOAD="):
			if old := strings.TrimPrefix(kv, "LD_PRELOAD="); old != "" {
				preload = so + ":" + old
			}
		case strings.HasPrefix(kv, "FSSTACK_SOCKET="), strings.HasPrefix(kv, "FSSTACK_FALLBACK="):
		default:
			out = append(out, kv)
		}
	}
	return append(out, "LD_PRELOAD="+preload, "FSSTACK_SOCKET="+sock, "FSSTACK_FALLBACK="+fallback)
}
