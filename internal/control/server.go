package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Handler serves one op. The returned value is marshalled as the reply
// object (it should marshal to a JSON object); a non-nil error becomes
// {"error": err.Error()}. Handlers run on the connection's goroutine and
// may be called concurrently for different connections.
type Handler func(ctx context.Context, req *Request) (any, error)

// StreamHandler serves an op whose answer is more than one line (a
// capture's frames, say). It owns the connection once the request line is
// read: r holds what the client sends after it (EOF when the client
// half-closes or hangs up), w is the connection; the handler writes its
// own lines, the first of which should be a reply object or an
// {"error":...} line as for any op. The server closes the connection
// when it returns. It should return when ctx is done (the server also
// closes the connection on Close). Read deadlines are cleared first.
type StreamHandler func(ctx context.Context, req *Request, r *bufio.Reader, w io.Writer) error

// ConnHandler takes over a connection whose first byte is not the start
// of a JSON request (for example the shim's binary attach, "FSSA..."):
// first holds the bytes the server has already read from c. It owns c from
// then on and should return when ctx is done (the server also closes c on
// Close).
type ConnHandler func(ctx context.Context, c net.Conn, first []byte) error

// Server serves the control protocol on any number of listeners.
//
// Lock order: mu guards handlers, listeners, conns and closed; it is never
// held while calling a handler or doing I/O.
type Server struct {
	// Logger receives per-connection errors at debug level and
	// listener errors at error level. If nil, slog.Default().
	Logger *slog.Logger
	// IdleTimeout closes a connection that sends nothing for this long.
	// If 0, connections may stay idle forever (a daemon's clients, such
	// as the shim, keep them open).
	IdleTimeout time.Duration
	// HelloTimeout closes a connection that has not sent its first
	// request line (or, for a ConnHandler's protocol, its first byte)
	// this long after it was accepted: a peer that connects and never
	// speaks does not hold a descriptor for good. If 0, IdleTimeout
	// applies from the start.
	HelloTimeout time.Duration
	// MaxConnsPerUID caps the connections one peer uid (SO_PEERCRED of a
	// unix socket) holds open at once, whatever they carry (requests, an
	// attached shim); a connection over the cap is closed as soon as it
	// is accepted. Root (uid 0) is never capped, so an operator's
	// `fsstack stats` answers while a user holds its maximum. If 0, no
	// cap.
	MaxConnsPerUID int

	mu        sync.Mutex
	handlers  map[string]Handler
	streams   map[string]StreamHandler
	other     ConnHandler
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]connInfo
	perUID    map[uint32]int // open connections per capped uid
	closed    bool
	wg        sync.WaitGroup
	ctx       context.Context
	cancel    context.CancelFunc

	overCap      atomic.Uint64 // connections closed for MaxConnsPerUID
	lastCapLogNs atomic.Int64  // when a refusal was last logged
}

// connInfo is what the server keeps per connection.
type connInfo struct {
	uid    uint32
	capped bool // counted in perUID
}

// ConnsRefused returns how many connections were closed at accept for
// MaxConnsPerUID.
func (s *Server) ConnsRefused() uint64 { return s.overCap.Load() }

// NewServer returns a Server with the built-in "ops" op, which lists the
// registered ops.
func NewServer(logger *slog.Logger) *Server {
	s := &Server{Logger: logger}
	s.Handle("ops", func(context.Context, *Request) (any, error) {
		return map[string][]string{"ops": s.Ops()}, nil
	})
	return s
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Handle registers h for op, replacing any earlier handler for it.
func (s *Server) Handle(op string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handlers == nil {
		s.handlers = make(map[string]Handler)
	}
	s.handlers[op] = h
	delete(s.streams, op)
}

// HandleStream registers h for op, replacing any earlier handler (plain
// or streaming) for it.
func (s *Server) HandleStream(op string, h StreamHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = make(map[string]StreamHandler)
	}
	s.streams[op] = h
	delete(s.handlers, op)
}

// HandleOther registers h for connections that do not start with a JSON
// object: the first non-blank byte of the connection decides, once. The
// unix socket is shared this way by the JSON control protocol and the
// shim's attach (docs/SHIM_PROTOCOL.md). Without such a handler those
// connections get an error reply like any malformed request.
func (s *Server) HandleOther(h ConnHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.other = h
}

// Ops returns the registered ops, sorted.
func (s *Server) Ops() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ops := make([]string, 0, len(s.handlers)+len(s.streams))
	for op := range s.handlers {
		ops = append(ops, op)
	}
	for op := range s.streams {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

func (s *Server) handler(op string) Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handlers[op]
}

