package main

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// sdNotify sends state (e.g. "READY=1") to the service manager when the
// daemon runs under systemd with Type=notify ($NOTIFY_SOCKET set). It is a
// no-op otherwise. An abstract socket is written with a leading '@'.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify service manager: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify service manager: %w", err)
	}
	return nil
}
