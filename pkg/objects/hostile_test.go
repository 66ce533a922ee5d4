package objects_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"callback/objectsource/sim"
	"callback/pkg/logtest"
	"callback/pkg/objects"
)

// startRaw serves respond on a listener of its own until the test ends.
func startRaw(t *testing.T, respond func(w io.Writer, id int64) bool) (addr string, u *sim.RawUpstream) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u = &sim.RawUpstream{Respond: respond}
	done := make(chan struct{})
	go func() { u.Serve(t.Context(), ln); close(done) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), u
}

// ok is a well-formed answer about id.
func ok(id int64, online bool) string {
	body := fmt.Sprintf(`{"id":%d,"online":%v}`, id, online)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// An answer no request asked for, sent after ID 10's, must not be read as
// the next request's answer: the connection it came on is closed, whether
// the answer came with the real one or later, while the connection was
// idle. (Before, object 11 was stored online on the strength of an answer
// about 11 that the upstream sent unasked, and the connection stayed one
// answer behind.)
func TestUnsolicitedAnswerIsNotTheNextOnesAnswer(t *testing.T) {
	for _, tt := range []struct {
		name  string
		delay time.Duration // before the unsolicited answer; 0: in the same write
	}{{"with-the-answer", 0}, {"while-idle", 20 * time.Millisecond}} {
		t.Run(tt.name, func(t *testing.T) {
			addr, u := startRaw(t, func(w io.Writer, id int64) bool {
				if id != 10 {
					_, err := io.WriteString(w, ok(id, false))
					return err == nil
				}
				if tt.delay == 0 {
					_, err := io.WriteString(w, ok(10, false)+ok(11, true))
					return err == nil
				}
				if _, err := io.WriteString(w, ok(10, false)); err != nil {
					return false
				}
				time.Sleep(tt.delay)
				_, err := io.WriteString(w, ok(11, true))
				return err == nil
			})
			c := objects.New("http://"+addr, 1, 5*time.Second, nil)
			if online, err := c.Online(t.Context(), 10); err != nil || online {
				t.Fatalf("object 10: online %v, err %v; want offline", online, err)
			}
			time.Sleep(2 * tt.delay) // the unsolicited answer has arrived
			if online, err := c.Online(t.Context(), 11); err != nil || online {
				t.Errorf("object 11: online %v, err %v; want offline, as the upstream answers when asked", online, err)
			}
			if n := u.Connections(); n != 2 {
				t.Errorf("%d connections, want 2: the one with the unsolicited answer closed", n)
			}
		})
	}
}

// Interim answers (103 Early Hints, an unasked-for 100 Continue) come
// before the final one and are skipped, as RFC 9110 §15.2 asks of a client;
// the connection stays in step. (Before, a 1xx was taken as the final
// answer, a permanent refusal: an online object was never written, and the
// real 200 was read as the next request's answer.)
func TestInterimAnswersAreSkipped(t *testing.T) {
	addr, u := startRaw(t, func(w io.Writer, id int64) bool {
		_, err := io.WriteString(w, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 100 Continue\r\n\r\n"+ok(id, id == 1))
		return err == nil
	})
	c := objects.New("http://"+addr, 1, 5*time.Second, nil)
	for _, id := range []int64{1, 2, 1} {
		online, err := c.Online(t.Context(), id)
		if err != nil || online != (id == 1) {
			t.Errorf("object %d: online %v, err %v; want online %v", id, online, err, id == 1)
		}
	}
	if n := u.Connections(); n != 1 {
		t.Errorf("%d connections, want 1: the connection stays in step", n)
	}
}

// An upstream that sends more interim answers than net/http allows gets
// an error, not an endless read.
func TestEndlessInterimAnswersFail(t *testing.T) {
	addr, _ := startRaw(t, func(w io.Writer, id int64) bool {
		for range 10 {
			if _, err := io.WriteString(w, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return false
			}
		}
		_, err := io.WriteString(w, ok(id, true))
		return err == nil
	})
	c := objects.New("http://"+addr, 1, 5*time.Second, nil)
	if _, err := c.Online(t.Context(), 1); err == nil || !strings.Contains(err.Error(), "interim") {
		t.Errorf("err = %v, want one about interim answers", err)
	}
}

// A status line or header that never ends is cut at a few KiB with an
// error, long before the request's timeout and without the memory. (Before,
// http.ReadResponse read it until the timeout: one lookup took the service
// from 14 MiB to 737 MiB in 10 s.)
func TestEndlessHeaderFailsFast(t *testing.T) {
	for name, start := range map[string]string{
		"one-line":   "HTTP/1.1 200 OK\r\nX-Endless: ",
		"many-lines": "HTTP/1.1 200 OK\r\n",
		"status":     "HTTP/1.1 200 ",
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := startRaw(t, func(w io.Writer, id int64) bool {
				if _, err := io.WriteString(w, start); err != nil {
					return false
				}
				chunk := []byte(strings.Repeat("a", 1<<10))
				if name == "many-lines" {
					chunk = []byte(strings.Repeat("X-A: b\r\n", 128))
				}
				for {
					if _, err := w.Write(chunk); err != nil {
						return false // the client gave up and closed
					}
				}
			})
			c := objects.New("http://"+addr, 1, 10*time.Second, nil)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := c.Online(t.Context(), 1)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), "header over") {
				t.Errorf("err = %v, want the header cut", err)
			}
			if took > 5*time.Second {
				t.Errorf("took %v: the header ran until the timeout", took)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Errorf("allocated %d bytes for one answer's header", alloc)
			}
		})
	}
}

