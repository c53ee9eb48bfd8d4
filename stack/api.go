package stack

import (
	"context"
	"net"
)

// Stack is a running sharded stack. Its methods are safe for concurrent use.
type Stack struct {
	cfg Config
}

// New validates cfg, attaches the steering program to cfg.Interface, opens
// one AF_XDP socket per queue and starts one shard per queue.
func New(cfg Config) (*Stack, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, ErrNotSupported
}

// Queues returns the number of shards.
func (s *Stack) Queues() int { return 0 }

// Listen listens on every shard. network is "tcp" or "tcp4"; address is
// "host:port" where host may be empty or 0.0.0.0 for every address of the
// interface.
func (s *Stack) Listen(network, address string) (net.Listener, error) {
	return nil, ErrNotSupported
}

// DialContext opens a connection from one of the shards.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return nil, ErrNotSupported
}

// Stats returns the counters of every shard.
func (s *Stack) Stats() []ShardStats { return nil }

// Close stops every shard, detaches the steering program and releases every
// socket and UMEM.
func (s *Stack) Close() error { return nil }
