// Package stack is fsstack's embedded Go API: a TCP/IPv4 stack split into
// per-queue shards, each a gVisor netstack fed by its own AF_XDP socket.
//
//	NIC queue q --XDP steering--> AF_XDP socket q --> shard q (own gVisor stack)
//	                                                   |  listen table, established table,
//	                                                   |  port table, timers: all private
//	segment for shard r arriving on q  --HandoffRing(q->r)--> shard r
//
// A Listen creates one listener on every shard (local listen tables); a
// connection lives on the shard whose queue received its SYN. Active opens
// pick a source port inside the shard's slice of the reserved ephemeral range
// so that any shard can tell which shard owns a reply without a lookup.
package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// PortRange is an inclusive range of TCP ports.
type PortRange struct {
	First, Last uint16
}

// Len returns the number of ports in r.
func (r PortRange) Len() int {
	if r.Last < r.First {
		return 0
	}
	return int(r.Last) - int(r.First) + 1
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// XDPMode selects how the steering program is attached.
type XDPMode string

const (
	// XDPAuto tries native (driver) mode and falls back to generic mode.
	XDPAuto XDPMode = ""
	// XDPNative requires driver mode.
	XDPNative XDPMode = "native"
	// XDPGeneric forces generic (skb) mode.
	XDPGeneric XDPMode = "generic"
)

// Config describes a Stack. It is plain data: Validate checks it without
// touching the kernel, New is the one step that does.
type Config struct {
	// Interface is the network interface fsstack serves (required).
	Interface string

	// Queues is the number of shards, one per receive queue of the
	// interface, starting at queue 0. If Queues is 0, one queue per online
	// CPU, capped by the number of queues the device has.
	Queues int

	// NetNS, if set, is the network namespace the interface lives in: a
	// name under /var/run/netns or an absolute path. If empty, the
	// namespace of the calling process.
	NetNS string

	// EphemeralPorts is the range fsstack reserves for its own active
	// opens. Each shard owns a contiguous slice of it. fsstack adds it to
	// the namespace's net.ipv4.ip_local_reserved_ports while it runs, so
	// kernel sockets do not pick these ports. If zero,
	// DefaultEphemeralPorts.
	EphemeralPorts PortRange

	// StateDir, if set, is a directory where the stack records the
	// system settings it changes until it restores them: today the
	// namespace's original net.ipv4.ip_local_reserved_ports. A start
	// after a run that was killed (SIGKILL) then removes the range that
	// run left reserved instead of taking it for the administrator's
	// value, so the next Close restores the original. If empty, nothing
	// is recorded and a killed run's reservation stays until reset by
	// hand. fsstack up uses its control socket's directory.
	StateDir string

	// TimeWait is how long a closed connection stays in TIME_WAIT. If 0,
	// DefaultTimeWait. Short-connection servers create one TIME_WAIT
	// endpoint per connection they close first; at 20,000 connections/s a
	// 60 s TIME_WAIT holds 1.2 million of them.
	TimeWait time.Duration

	// SendBuffer and ReceiveBuffer are the default TCP buffer sizes in
	// bytes. If 0, DefaultSendBuffer and DefaultReceiveBuffer.
	SendBuffer, ReceiveBuffer int

	// SendBufferMax is the send buffer a new connection starts with while
	// the stack's SendBudget lasts (then SendBuffer), so that a response
	// of a few megabytes leaves the application at once as it does into a
	// kernel socket whose buffer has grown. If 0, DefaultSendBufferMax;
	// negative: every connection starts with SendBuffer.
	SendBufferMax int
	// SendBudget bounds the send buffer granted above SendBuffer to all
	// connections together, as the kernel's tcp_mem bounds its sockets:
	// what slow readers can pin. If 0, a sixteenth of the machine's
	// memory (at least 64 MiB).
	SendBudget int64

	// XDPMode selects native or generic attach; the zero value tries
	// native first.
	XDPMode XDPMode

	// NoGSO turns off segmentation offload in the shards: netstack then
	// builds every MSS-sized segment itself. If false (the default),
	// netstack hands each shard's link endpoint segments of up to 64 KiB
	// and the endpoint cuts them into frames, as a NIC's TSO does, so a
	// bulk sender crosses netstack once per 64 KiB instead of once per
	// 1.4 KiB.
	NoGSO bool

	// DelayedACK is how long a shard may hold a pure ACK in the hope
	// that a segment of the same flow (the application's answer) carries
	// it, so that a request and its answer cost one packet each way as on
	// Linux. If 0, DefaultDelayedACK; negative: ACKs leave at once.
	DelayedACK time.Duration

	// NoGRO turns off receive offload in the shards. If false (the
	// default), the in-order full-sized segments of one flow that arrive
	// in one receive batch are merged before netstack processes them
	// (gVisor's GRO), so a bulk receiver's TCP runs once per batch.
	NoGRO bool

	// NoTxChecksum keeps the TCP transmit checksums in the shards. If
	// false (the default), a shard whose AF_XDP socket runs in copy mode
	// on a kernel with tx metadata (Linux 6.11+) leaves them to the
	// kernel, which hands the device a partial checksum as it does for
	// its own sockets: the NIC completes it, or the kernel's optimized
	// routine does where the device has no checksum offload. Elsewhere
	// (zero-copy, older kernels) the shard sums in Go regardless.
	NoTxChecksum bool

	// CPUs, if set, pins each shard's receive goroutine to a CPU: shard i
	// runs on CPUs[i % len(CPUs)], its own OS thread, so its queue's
	// frames, its tables and the interrupt that feeds it (steer the
	// queue's IRQ to the same CPU) share one core's caches, as
	// Fastsocket's per-core design wants. Each CPU must be one the process
	// may run on. If empty, the Go scheduler places the shards.
	CPUs []int

	// Logger receives the stack's logs. If nil, slog.Default().
	Logger *slog.Logger

	// claimLimit, if set, replaces maxClaimedFlows (tests fill the claim
	// tables with a few connections).
	claimLimit int
	// noRxWatch leaves the shards without their readiness watcher (tests:
	// every notification lost), so only their naps find the frames.
	noRxWatch bool
	// netstackTimeWait, if set, replaces netstackTimeWait (tests see the
	// time-wait table answer without waiting a second).
	netstackTimeWait time.Duration
	// dropTx, if set, is shown every frame the shards send and drops
	// those it returns true for (tests lose a segment on purpose).
	dropTx func(frame []byte) bool
}

// netstackTW is how long netstack keeps a closed connection's endpoint
// in TIME_WAIT; the shards' time-wait tables keep the rest of TimeWait.
func (c *Config) netstackTW() time.Duration {
	d := netstackTimeWait
	if c.netstackTimeWait > 0 {
		d = c.netstackTimeWait
	}
	return min(c.TimeWait, d)
}

// Defaults used where a Config field is zero.
const (
	DefaultTimeWait      = 5 * time.Second
	DefaultDelayedACK    = time.Millisecond
	DefaultSendBuffer    = 256 << 10
	DefaultSendBufferMax = 4 << 20
	DefaultReceiveBuffer = 256 << 10
)

// DefaultEphemeralPorts is the reserved range for active opens when
// Config.EphemeralPorts is zero. It lies above the kernel's default
// ip_local_port_range (32768-60999), and fsstack also reserves it while it
// runs, so the kernel never hands one of these ports to its own sockets.
var DefaultEphemeralPorts = PortRange{First: 61000, Last: 65499}

// Errors returned by New and the API. Errors from New wrap one of these
// where it applies, so callers can test with errors.Is.
var (
	ErrNotSupported = errors.New("fsstack: not supported on this system")
	ErrClosed       = errors.New("fsstack: stack closed")
)

// Validate checks the configuration without touching the kernel.
func (c Config) Validate() error {
	if c.Interface == "" {
		return errors.New("fsstack: no interface given; name one with --iface (list with 'ip link')")
	}
	if c.Queues < 0 {
		return fmt.Errorf("fsstack: queues must be 0 (one per CPU) or more, not %d", c.Queues)
	}
	if c.EphemeralPorts != (PortRange{}) {
		if c.EphemeralPorts.First == 0 || c.EphemeralPorts.Last < c.EphemeralPorts.First {
			return fmt.Errorf("fsstack: ephemeral port range %s is empty or starts at 0", c.EphemeralPorts)
		}
	}
	if c.TimeWait < 0 {
		return fmt.Errorf("fsstack: time-wait %v is negative", c.TimeWait)
	}
	if c.SendBuffer < 0 || c.ReceiveBuffer < 0 {
		return errors.New("fsstack: buffer sizes must not be negative")
	}
	for _, cpu := range c.CPUs {
		if cpu < 0 {
			return fmt.Errorf("fsstack: CPU %d is negative", cpu)
		}
	}
	switch c.XDPMode {
	case XDPAuto, XDPNative, XDPGeneric:
	default:
		return fmt.Errorf("fsstack: unknown XDP mode %q (use native or generic)", c.XDPMode)
	}
	return nil
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.EphemeralPorts == (PortRange{}) {
		c.EphemeralPorts = DefaultEphemeralPorts
	}
	if c.TimeWait == 0 {
		c.TimeWait = DefaultTimeWait
	}
	if c.SendBuffer == 0 {
		c.SendBuffer = DefaultSendBuffer
	}
	if c.SendBufferMax == 0 {
		c.SendBufferMax = DefaultSendBufferMax
	}
	if c.SendBudget == 0 {
		c.SendBudget = defaultSendBudget()
	}
	if c.DelayedACK == 0 {
		c.DelayedACK = DefaultDelayedACK
	}
	if c.ReceiveBuffer == 0 {
		c.ReceiveBuffer = DefaultReceiveBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// ParseCPUList reads a CPU list as taskset and cpuset write it ("0-3,8")
// into Config.CPUs' form, in the order given. An empty list is no CPUs.
func ParseCPUList(list string) ([]int, error) {
	if list == "" {
		return nil, nil
	}
	var cpus []int
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b-a >= 1<<16 {
			return nil, fmt.Errorf("fsstack: bad CPU list %q (use a list like 0 or 0-3 or 0,2,4-7)", list)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
