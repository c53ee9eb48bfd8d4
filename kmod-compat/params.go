// Package kmodcompat keeps Fastsocket's kernel-module interface working on
// fsstack: the parameters of fastsocket.ko (this file) and the
// /dev/fastsocket ioctl ABI (fastsocket_abi.h, served by the LD_PRELOAD
// shim).
//
// A user can paste the parameter string of a `modprobe fastsocket ...`
// line, or of an `options fastsocket ...` line from /etc/modprobe.d, and
// get the meaning it had. Parameters whose mechanism fsstack does not need
// (Fastsocket's skb and socket pools, its direct-TCP route cache) are
// accepted, validated and reported as having no effect, so old
// configurations keep loading.
package kmodcompat

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
)

// Params are fastsocket.ko's module parameters, with the module's names,
// values and defaults.
type Params struct {
	// EnableListenSpawn: 0 off (one shared listen table), 1 on with the
	// application setting worker affinity, 2 on with fsstack choosing it.
	EnableListenSpawn int
	// EnableFastEpoll: Fastsocket's epoll fast path. fsstack always has
	// it: the shim answers epoll for fsstack sockets from shared memory
	// without a system call per socket. 0 is accepted and has no effect.
	EnableFastEpoll int
	// EnableReceiveFlowDeliver: 1 delivers the replies of active opens to
	// the shard that opened them. fsstack always does (each shard's source
	// ports encode the shard; its shards need it to be correct), so 0 is
	// accepted and has no effect.
	EnableReceiveFlowDeliver int
	// EnableDirectTCP: Fastsocket's route cache for established sockets.
	// No effect: each shard's netstack keeps its own routes.
	EnableDirectTCP int
	// EnableSkbPool: Fastsocket's per-core skb pool. No effect: each
	// shard has its own buffers.
	EnableSkbPool int
	// EnableReceiveCPUSelection: 1 lets the application's CPU choose the
	// receive queue of its connections (needs an RSS hash fsstack can
	// program). No effect on veth.
	EnableReceiveCPUSelection int
	// EnableSocketPoolSize: preallocated sockets per core. No effect.
	EnableSocketPoolSize int
	// EnableFastsocketDebug: the module's debug level, 0 (quiet) to 7
	// (everything); it sets fsstack's log level.
	EnableFastsocketDebug int
}

// DefaultParams returns the module's defaults.
func DefaultParams() Params {
	return Params{EnableListenSpawn: 2, EnableFastEpoll: 1, EnableFastsocketDebug: 3}
}

type param struct {
	name     string
	min, max int
	field    func(*Params) *int
	effect   string
	inert    bool // fsstack has no mechanism the value changes
}

var params = []param{
	{"enable_listen_spawn", 0, 2, func(p *Params) *int { return &p.EnableListenSpawn },
		"local accepts (0 off: any shard; 1 on, the application pins its workers; 2 on, FSOCKET_IOC_SPAWN_* pin them)", false},
	{"enable_fast_epoll", 0, 1, func(p *Params) *int { return &p.EnableFastEpoll },
		"always on: the shim answers epoll for fsstack sockets from shared memory; 0 has no effect", true},
	{"enable_receive_flow_deliver", 0, 1, func(p *Params) *int { return &p.EnableReceiveFlowDeliver },
		"always on: each shard's source ports encode the shard; 0 has no effect", true},
	{"enable_direct_tcp", 0, 1, func(p *Params) *int { return &p.EnableDirectTCP },
		"no effect: each shard keeps its own routes", true},
	{"enable_skb_pool", 0, 1, func(p *Params) *int { return &p.EnableSkbPool },
		"no effect: each shard has its own buffers", true},
	{"enable_receive_cpu_selection", 0, 1, func(p *Params) *int { return &p.EnableReceiveCPUSelection },
		"no effect: needs an RSS hash fsstack can program", true},
	{"enable_socket_pool_size", 0, 1 << 20, func(p *Params) *int { return &p.EnableSocketPoolSize },
		"no effect: sockets are not preallocated", true},
	{"enable_fastsocket_debug", 0, 7, func(p *Params) *int { return &p.EnableFastsocketDebug },
		"log level (0-2 errors, 3 warnings, 4-5 info, 6-7 debug)", false},
}

