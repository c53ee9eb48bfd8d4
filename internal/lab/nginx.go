package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/internal/control"
	"github.com/fsstack/fsstack/internal/netlab"
)

// Servers the lab can measure (Options.Server).
const (
	// ServerGo is the built-in Go HTTP server: on the kernel's stack via
	// net.Listen, on fsstack via the embedded API (stack.Listen).
	ServerGo = "go"
	// ServerNginx is Debian's nginx, unmodified: on the kernel's stack as
	// it is, on fsstack under LD_PRELOAD=libfsstack.so with `fsstack up`
	// serving the interface (the Fastsocket comparison).
	ServerNginx = "nginx"
)

// nginxConf is the lab's nginx configuration: the 64-byte Body as
// index.html and BulkBody as the file behind BulkPath (sendfile), no
// access log, keep-alive connections that last the phase.
const nginxConf = `daemon off;
master_process on;
worker_processes {{WORKERS}};
user root;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log warn;
worker_rlimit_nofile 65536;
events {
	worker_connections 16384;
}
http {
	access_log off;
	client_body_temp_path {{DIR}}/tmp/body;
	proxy_temp_path {{DIR}}/tmp/proxy;
	fastcgi_temp_path {{DIR}}/tmp/fastcgi;
	uwsgi_temp_path {{DIR}}/tmp/uwsgi;
	scgi_temp_path {{DIR}}/tmp/scgi;
	default_type text/plain;
	sendfile on;
	tcp_nodelay on;
	keepalive_timeout 65;
	keepalive_requests 1000000;
	server {
		listen {{ADDR}};
		root {{DIR}}/www;
		index index.html;
	}
}
`

// shimLib finds libfsstack.so: Options.ShimLib, next to Exe, $FSSTACK_LIB.
func (o Options) shimLib() (string, error) {
	cands := []string{o.ShimLib}
	if o.ShimLib == "" {
		cands = []string{filepath.Join(filepath.Dir(o.Exe), "libfsstack.so"), os.Getenv("FSSTACK_LIB")}
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if abs, err := filepath.Abs(c); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs, nil
			}
		}
	}
	return "", fmt.Errorf("libfsstack.so not found (looked at %s); build it with 'make' or pass its path", strings.Join(nonEmpty(cands), ", "))
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return []string{"nothing"}
	}
	return out
}

