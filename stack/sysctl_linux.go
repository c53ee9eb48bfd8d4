package stack

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

const unprivPortStartPath = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

// UnprivilegedPortStart returns net.ipv4.ip_unprivileged_port_start of the
// stack's network namespace: binding a port below it needs
// CAP_NET_BIND_SERVICE. It is read on every call (an operator may change
// it while the stack runs), on a thread switched into the namespace.
func (s *Stack) UnprivilegedPortStart() (int, error) {
	var v int
	read := func() error {
		b, err := os.ReadFile(unprivPortStartPath)
		if err != nil {
			return fmt.Errorf("read %s: %w", unprivPortStartPath, err)
		}
		v, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("parse %s: %w", unprivPortStartPath, err)
		}
		return nil
	}
	if s.sys == nil { // a stack built by a unit test: the caller's namespace
		return v, read()
	}
	return v, inNetNS(s.sys.ns, read)
}