// stream returns the streaming handler of the op on line, if it has one.
func (s *Server) stream(line []byte) (*Request, StreamHandler) {
	req, err := DecodeRequest(line)
	if err != nil {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return req, s.streams[req.Op]
}

// serveStream hands c to a streaming op's handler until it returns.
func (s *Server) serveStream(ctx context.Context, c net.Conn, req *Request, h StreamHandler, r *bufio.Reader, log *slog.Logger) {
	req.Conn = c
	c.SetReadDeadline(time.Time{})
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("control: stream handler panicked", "op", req.Op, "panic", p)
			c.Write(encodeError(fmt.Errorf("op %q failed: internal error", req.Op)))
		}
	}()
	if err := h(ctx, req, r, c); err != nil {
		log.Debug("control: stream ended", "op", req.Op, "err", err)
	}
}

func (s *Server) baseContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
	return s.ctx
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("control: server closed")

// Serve accepts connections on ln until ln fails or the server is closed.
// It always returns a non-nil error: ErrServerClosed after Close.
func (s *Server) Serve(ln net.Listener) error {
	ctx := s.baseContext()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of fds or similar: back off instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Error("control socket accept failed; retrying", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("control: accept: %w", err)
		}
		backoff = 0
		ok, over := s.track(c)
		if over {
			continue // closed; accept the next one at once
		}
		if !ok {
			c.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(ctx, c)
		}()
	}
}

// track records c. It reports ok false when the server is closed, and
// over true when c's uid already holds MaxConnsPerUID connections (c is
// then closed here).
func (s *Server) track(c net.Conn) (ok, over bool) {
	info := connInfo{}
	if uc, isUnix := c.(*net.UnixConn); isUnix && s.MaxConnsPerUID > 0 {
		if cred, err := PeerCred(uc); err == nil && cred.UID != 0 {
			info = connInfo{uid: cred.UID, capped: true}
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, false
	}
	if info.capped {
		if s.perUID[info.uid] >= s.MaxConnsPerUID {
			s.mu.Unlock()
			// Counted before the close, so that whoever sees the close
			// also sees the count.
			s.refusedOverCap(info.uid)
			c.Close()
			return false, true
		}
		if s.perUID == nil {
			s.perUID = make(map[uint32]int)
		}
		s.perUID[info.uid]++
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]connInfo)
	}
	s.conns[c] = info
	s.mu.Unlock()
	return true, false
}

// refusedOverCap counts a connection closed for MaxConnsPerUID and logs
// it, at most once a second (a user at its cap may keep trying).
func (s *Server) refusedOverCap(uid uint32) {
	s.overCap.Add(1)
	now := time.Now().UnixNano()
	last := s.lastCapLogNs.Load()
	if now-last < int64(time.Second) || !s.lastCapLogNs.CompareAndSwap(last, now) {
		return
	}
	s.logger().Warn("control socket: uid holds the most connections allowed; closing new ones from it (raise --max-conns-per-uid if it is legitimate)",
		"uid", uid, "max", s.MaxConnsPerUID, "refused_total", s.overCap.Load())
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	if info, ok := s.conns[c]; ok && info.capped {
		if s.perUID[info.uid]--; s.perUID[info.uid] <= 0 {
			delete(s.perUID, info.uid)
		}
	}
	delete(s.conns, c)
	s.mu.Unlock()
}

// serveConn answers requests on c, one line at a time, until EOF, an I/O
// error, an over-long line or server shutdown.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	log := s.logger().With("peer", connPeer(c))
	r := bufio.NewReaderSize(c, 4096)
	w := bufio.NewWriter(c)
	s.mu.Lock()
	other := s.other
	s.mu.Unlock()
	// The first bytes must come within HelloTimeout (or IdleTimeout,
	// whichever is shorter); later requests within IdleTimeout.
	hello := s.HelloTimeout
	if hello <= 0 || (s.IdleTimeout > 0 && s.IdleTimeout < hello) {
		hello = s.IdleTimeout
	}
	if hello > 0 {
		c.SetReadDeadline(time.Now().Add(hello))
	}
	if other != nil {
		if first, ok := peekOther(r); ok {
			c.SetReadDeadline(time.Time{}) // the other protocol keeps its own time
			if err := other(ctx, c, first); err != nil {
				log.Debug("control: non-JSON connection ended", "err", err)
			}
			return
		}
	}
	for n := 0; ; n++ {
		switch {
		case n > 0 && s.IdleTimeout > 0:
			c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		case n > 0:
			c.SetReadDeadline(time.Time{})
		}
		line, tooLong, err := readLine(r, MaxLineBytes)
		if tooLong {
			w.Write(encodeError(fmt.Errorf("%w: request longer than %d bytes; closing connection", ErrBadRequest, MaxLineBytes)))
			w.Flush()
			return
		}
		if line != nil {
			if req, h := s.stream(line); h != nil {
				s.serveStream(ctx, c, req, h, r, log)
				return
			}
			reply := s.dispatch(ctx, c, line)
			if _, werr := w.Write(reply); werr == nil {
				werr = w.Flush()
				if werr != nil {
					log.Debug("control: write reply", "err", werr)
					return
				}
			} else {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("control: read request", "err", err)
			}
			return
		}
	}
}

