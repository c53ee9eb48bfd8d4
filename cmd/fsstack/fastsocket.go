package main

import (
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	kmodcompat "github.com/fsstack/fsstack/kmod-compat"
)

// upFastsocket is what `up --fastsocket` configures: fastsocket.ko's
// parameters for the shim service (daemon.Options.Fastsocket), the log
// level when the string set enable_fastsocket_debug, and the parameters
// that were set but change nothing on fsstack.
type upFastsocket struct {
	Params   kmodcompat.Params
	LogLevel *slog.Level // nil unless enable_fastsocket_debug was given
	Inert    []string
}

// parseFastsocket reads the --fastsocket string: the parameters of a
// `modprobe fastsocket ...` line (or of an `options fastsocket ...` line).
func parseFastsocket(s string) (upFastsocket, error) {
	p, given, err := kmodcompat.ParseParamsGiven(s)
	if err != nil {
		return upFastsocket{}, err
	}
	u := upFastsocket{Params: p, Inert: p.Inert()}
	if slices.Contains(given, "enable_fastsocket_debug") {
		l := p.LogLevel()
		u.LogLevel = &l
	}
	return u, nil
}

// fastsocketHelp is the paragraph of `up --help` on --fastsocket.
func fastsocketHelp() string {
	var b strings.Builder
	b.WriteString(`--fastsocket takes fastsocket.ko's module parameters as they were given to
modprobe ("enable_listen_spawn=2 enable_fast_epoll=1", a whole "modprobe fastsocket ..."
line, or an "options fastsocket ..." line from /etc/modprobe.d) and gives them the
meaning they had. Parameters not given keep the module's defaults:
`)
	for _, e := range kmodcompat.DefaultParams().Effects() {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	b.WriteString(`enable_listen_spawn is published to applications under the shim, whose
/dev/fastsocket SPAWN ioctls follow it. enable_fastsocket_debug sets the log level unless
--log-level is given too. An unknown parameter or a value out of range stops up with a
usage error naming it.`)
	return b.String()
}

// flagGiven reports whether the command line set the flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
