package objects

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzAnswerSequence feeds the client a sequence of answers, one per
// request, on whatever connections it keeps, and checks which answer it
// takes for which request. The input is up to four answers separated by NUL;
// the upstream writes answer i, bytes after it and all, when it reads the
// i-th request, on any connection.
//
// Two checks. Every answer the client returns for request i is the answer
// its script says request i got: the first final answer in chunk i (interim
// 1xx skipped, as RFC 9110 asks), never bytes left over from an earlier one.
// And while every chunk so far is one clean answer, the client agrees with
// http.Transport on each. (Not beyond: with bytes after an answer, the
// transport's own view depends on whether its read loop sees them before
// the next request is written.)
func FuzzAnswerSequence(f *testing.F) {
	ok := func(id int, online bool) string {
		body := fmt.Sprintf(`{"id":%d,"online":%v}`, id, online)
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	for _, seed := range [][]string{
		{ok(1, true), ok(2, false), ok(3, true)},
		{ok(1, false) + ok(2, true), ok(2, false)}, // an unsolicited answer after the first
		{"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(1, true), ok(2, true)},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" + ok(1, true)},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", ok(2, true)},
		{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", ok(2, true)},
		{"HTTP/1.1 200 OK\r\n\r\nuntil close", ok(2, true)},
		{"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n", ok(2, true)},
		{"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", ok(2, true)},
		{"HTTP/1.1 204 No Content\r\n\r\n", ok(2, true)},
		{"garbage", ok(2, true)},
		{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", ok(2, true)},
	} {
		f.Add([]byte(joinNUL(seed)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		script := bytes.Split(data, []byte{0})
		script = script[:min(4, len(script))]
		refs := make([]reference, len(script))
		for i, chunk := range script {
			refs[i] = parseReference(chunk)
		}

		ours := runScript(t, script, refs, func(base string) (fetcher, func()) {
			u, _ := url.Parse(base)
			p := newPool(u, 1)
			return func(id int) (int, []byte, error) {
					ans, err := p.get(context.Background(), time.Now().Add(2*time.Second), "/objects/", int64(id))
					return ans.status, ans.body, err
				}, func() {
					for cn := p.take(); cn != nil; cn = p.take() {
						cn.nc.Close()
					}
				}
		})
		theirs := runScript(t, script, refs, func(base string) (fetcher, func()) {
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
			c := &http.Client{Transport: tr, Timeout: 2 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			return func(id int) (int, []byte, error) {
				resp, err := c.Get(fmt.Sprintf("%s/objects/%d", base, id))
				if err != nil {
					return 0, nil, err
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
				return resp.StatusCode, body, err
			}, tr.CloseIdleConnections
		})

		clean := true
		for i, ref := range refs {
			got := ours[i]
			if got.err == nil && (!ref.ok || got.status != ref.status || !bytes.Equal(got.body, ref.body)) {
				t.Fatalf("request %d got status %d body %q; its answer (chunk %q) is %+v", i, got.status, got.body, script[i], ref)
			}
			clean = clean && ref.clean
			if !clean {
				continue
			}
			want := theirs[i]
			if (got.err == nil) != (want.err == nil) || (got.err == nil && (got.status != want.status || !bytes.Equal(got.body, want.body))) {
				t.Fatalf("request %d, chunk %q:\nours:          status %d body %q err %v\nhttp.Transport: status %d body %q err %v",
					i, script[i], got.status, got.body, got.err, want.status, want.body, want.err)
			}
		}
	})
}

func joinNUL(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(x)
	}
	return b.String()
}

// reference is what a chunk answers, by net/http's parser alone: the first
// final answer's status and body (ok), whether it is all the chunk holds
// and keeps the connection open (clean: the case where clients must agree),
// and whether the upstream must close after writing it, because the answer
// ends only with the connection or does not parse.
type reference struct {
	ok, clean, closeAfter bool
	status                int
	body                  []byte
}

func parseReference(chunk []byte) reference {
	br := bufio.NewReader(bytes.NewReader(chunk))
	for range max1xx + 1 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return reference{closeAfter: true}
		}
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode == http.StatusSwitchingProtocols || len(body) > maxBody {
			return reference{closeAfter: true}
		}
		clean := br.Buffered() == 0 && !resp.Close
		return reference{ok: true, clean: clean, closeAfter: resp.Close, status: resp.StatusCode, body: body}
	}
	return reference{closeAfter: true}
}

// fetcher asks for one ID and returns the status and body it got.
type fetcher func(id int) (int, []byte, error)

type result struct {
	status int
	body   []byte
	err    error
}

// scriptServer is one upstream for every run of the fuzz target in a
// process (a listener per run would use up the ephemeral ports): a request
// for ID i gets chunk i of the current script, on any connection and
// however often it is sent (a client resends a request whose pooled
// connection had died).
var scriptServer struct {
	once sync.Once
	addr string

	mu     sync.Mutex
	script [][]byte
	refs   []reference
	conns  map[net.Conn]bool
}

func startScriptServer(t *testing.T) string {
	s := &scriptServer
	s.once.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.addr, s.conns = ln.Addr().String(), map[net.Conn]bool{}
		go func() { // lives as long as the process, like the listener
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.mu.Lock()
				s.conns[c] = true
				s.mu.Unlock()
				go serveScript(c)
			}
		}()
	})
	return s.addr
}

func serveScript(c net.Conn) {
	s := &scriptServer
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/objects/"))
		s.mu.Lock()
		ok := err == nil && n >= 0 && n < len(s.script)
		var chunk []byte
		var closeAfter bool
		if ok {
			chunk, closeAfter = s.script[n], s.refs[n].closeAfter
		}
		s.mu.Unlock()
		if !ok {
			return
		}
		if _, err := c.Write(chunk); err != nil || closeAfter {
			return
		}
	}
}

// runScript serves script to the client newClient makes, which asks for
// IDs 0, 1, … in turn, and closes the client's connections (close) before
// the next run.
func runScript(t *testing.T, script [][]byte, refs []reference, newClient func(base string) (fetcher, func())) []result {
	addr := startScriptServer(t)
	s := &scriptServer
	s.mu.Lock()
	s.script, s.refs = script, refs
	s.mu.Unlock()
	fetch, closeClient := newClient("http://" + addr)
	out := make([]result, len(script))
	for i := range script {
		status, body, err := fetch(i)
		out[i] = result{status, body, err}
	}
	// The client closes first, so the ports wait out TIME_WAIT on its side,
	// where loopback may reuse them; then what the server still holds.
	closeClient()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return out
}