// dispatch decodes one line and runs its handler, turning every failure
// (including a handler panic) into an error reply.
func (s *Server) dispatch(ctx context.Context, c net.Conn, line []byte) (reply []byte) {
	if len(trimSpace(line)) == 0 {
		return encodeError(fmt.Errorf("%w: empty line", ErrBadRequest))
	}
	req, err := DecodeRequest(line)
	if err != nil {
		return encodeError(err)
	}
	req.Conn = c
	h := s.handler(req.Op)
	if h == nil {
		return encodeError(fmt.Errorf("unknown op %q", req.Op))
	}
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("control: handler panicked", "op", req.Op, "panic", p)
			reply = encodeError(fmt.Errorf("op %q failed: internal error", req.Op))
		}
	}()
	v, err := h(ctx, req)
	if err != nil {
		return encodeError(err)
	}
	return encodeReply(v)
}

// peekOther waits for the connection's first byte and reports whether it
// does not start JSON ('{' or blank), returning everything buffered so far.
func peekOther(r *bufio.Reader) ([]byte, bool) {
	b, err := r.Peek(1)
	if err != nil || b[0] == '{' || b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n' {
		return nil, false
	}
	first, _ := r.Peek(r.Buffered())
	return append([]byte(nil), first...), true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// readLine returns the next line without its newline. At EOF it returns
// the final unterminated line (if any) together with io.EOF. If the line
// exceeds limit it returns tooLong.
func readLine(r *bufio.Reader, limit int) (line []byte, tooLong bool, err error) {
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			// No newline yet: the line with its newline would not fit.
			if len(line) >= limit {
				return nil, true, nil
			}
			continue
		}
		if len(line) > limit {
			return nil, true, nil
		}
		if err != nil {
			return line, false, err
		}
		return line[:len(line)-1], false, nil
	}
}

func connPeer(c net.Conn) string {
	if uc, ok := c.(*net.UnixConn); ok {
		if cred, err := PeerCred(uc); err == nil {
			return fmt.Sprintf("pid=%d uid=%d", cred.PID, cred.UID)
		}
	}
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "unix"
}

// Close stops every listener, closes every connection and waits for the
// connection goroutines to finish. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

// ErrDaemonRunning is returned by Listen when another process answers on
// the socket path or holds its lock.
var ErrDaemonRunning = errors.New("another daemon is answering on the control socket")

// Listener is a daemon's control socket. Close stops listening, removes
// the socket file and the lock file and releases the lock.
type Listener struct {
	*net.UnixListener
	lock *os.File // flock(LOCK_EX) on PATH.lock while the daemon runs
}

// Close closes the socket (removing its file), removes the lock file and
// releases the lock (lock_linux.go says why removing it is safe).
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	if l.lock != nil {
		err = errors.Join(err, unlockFile(l.lock))
		l.lock = nil
	}
	return err
}

// Listen creates the unix socket at path for a daemon. It creates the
// parent directory (0755) if needed and takes an exclusive lock on
// path+".lock", so two daemons starting at once cannot both claim the
// path. It refuses (ErrDaemonRunning) if the lock is held or something
// answers on the socket, removes a stale socket that nothing answers on,
// never removes anything that is not a socket, and chmods the socket to
// mode.
func Listen(path string, mode os.FileMode) (*Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket path %s exists and is not a socket; remove it or pass another --socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%w at %s; stop it first or pass another --socket", ErrDaemonRunning, path)
		}
		// Nobody answers: a socket left by a daemon that died.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod control socket: %w", err)
	}
	ok = true
	return &Listener{UnixListener: ln, lock: lock}, nil
}