func lookup(name string) (param, bool) {
	for _, p := range params {
		if p.name == name {
			return p, true
		}
	}
	return param{}, false
}

// Names returns the parameter names, sorted.
func Names() []string {
	out := make([]string, len(params))
	for i, p := range params {
		out[i] = p.name
	}
	sort.Strings(out)
	return out
}

// ErrBadParams is wrapped by every error ParseParams returns.
var ErrBadParams = errors.New("bad fastsocket parameters")

// ParseParams reads a fastsocket.ko parameter string on top of the
// defaults. It accepts "name=value" words separated by spaces, tabs,
// newlines or commas, optionally preceded by "modprobe [-options]
// fastsocket" or "options fastsocket". A name given twice keeps the last
// value, as modprobe does.
func ParseParams(s string) (Params, error) {
	p, _, err := ParseParamsGiven(s)
	return p, err
}

// ParseParamsGiven is ParseParams that also returns the names the string
// set, in order (a name given twice appears twice), so that a caller can
// tell a default from a value the user chose.
func ParseParamsGiven(s string) (Params, []string, error) {
	p, given := DefaultParams(), []string(nil)
	words := strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == ','
	})
	if len(words) > 0 && (words[0] == "modprobe" || words[0] == "options" || words[0] == "insmod") {
		words = words[1:]
		for len(words) > 0 && strings.HasPrefix(words[0], "-") {
			words = words[1:]
		}
		if len(words) == 0 || (words[0] != "fastsocket" && words[0] != "fastsocket.ko") {
			return p, given, fmt.Errorf("%w: expected the module name fastsocket after the command", ErrBadParams)
		}
		words = words[1:]
	}
	for _, w := range words {
		name, val, ok := strings.Cut(w, "=")
		name = strings.TrimPrefix(name, "fastsocket.") // kernel command-line form
		def, known := lookup(name)
		if !known {
			return p, given, fmt.Errorf("%w: unknown parameter %q; fastsocket.ko has %s", ErrBadParams, name, strings.Join(Names(), ", "))
		}
		if !ok {
			return p, given, fmt.Errorf("%w: %s needs a value (%s=N)", ErrBadParams, name, name)
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < def.min || n > def.max {
			return p, given, fmt.Errorf("%w: %s=%s: want a whole number from %d to %d", ErrBadParams, name, val, def.min, def.max)
		}
		*def.field(&p) = n
		given = append(given, name)
	}
	return p, given, nil
}

// String formats p as a parameter string ParseParams reads back.
func (p Params) String() string {
	var b strings.Builder
	for i, d := range params {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", d.name, *d.field(&p))
	}
	return b.String()
}

// Effects describes what each parameter does on fsstack, for logs and
// `fsstack up --help`.
func (p Params) Effects() []string {
	out := make([]string, len(params))
	for i, d := range params {
		out[i] = fmt.Sprintf("%s=%d: %s", d.name, *d.field(&p), d.effect)
	}
	return out
}

// LogLevel maps enable_fastsocket_debug onto a slog level.
func (p Params) LogLevel() slog.Level {
	switch {
	case p.EnableFastsocketDebug <= 2:
		return slog.LevelError
	case p.EnableFastsocketDebug == 3:
		return slog.LevelWarn
	case p.EnableFastsocketDebug <= 5:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// Inert returns the parameters p sets to a value other than the module's
// default that change nothing on fsstack (see Effects), so a caller can
// say so.
func (p Params) Inert() []string {
	def := DefaultParams()
	var out []string
	for _, d := range params {
		if d.inert && *d.field(&p) != *d.field(&def) {
			out = append(out, d.name)
		}
	}
	return out
}
