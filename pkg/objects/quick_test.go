package objects

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// FuzzQuickAnswer checks quickAnswer against http.ReadResponse: whatever it
// takes, net/http must read the same way (status, Retry-After, body, whether
// the connection stays open, and where the next answer begins).
func FuzzQuickAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{\"id\":7,\"online\":true}\n",
		"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 301 Moved Permanently\r\nLocation: https://x/objects/1\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Length:  5 \r\nX: a\tb\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: Keep-Alive\r\n\r\nabc",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 4096 {
			return
		}
		br := bufio.NewReaderSize(bytes.NewReader(raw), 8192)
		if _, err := br.Peek(1); err != nil {
			return
		}
		ans, keep, ok := quickAnswer(br)
		if !ok {
			if br.Buffered() != len(raw) {
				t.Fatalf("quickAnswer declined but consumed %d bytes", len(raw)-br.Buffered())
			}
			return
		}
		ref := bufio.NewReaderSize(bytes.NewReader(raw), 8192)
		resp, err := http.ReadResponse(ref, nil)
		if err != nil {
			t.Fatalf("quickAnswer took %q; http.ReadResponse: %v", raw, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("quickAnswer took %q; reading the body: %v", raw, err)
		}
		if resp.StatusCode != ans.status || resp.Header.Get("Retry-After") != ans.retryAfter || resp.Header.Get("Location") != ans.location ||
			!bytes.Equal(body, ans.body) || resp.Close == keep || ref.Buffered() != br.Buffered() {
			t.Fatalf("%q:\nquick:    status %d, retry-after %q, body %q, keep %v, %d left\nnet/http: status %d, retry-after %q, body %q, close %v, %d left",
				raw, ans.status, ans.retryAfter, ans.body, keep, br.Buffered(),
				resp.StatusCode, resp.Header.Get("Retry-After"), body, resp.Close, ref.Buffered())
		}
	})
}

// FuzzQuickObject checks quickObject against the encoding/json decoding it
// stands in for.
func FuzzQuickObject(f *testing.F) {
	for _, s := range []string{
		`{"id":7,"online":true}`, `{"online":false,"id":-12}` + "\n", `{"id":0,"online":true} `,
		`{"id":01,"online":true}`, `{"id":-0,"online":true}`, `{"id":123456789012345678,"online":false}`,
		`{"id":1234567890123456789,"online":false}`, `{"id":1,"online":true}x`, `{}`, `{"id":1.5,"online":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, online, ok := quickObject(b)
		if !ok {
			return
		}
		var ref struct {
			ID     *int64 `json:"id"`
			Online *bool  `json:"online"`
		}
		if err := json.Unmarshal(b, &ref); err != nil {
			t.Fatalf("quickObject took %q; encoding/json: %v", b, err)
		}
		if ref.ID == nil || ref.Online == nil || *ref.ID != id || *ref.Online != online {
			t.Fatalf("%q: quick (%d, %v), encoding/json (%v, %v)", b, id, online, ref.ID, ref.Online)
		}
	})
}
