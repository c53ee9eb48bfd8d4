package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Reserved ports across a crash.
//
// A stack adds its ephemeral range to net.ipv4.ip_local_reserved_ports
// and restores the value it found on Close. A stack killed with SIGKILL
// restores nothing, and the next start would take the leftover for the
// administrator's value and restore that. With Config.StateDir the stack
// writes what it found into a state file before it changes the sysctl
// and removes the file after restoring it; a start that finds the file
// (same namespace, same range) knows which ports the crashed run added
// and leaves them out of the value it will restore.
//
// The state file is per namespace (its device and inode) and per range,
// so stacks in other namespaces, or with other ranges, never read it. A
// namespace inode can be reused after the namespace is gone; a file from
// a dead namespace is recognised by the ports it names not all being
// reserved in the new one, and is then ignored.

// portSet is a set of ports as sorted, disjoint, non-adjacent ranges:
// the form the kernel prints ip_local_reserved_ports in.
type portSet []PortRange

// parsePortSet reads the kernel's list syntax: "", "1000", "1000-1010,2000".
func parsePortSet(s string) (portSet, error) {
	var out portSet
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		lo, hi, isRange := strings.Cut(f, "-")
		first, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port list %q: bad port %q", s, lo)
		}
		last := first
		if isRange {
			if last, err = strconv.ParseUint(hi, 10, 16); err != nil {
				return nil, fmt.Errorf("port list %q: bad port %q", s, hi)
			}
		}
		if last < first {
			return nil, fmt.Errorf("port list %q: range %q ends before it starts", s, f)
		}
		out = append(out, PortRange{First: uint16(first), Last: uint16(last)})
	}
	return out.normal(), nil
}

// normal sorts and merges overlapping or adjacent ranges.
func (p portSet) normal() portSet {
	if len(p) == 0 {
		return nil
	}
	q := append(portSet(nil), p...)
	sort.Slice(q, func(i, j int) bool { return q[i].First < q[j].First })
	out := q[:1]
	for _, r := range q[1:] {
		last := &out[len(out)-1]
		if int(r.First) <= int(last.Last)+1 {
			last.Last = max(last.Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// minus returns the ports of p that are not in o.
func (p portSet) minus(o portSet) portSet {
	var out portSet
	for _, r := range p {
		first, last := int(r.First), int(r.Last)
		for _, x := range o {
			if int(x.Last) < first || int(x.First) > last {
				continue
			}
			if int(x.First) > first {
				out = append(out, PortRange{First: uint16(first), Last: x.First - 1})
			}
			first = int(x.Last) + 1
			if first > last {
				break
			}
		}
		if first <= last {
			out = append(out, PortRange{First: uint16(first), Last: uint16(last)})
		}
	}
	return out.normal()
}

// contains reports whether every port of o is in p.
func (p portSet) contains(o portSet) bool { return len(o.minus(p)) == 0 }

func (p portSet) String() string {
	parts := make([]string, len(p))
	for i, r := range p {
		if r.First == r.Last {
			parts[i] = strconv.Itoa(int(r.First))
		} else {
			parts[i] = r.String()
		}
	}
	return strings.Join(parts, ",")
}

// reservationState is the state file's content.
type reservationState struct {
	// Original is ip_local_reserved_ports as the stack found it, without
	// what a crashed run of the same range had left.
	Original string `json:"original"`
	// Added is the range the stack adds.
	Added string `json:"added"`
}

// reservationStatePath names the state file of range r in the namespace
// the calling thread is in, under dir.
func reservationStatePath(dir string, r PortRange) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", fmt.Errorf("identify network namespace: %w", err)
	}
	return filepath.Join(dir, fmt.Sprintf("reserved-ports.%d-%d.%d-%d.json", st.Dev, st.Ino, r.First, r.Last)), nil
}

// baseReservation returns the value to restore on release, given the
// current value cur: cur itself, or, when a crashed run of the same range
// left a state file, cur without the ports that run added.
func baseReservation(cur portSet, statePath string, r PortRange, log *slog.Logger) portSet {
	b, err := os.ReadFile(statePath)
	if errors.Is(err, os.ErrNotExist) {
		return cur
	}
	if err != nil {
		log.Warn("cannot read the reserved ports state file; taking the current value as the original", "path", statePath, "err", err)
		return cur
	}
	var st reservationState
	if err := json.Unmarshal(b, &st); err != nil {
		log.Warn("reserved ports state file is not valid; taking the current value as the original", "path", statePath, "err", err)
		return cur
	}
	orig, err1 := parsePortSet(st.Original)
	added, err2 := parsePortSet(st.Added)
	if err := errors.Join(err1, err2); err != nil {
		log.Warn("reserved ports state file is not valid; taking the current value as the original", "path", statePath, "err", err)
		return cur
	}
	leaked := added.minus(orig)
	if !cur.contains(leaked) {
		// Not this namespace's leftover (the file outlived its
		// namespace) or the administrator changed the value since.
		log.Info("reserved ports state file does not match the namespace; ignoring it", "path", statePath,
			"current", cur.String(), "recorded", st.Original)
		return cur
	}
	base := cur.minus(leaked)
	log.Warn("a previous run did not restore net.ipv4.ip_local_reserved_ports (killed?); its range will be removed on close",
		"current", cur.String(), "original", base.String(), "leftover", leaked.String())
	return base
}

// writeReservationState writes st to path atomically (a crash leaves the
// old file or the new one, never half of one).
func writeReservationState(path string, st reservationState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write reserved ports state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write reserved ports state: %w", err)
	}
	return nil
}
