// Package control is the fsstack daemon's control socket: a unix stream
// socket carrying line-delimited JSON.
//
//	client                                   daemon (Server)
//	  {"op":"stats"}\n           ------>      registry["stats"](req)
//	  {"shards":[...]}\n         <------      reply object, or
//	                                          {"error":"..."}\n
//
// Each request is one JSON object on one line with at least an "op" string;
// each reply is one JSON object on one line. Requests on one connection are
// answered in order. A reply that failed carries an "error" string and no
// other meaning. Malformed input gets an error reply; the connection stays
// open unless the line is longer than MaxLineBytes (then the server replies
// and closes it, because it cannot find the next line boundary cheaply).
//
// A streaming op (Server.HandleStream, e.g. "capture") answers with its
// first reply line and then lines of its own until it ends; the client
// half-closes its side (Client.CloseWrite) to ask it to finish, and reads
// until EOF.
//
// The registry (Server.Handle) lets other parts of the daemon add their
// own ops, and Server.HandleOther hands connections that do not start with
// '{' (the LD_PRELOAD shim's binary attach, "FSSA...") to another protocol
// on the same socket.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
)

// MaxLineBytes bounds one request or reply line, newline included.
const MaxLineBytes = 1 << 20

// DefaultSocketPath is where `fsstack up` listens unless told otherwise.
const DefaultSocketPath = "/run/fsstack/fsstack.sock"

// Request is one decoded request line.
type Request struct {
	// Op names the operation, e.g. "stats".
	Op string `json:"op"`
	// Raw is the whole request object as received, for handlers that take
	// arguments beside "op" (decode it with Request.Decode).
	Raw json.RawMessage `json:"-"`
	// Conn is the connection the request came on (nil outside a Server),
	// for handlers that check the peer with PeerCred or RequireUID.
	Conn net.Conn `json:"-"`
}

// Decode unmarshals the whole request object into v, so that a handler can
// read its own fields.
func (r *Request) Decode(v any) error {
	if err := json.Unmarshal(r.Raw, v); err != nil {
		return fmt.Errorf("decode %q request: %w", r.Op, err)
	}
	return nil
}

// ErrBadRequest is wrapped by every error DecodeRequest returns.
var ErrBadRequest = errors.New("bad request")

// DecodeRequest parses one request line (without or with its trailing
// newline). It never panics; every failure wraps ErrBadRequest.
func DecodeRequest(line []byte) (*Request, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, fmt.Errorf("%w: empty line", ErrBadRequest)
	}
	if len(line) > MaxLineBytes {
		return nil, fmt.Errorf("%w: request longer than %d bytes", ErrBadRequest, MaxLineBytes)
	}
	if line[0] != '{' {
		return nil, fmt.Errorf("%w: request must be a JSON object like {\"op\":\"stats\"}", ErrBadRequest)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %v", ErrBadRequest, err)
	}
	rawOp, ok := fields["op"]
	if !ok {
		return nil, fmt.Errorf("%w: missing \"op\"", ErrBadRequest)
	}
	var op string
	if err := json.Unmarshal(rawOp, &op); err != nil {
		return nil, fmt.Errorf("%w: \"op\" must be a string", ErrBadRequest)
	}
	if op == "" {
		return nil, fmt.Errorf("%w: empty \"op\"", ErrBadRequest)
	}
	return &Request{Op: op, Raw: append(json.RawMessage(nil), line...)}, nil
}

// errorReply is the shape of every failed reply.
type errorReply struct {
	Error string `json:"error"`
}

// encodeReply marshals v as one reply line. A value that cannot be
// marshalled becomes an error reply rather than a broken line.
func encodeReply(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(errorReply{Error: "encode reply: " + err.Error()})
	}
	if len(b) == 0 || b[0] != '{' {
		// Replies are objects by protocol; wrap anything else.
		b, _ = json.Marshal(map[string]json.RawMessage{"result": b})
	}
	return append(b, '\n')
}

func encodeError(err error) []byte {
	b, _ := json.Marshal(errorReply{Error: err.Error()})
	return append(b, '\n')
}

// RemoteError is an {"error":"..."} reply from the daemon.
type RemoteError struct {
	Op  string
	Msg string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("daemon refused %q: %s", e.Op, e.Msg)
}

// IsUnknownOp reports whether err is the daemon's answer to an op it does
// not serve (an older daemon, say).
func IsUnknownOp(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && strings.HasPrefix(re.Msg, "unknown op ")
}