// writeNginx writes dir/nginx.conf (listening on addr) and dir/www: Body
// as index.html, BulkBody at BulkPath.
func writeNginx(dir, addr string, workers int) (string, error) {
	for _, d := range []string{filepath.Join(dir, "www"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("nginx directory: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "index.html"), Body, 0o644); err != nil {
		return "", fmt.Errorf("nginx body: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "www", strings.TrimPrefix(BulkPath, "/")), BulkBody(), 0o644); err != nil {
		return "", fmt.Errorf("nginx bulk body: %w", err)
	}
	conf := strings.NewReplacer("{{DIR}}", dir, "{{ADDR}}", addr, "{{WORKERS}}", strconv.Itoa(workers)).Replace(nginxConf)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", fmt.Errorf("nginx config: %w", err)
	}
	return path, nil
}

// nginxServer starts nginx in the server namespace listening on addr. With
// daemonArgs set it first starts `fsstack up` with them (its control
// socket is ctl) and runs nginx under the shim through `fsstack run
// --fallback fail`, so that nginx can never quietly measure the kernel.
func (r *runner) nginxServer(name, dir, addr, ctl string, daemonArgs []string) starter {
	return func(ctx context.Context) (*server, error) {
		nginx, err := exec.LookPath("nginx")
		if err != nil {
			return nil, fmt.Errorf("nginx not found: install it with scripts/install-deps.sh (Debian package nginx-light): %w", err)
		}
		conf, err := writeNginx(dir, addr, r.opts.Workers)
		if err != nil {
			return nil, err
		}
		prog := program{
			label: "nginx",
			path:  nginx,
			args:  []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")},
			stop:  func(c *child) { stopNginx(c, 5*time.Second) },
			log:   filepath.Join(dir, "error.log"),
		}
		return r.startProgram(ctx, name, addr, ctl, daemonArgs, prog)
	}
}

// program is an unmodified server the lab runs on the kernel or, under
// the shim, on fsstack.
type program struct {
	label string       // its name in messages
	path  string       // the executable
	args  []string     // its arguments
	stop  func(*child) // stops it (and its children)
	log   string       // a log file whose tail explains a failure, if any
}

// startProgram starts prog in the server namespace and waits until it
// accepts on addr. With daemonArgs set it first starts `fsstack up` with
// them (its control socket is ctl) and runs prog under the shim through
// `fsstack run --fallback fail`, so that it can never quietly measure the
// kernel.
func (r *runner) startProgram(ctx context.Context, name, addr, ctl string, daemonArgs []string, prog program) (*server, error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	died := make(chan struct{})
	var diedOnce sync.Once
	type proc struct {
		label string
		c     *child
	}
	var procs []proc
	watch := func(label string, c *child) {
		procs = append(procs, proc{label, c})
		go func() {
			<-c.done
			diedOnce.Do(func() { close(died) })
		}()
	}
	detail := func() string {
		var parts []string
		for _, p := range procs {
			select {
			case <-p.c.done:
				parts = append(parts, p.label+": "+p.c.exitDetail())
			default:
			}
		}
		if prog.log != "" {
			if b, err := os.ReadFile(prog.log); err == nil && len(b) > 0 {
				parts = append(parts, prog.label+" "+filepath.Base(prog.log)+":\n"+indent(tail(string(b), 15)))
			}
		}
		return strings.Join(parts, "\n")
	}

	var (
		n   *child
		err error
	)
	stackPID := 0
	if daemonArgs != nil {
		lib, err := r.opts.shimLib()
		if err != nil {
			return nil, err
		}
		d, err := r.start(ctx, r.lab.ServerNS, append([]string{"up"}, daemonArgs...)...)
		if err != nil {
			return nil, err
		}
		watch("fsstack up", d)
		if d.cmd.Process != nil {
			stackPID = d.cmd.Process.Pid
		}
		stops = append(stops, func() { d.stop(10 * time.Second) })
		if err := waitDaemon(ctx, d, ctl); err != nil {
			stopAll()
			return nil, err
		}
		// `fsstack run` execs the program with the shim preloaded; with
		// --fallback fail it never quietly runs on the kernel.
		n, err = r.start(ctx, r.lab.ServerNS, append([]string{"run", "--socket", ctl, "--lib", lib, "--fallback", "fail", "--", prog.path}, prog.args...)...)
	} else {
		n, err = r.startCmd(r.lab.ServerNS, prog.path, prog.args...)
	}
	if err != nil {
		stopAll()
		return nil, err
	}
	watch(prog.label, n)
	stops = append(stops, func() { prog.stop(n) })
	if err := r.waitAccept(ctx, addr, died); err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", name, prog.label, err, detail())
		stopAll()
		return nil, err
	}
	return &server{died: died, stop: stopAll, detail: detail, queues: 0, stackPID: stackPID}, nil
}

// waitDaemon waits until `fsstack up` answers on ctl.
func waitDaemon(ctx context.Context, d *child, ctl string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := control.Do(cctx, ctl, "info", nil, nil)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("fsstack up exited before it was ready: %s", d.exitDetail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fsstack up not ready after 30s (last: %v)", err)
		}
	}
}

// waitAccept dials addr from the client namespace until it connects.
func (r *runner) waitAccept(ctx context.Context, addr string, died <-chan struct{}) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := netlab.Do(r.lab.ClientNS, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		select {
		case <-died:
			return errors.New("exited before it accepted connections")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("does not accept on %s after 20s (last: %v)", addr, err)
		}
	}
}

// stopNginx asks the master for a fast shutdown (SIGTERM) and, if it does
// not go in time, kills it and its workers.
func stopNginx(c *child, grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	workers := childPIDs(c.cmd.Process.Pid)
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
	for _, pid := range workers {
		syscall.Kill(pid, syscall.SIGKILL) // gone already unless the master was killed
	}
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
