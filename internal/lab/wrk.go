package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/fsstack/fsstack/internal/loadgen"
)

// Load generators the lab can drive (Options.Loader).
const (
	// LoaderBuiltin is internal/loadgen.
	LoaderBuiltin = "loadgen"
	// LoaderWrk is wrk (Debian's package), to cross-check the built-in
	// generator against the tool the design's reference numbers used.
	LoaderWrk = "wrk"
)

// runWrk runs wrk against http://addr/path and turns its report into a
// loadgen.Result. wrk measures whole seconds; the warm-up is a separate,
// discarded run. In mode Bulk the body bytes are the bytes wrk read
// ("N requests in T, X read", headers included: about 150 bytes per
// 1 MiB response), counted by wrk as they arrive.
func runWrk(ctx context.Context, addr, path string, mode loadgen.Mode, conns int, duration, warmup time.Duration) (*loadgen.Result, error) {
	path, err := exec.LookPath("wrk")
	if err != nil {
		return nil, fmt.Errorf("wrk not found: install it with scripts/install-deps.sh (Debian package wrk): %w", err)
	}
	threads := min(runtime.NumCPU(), conns)
	args := func(d time.Duration) []string {
		secs := max(1, int(math.Ceil(d.Seconds())))
		a := []string{"--latency", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", strconv.Itoa(secs) + "s", "--timeout", "5s"}
		if mode == loadgen.Close {
			a = append(a, "-H", "Connection: close")
		}
		return append(a, "http://"+addr+path)
	}
	if warmup > 0 {
		if out, err := exec.CommandContext(ctx, path, args(warmup)...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("wrk warm-up: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	out, err := exec.CommandContext(ctx, path, args(duration)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("wrk: %w: %s", err, strings.TrimSpace(string(out)))
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return nil, fmt.Errorf("wrk report: %w\n%s", err, out)
	}
	res.Addr, res.Mode, res.Conns = addr, mode, conns
	if mode == loadgen.Close {
		res.ConnRate, res.Connections = res.RPS, res.Requests
	}
	if mode == loadgen.Bulk {
		n, err := wrkBytesRead(string(out))
		if err != nil {
			return nil, fmt.Errorf("wrk report: %w\n%s", err, out)
		}
		res.BodyBytes = n
		if res.Duration > 0 {
			res.Gbps = float64(n) * 8 / res.Duration.Seconds() / 1e9
		}
	}
	return res, nil
}

// wrkBytesRead reads the total of "68845 requests in 4.00s, 10.11MB
// read": wrk prints bytes in binary units (KB = 1024 B) with two
// decimals.
func wrkBytesRead(out string) (uint64, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 6 || f[1] != "requests" || f[2] != "in" || f[5] != "read" {
			continue
		}
		v := f[4]
		scale := 1.0
		for i, u := range []string{"KB", "MB", "GB", "TB"} {
			if num, ok := strings.CutSuffix(v, u); ok {
				v, scale = num, math.Pow(1024, float64(i+1))
				break
			}
		}
		v = strings.TrimSuffix(v, "B")
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || x < 0 {
			return 0, fmt.Errorf("bytes read %q: not a size like 10.11MB", f[4])
		}
		return uint64(x * scale), nil
	}
	return 0, errors.New("no \"N requests in T, X read\" line")
}

// parseWrk reads wrk's --latency report.
func parseWrk(out string) (*loadgen.Result, error) {
	res := &loadgen.Result{}
	var haveRPS, haveP50 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "Latency" && len(f) >= 4:
			// "Latency 1.2ms 3.4ms 56.7ms 90%": avg, stdev, max.
			res.Mean, _ = parseWrkDuration(f[1])
			res.Max, _ = parseWrkDuration(f[3])
		case len(f) == 2 && (f[0] == "50%" || f[0] == "90%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return nil, err
			}
			switch f[0] {
			case "50%":
				res.P50, haveP50 = d, true
			case "90%":
				res.P90 = d
			case "99%":
				res.P99 = d
			}
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			// "68845 requests in 4.00s, 10.11MB read"
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("requests %q: %w", f[0], err)
			}
			res.Requests = n
			d, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return nil, err
			}
			res.Duration = d
		case len(f) >= 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, fmt.Errorf("Requests/sec %q: %w", f[1], err)
			}
			res.RPS, haveRPS = v, true
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			// "Socket errors: connect 0, read 12, write 0, timeout 0"
			kinds := map[string]uint64{}
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseUint(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("socket errors %q: %w", sc.Text(), err)
				}
				if n > 0 {
					kinds[f[i]] += n
					res.Errors += n
				}
			}
			if len(kinds) > 0 {
				res.ErrorKinds = kinds
			}
		case len(f) >= 4 && f[0] == "Non-2xx":
			n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if err == nil && n > 0 {
				if res.ErrorKinds == nil {
					res.ErrorKinds = map[string]uint64{}
				}
				res.ErrorKinds["status"] += n
				res.Errors += n
			}
		}
	}
	if !haveRPS || !haveP50 {
		return nil, errors.New("no Requests/sec or latency distribution (was wrk run with --latency?)")
	}
	return res, nil
}

// parseWrkDuration parses wrk's "850.00us", "1.23ms", "4.00s", "2.00m".
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				break
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("unknown wrk duration %q", s)
}
