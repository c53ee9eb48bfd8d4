package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// ErrNoDaemon means nothing listens on the socket path (it does not exist,
// or nobody answers on it).
var ErrNoDaemon = errors.New("no daemon")

// NoDaemonError is returned by Dial when no daemon answers at Path.
type NoDaemonError struct {
	Path string
	Err  error
}

func (e *NoDaemonError) Error() string {
	return fmt.Sprintf("no daemon at %s (%v)", e.Path, e.Err)
}
func (e *NoDaemonError) Unwrap() []error { return []error{ErrNoDaemon, e.Err} }

// Client is one connection to a daemon. Calls are serialized: it is safe
// for concurrent use but runs one request at a time.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// Dial connects to the daemon at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, &NoDaemonError{Path: path, Err: err}
		}
		return nil, fmt.Errorf("connect to control socket %s: %w", path, err)
	}
	return NewClient(c), nil
}

// NewClient wraps an established connection.
func NewClient(c net.Conn) *Client {
	return &Client{conn: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call sends {"op": op, ...args} and decodes the reply into reply (which may
// be nil). args, if not nil, must marshal to a JSON object; its fields are
// merged beside "op". An {"error":...} reply is returned as *RemoteError.
func (c *Client) Call(ctx context.Context, op string, args any, reply any) error {
	line, err := encodeRequest(op, args)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
		defer c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	return c.roundTrip(ctx, op, line, reply)
}

// Stream sends a request for a streaming op (Server.HandleStream) and
// decodes its first reply line into reply (which may be nil), as Call
// does; read the lines that follow with ReadLine until io.EOF, and
// CloseWrite to ask the daemon to finish. ctx bounds the request and its
// first reply only; after an error the Client should be closed.
func (c *Client) Stream(ctx context.Context, op string, args any, reply any) error {
	return c.Call(ctx, op, args, reply)
}

// ReadLine returns the next line of a stream without its newline, io.EOF
// once the daemon has closed it.
func (c *Client) ReadLine() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	line, tooLong, err := readLine(c.r, MaxLineBytes)
	if tooLong {
		return nil, fmt.Errorf("read stream: line longer than %d bytes", MaxLineBytes)
	}
	if err != nil && len(line) > 0 && errors.Is(err, io.EOF) {
		return line, nil // a last line without its newline
	}
	return line, err
}

// SetReadDeadline bounds ReadLine.
func (c *Client) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// CloseWrite tells the daemon that the client sends nothing more (its
// stream handler reads EOF); the daemon's lines can still be read.
func (c *Client) CloseWrite() error {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.conn.Close()
}

func encodeRequest(op string, args any) ([]byte, error) {
	req := map[string]any{}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("encode %q request: %w", op, err)
		}
		if err := json.Unmarshal(b, &req); err != nil {
			return nil, fmt.Errorf("encode %q request: arguments must be a JSON object: %w", op, err)
		}
	}
	req["op"] = op
	line, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %q request: %w", op, err)
	}
	return append(line, '\n'), nil
}

// roundTrip writes line and decodes the reply line. c.mu is held.
func (c *Client) roundTrip(ctx context.Context, op string, line []byte, reply any) error {
	if _, err := c.conn.Write(line); err != nil {
		return fmt.Errorf("send %q request: %w", op, ctxErr(ctx, err))
	}
	resp, tooLong, err := readLine(c.r, MaxLineBytes)
	if tooLong {
		return fmt.Errorf("read %q reply: reply longer than %d bytes", op, MaxLineBytes)
	}
	if err != nil && len(resp) == 0 {
		return fmt.Errorf("read %q reply: %w", op, ctxErr(ctx, err))
	}
	var er struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(resp, &er); err != nil {
		return fmt.Errorf("decode %q reply: %w", op, err)
	}
	if er.Error != nil {
		return &RemoteError{Op: op, Msg: *er.Error}
	}
	if reply != nil {
		if err := json.Unmarshal(resp, reply); err != nil {
			return fmt.Errorf("decode %q reply: %w", op, err)
		}
	}
	return nil
}

// ctxErr reports an I/O error caused by ctx as ctx's error. The
// connection deadline equals ctx's, so its timer may fire first.
func ctxErr(ctx context.Context, err error) error {
	if dl, ok := ctx.Deadline(); ok && ctx.Err() == nil && !time.Now().Before(dl) {
		<-ctx.Done()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// Do dials path, makes one call and closes the connection.
func Do(ctx context.Context, path, op string, args, reply any) error {
	c, err := Dial(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Call(ctx, op, args, reply)
}
