// Command shimd is a stand-alone shim daemon on the kernel's TCP stack: it
// serves LD_PRELOAD clients (libfsstack.so) on a unix socket exactly as
// `fsstack up` does, but without AF_XDP, so the shim and the conformance
// suite can run end to end on any machine. It also shows how a control
// server hands non-JSON connections to daemon.ServeConn.
//
//	go run ./preload/shimd --socket /tmp/fss.sock &
//	LD_PRELOAD=bin/libfsstack.so FSSTACK_SOCKET=/tmp/fss.sock ./server
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
)

func main() {
	path := flag.String("socket", "/run/fsstack/fsstack.sock", "unix socket to serve on")
	socks := flag.Uint("socks", 0, "socket slots per client (0: the ABI default)")
	verbose := flag.Bool("v", false, "debug logs")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "shimd:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *path, uint32(*socks), log, nil); err != nil {
		fmt.Fprintln(os.Stderr, "shimd:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// run serves until ctx ends. ready, if not nil, is closed once the socket
// listens.
func run(ctx context.Context, path string, socks uint32, log *slog.Logger, ready chan<- *daemon.Daemon) error {
	d, err := daemon.New(daemon.Options{Backend: daemon.KernelBackend{}, Logger: log, Layout: abi.Layout{Socks: socks}})
	if err != nil {
		return err
	}
	defer d.Close()
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.Remove(path)
	context.AfterFunc(ctx, func() { ln.Close() })
	log.Info("shimd serving", "socket", path)
	if ready != nil {
		ready <- d
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Go(func() { serve(ctx, d, c) })
	}
}

// serve is what a control server does with each connection: look at the
// first byte; JSON goes to the JSON handler, anything else is a shim.
func serve(ctx context.Context, d *daemon.Daemon, c *net.UnixConn) {
	var first [1]byte
	c.SetReadDeadline(time.Now().Add(daemon.HelloTimeout))
	stop := context.AfterFunc(ctx, func() { c.Close() }) // do not hold up shutdown
	_, err := c.Read(first[:])
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	if first[0] == '{' {
		c.Write([]byte(`{"error":"shimd serves only shim attaches; use fsstack up for the JSON control protocol"}` + "\n"))
		c.Close()
		return
	}
	d.ServeConn(ctx, c, first[:])
}
