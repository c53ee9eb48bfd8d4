//go:build !linux

package netlab

import "fmt"

type closer struct{}

// New returns ErrNotSupported: network namespaces are Linux-only.
func New(opts Options) (*Lab, error) {
	return nil, fmt.Errorf("netlab: new: %w", ErrNotSupported)
}

// Close does nothing on this platform (New never succeeds).
func (l *Lab) Close() error { return nil }

// Do returns ErrNotSupported: network namespaces are Linux-only.
func Do(ns string, fn func() error) error {
	return fmt.Errorf("netlab: do: %w", ErrNotSupported)
}

// Sweep does nothing on this platform.
func Sweep() ([]string, error) { return nil, nil }

// ClientPackets returns ErrNotSupported: network namespaces are Linux-only.
func (l *Lab) ClientPackets() (tx, rx uint64, err error) {
	return 0, 0, fmt.Errorf("netlab: client packets: %w", ErrNotSupported)
}