// A redirect is not followed and not a permanent refusal: the lookup is
// retried, and the client logs the Location (once per redirectLogEvery) so
// the operator can point -src there. (Before, a 3xx was permanent: an
// upstream moved behind an http→https redirect lost every ID, silently.)
func TestRedirectIsRetriedAndLogged(t *testing.T) {
	addr, _ := startRaw(t, func(w io.Writer, id int64) bool {
		_, err := fmt.Fprintf(w, "HTTP/1.1 301 Moved Permanently\r\nLocation: https://new.example/objects/%d\r\nContent-Length: 0\r\n\r\n", id)
		return err == nil
	})
	log, logs := logtest.Text()
	c := objects.New("http://"+addr, 1, 5*time.Second, log)
	for id := range int64(3) {
		_, err := c.Online(t.Context(), id)
		var se *objects.StatusError
		if !errors.As(err, &se) || se.Permanent() || se.Code != 301 || se.Location != fmt.Sprintf("https://new.example/objects/%d", id) {
			t.Fatalf("err = %#v, want a retryable 301 with its Location", err)
		}
	}
	if n := strings.Count(logs.String(), "upstream redirects"); n != 1 || !strings.Contains(logs.String(), "https://new.example/objects/0") {
		t.Errorf("want the redirect logged once with its location:\n%s", logs)
	}
}

// An answer with data after its JSON object is an error, as encoding/json's
// Unmarshal has it. (Before, the fallback decoder read the first value and
// ignored the rest: {"id":5,"online":true}<html>… counted as online.)
func TestTrailingDataIsAnError(t *testing.T) {
	for _, body := range []string{`{"id":5,"online":true}<html>`, `{"id":5,"online":true}{"id":5,"online":false}`, `{"id": 5, "online": true} x`} {
		addr, _ := startRaw(t, func(w io.Writer, id int64) bool {
			_, err := fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			return err == nil
		})
		c := objects.New("http://"+addr, 1, 5*time.Second, nil)
		if online, err := c.Online(t.Context(), 5); err == nil {
			t.Errorf("%s: online %v, want an error", body, online)
		}
	}
}

// A user and password in the base URL go as Basic auth, as net/http's
// client sends them. (Before, they were dropped: every lookup of an
// upstream that asks for them got 401.)
func TestBasicAuthFromURL(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "cb" || pass != "p@ss:word" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"id":3,"online":true}`)
	})
	c := objects.New(strings.Replace(srv.URL, "http://", "http://cb:p%40ss%3Aword@", 1), 1, 5*time.Second, nil)
	if online, err := c.Online(t.Context(), 3); err != nil || !online {
		t.Errorf("online %v, err %v; want online", online, err)
	}
}
