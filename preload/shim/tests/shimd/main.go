//go:build fsstack_shimd

// Command shimd serves the shim protocol on a unix socket from the kernel's
// TCP stack (daemon.KernelBackend), so the shim's attached path can be tested
// without AF_XDP: go build -tags fsstack_shimd, then shimd PATH.
//
// It is behind a build tag so that `go build ./...` does not depend on it.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	kmodcompat "github.com/fsstack/fsstack/kmod-compat"
	"github.com/fsstack/fsstack/preload/daemon"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: shimd SOCKET-PATH")
		os.Exit(2)
	}
	path := os.Args[1]
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "shimd:", err)
		os.Exit(1)
	}
	// SHIMD_FASTSOCKET: fastsocket.ko parameters, as `fsstack up --fastsocket`.
	fsock, err := kmodcompat.ParseParams(os.Getenv("SHIMD_FASTSOCKET"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "shimd: SHIMD_FASTSOCKET:", err)
		os.Exit(2)
	}
	d, err := daemon.New(daemon.Options{
		Backend:    daemon.KernelBackend{},
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Fastsocket: &fsock,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "shimd:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	err = d.Serve(context.Background(), ln)
	fmt.Fprintln(os.Stderr, "shimd:", err)
	os.Exit(1)
}
