//go:build !linux

package afxdp

import "fmt"

// Open returns ErrNotSupported: AF_XDP is Linux-only.
func Open(ifindex, queue int, cfg SocketConfig) (*Socket, error) {
	return nil, fmt.Errorf("afxdp: open: %w", ErrNotSupported)
}
