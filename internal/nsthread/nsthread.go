// Package nsthread runs code on an OS thread switched into another network
// namespace without moving the caller.
//
// A Linux network namespace belongs to a thread, and the Go scheduler moves
// goroutines between threads. So the work runs on a fresh goroutine locked
// to its thread; the thread switches back to its original namespace
// afterwards, and if that fails it stays locked and dies with the
// goroutine, so no other goroutine ever runs in the wrong namespace.
// Sockets and other kernel objects made inside keep their namespace after
// the call returns; goroutines started inside do not inherit it.
package nsthread

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Isolated runs fn on a locked OS thread and afterwards switches that thread
// back to the network namespace it started in. fn may change the thread's
// namespace (enter one, or create one with netns.NewNamed). A panic in fn
// is returned as an error.
func Isolated(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		var ferr error
		func() {
			defer func() {
				if r := recover(); r != nil {
					ferr = fmt.Errorf("panic: %v", r)
				}
			}()
			ferr = fn()
		}()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked and ends with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// In runs fn on a locked OS thread switched into target, then switches the
// thread back.
func In(target netns.NsHandle, fn func() error) error {
	return Isolated(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return fn()
	})
}
