//go:build !linux

package afxdp

import (
	"fmt"
	"net/netip"
)

// Steering is unavailable on this platform; LoadSteering fails.
type Steering struct{}

// LoadSteering returns ErrNotSupported: XDP is Linux-only.
func LoadSteering(opts SteeringOptions) (*Steering, error) {
	return nil, fmt.Errorf("afxdp: load steering: %w", ErrNotSupported)
}

func (s *Steering) Attach(ifindex int, mode AttachMode) (AttachMode, error) {
	return mode, fmt.Errorf("afxdp: attach: %w", ErrNotSupported)
}
func (s *Steering) SetSocket(queue int, sock *Socket) error { return ErrNotSupported }
func (s *Steering) AddAddr(a netip.Addr) error              { return ErrNotSupported }
func (s *Steering) DelAddr(a netip.Addr) error              { return ErrNotSupported }
func (s *Steering) AddPort(a netip.Addr, port uint16) error { return ErrNotSupported }
func (s *Steering) DelPort(a netip.Addr, port uint16) error { return ErrNotSupported }
func (s *Steering) SetEphemeralRange(first, last uint16) error {
	return ErrNotSupported
}
func (s *Steering) Stats() (SteeringStats, error) { return SteeringStats{}, ErrNotSupported }
func (s *Steering) Close() error                  { return nil }

func (s *Steering) Tables() (SteeringTables, error) { return SteeringTables{}, ErrNotSupported }
