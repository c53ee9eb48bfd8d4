package control

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeRequest checks DecodeRequest's invariants: it never panics, it
// either fails with ErrBadRequest or returns a request whose op is a
// non-empty string that round-trips through the raw object.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"stats"}`, `{"op":"version"}`, `{"op":"x","a":[1,2,{"b":null}]}`,
		`{"op":`, `[]`, ``, "\xff", `{"op":1}`, `{"op":"\u0000"}`, `{"op":"a","op":"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := DecodeRequest(line)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			if req != nil {
				t.Fatal("non-nil request with error")
			}
			return
		}
		if req.Op == "" {
			t.Fatal("empty op accepted")
		}
		var back struct {
			Op string `json:"op"`
		}
		if err := json.Unmarshal(req.Raw, &back); err != nil || back.Op != req.Op {
			t.Fatalf("raw %q does not round-trip op %q: %v", req.Raw, req.Op, err)
		}
		// A reply to it must always be one well-formed line.
		out := encodeReply(map[string]string{"op": req.Op})
		if out[len(out)-1] != '\n' || !json.Valid(out[:len(out)-1]) {
			t.Fatalf("bad reply line %q", out)
		}
	})
}
