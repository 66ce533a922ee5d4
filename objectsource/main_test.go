package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// callbackServer counts the posts it answers with 202.
func callbackServer(t *testing.T) (url string, posts *atomic.Int64) {
	t.Helper()
	posts = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/callback", posts
}

func TestRunMaxSends(t *testing.T) {
	target, posts := callbackServer(t)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-addr", "", "-target", target, "-interval", "1ms", "-initial-delay", "0", "-max-sends", "5"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if got := posts.Load(); got != 5 {
		t.Errorf("server got %d posts, want 5", got)
	}
	if got, want := stdout.String(), "sent=5 ok=5 non_2xx=0 errors=0 "; !strings.HasPrefix(got, want) {
		t.Errorf("stdout = %q, want prefix %q", got, want)
	}
	if got := stderr.String(); !strings.Contains(got, `msg="callback sent"`) || !strings.Contains(got, "status=202") {
		t.Errorf("log lacks the sends:\n%s", got)
	}
}

func TestRunDuration(t *testing.T) {
	target, posts := callbackServer(t)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-addr", "127.0.0.1:0", "-min-latency", "0", "-max-latency", "0",
		"-target", target, "-interval", "10ms", "-initial-delay", "0", "-duration", "200ms"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if posts.Load() == 0 {
		t.Errorf("server got no posts")
	}
	if got := stdout.String(); !strings.HasPrefix(got, "sent=") || !strings.HasSuffix(got, " lookups=0 lookup_errors=0 lookups_refused=0 max_in_flight=0\n") {
		t.Errorf("stdout = %q, want the sender's and the server's totals", got)
	}
}

func TestRunFlags(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		usage bool // want errUsage; else no error
	}{
		{name: "help", args: []string{"-h"}},
		{name: "unknown-flag", args: []string{"-nope"}, usage: true},
		{name: "nothing-to-do", args: []string{"-addr", "", "-target", ""}, usage: true},
		{name: "bad-error-rate", args: []string{"-error-rate", "2"}, usage: true},
		{name: "min-over-max-latency", args: []string{"-min-latency", "2s", "-max-latency", "1s"}, usage: true},
		{name: "no-senders", args: []string{"-senders", "0"}, usage: true},
		{name: "stray-argument", args: []string{"extra"}, usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			if got := errors.Is(err, errUsage); got != tt.usage || (!tt.usage && err != nil) {
				t.Errorf("run error = %v, want usage error %t", err, tt.usage)
			}
			if tt.name == "help" && !strings.Contains(stderr.String(), "-target URL") {
				t.Errorf("help lacks -target:\n%s", stderr.String())
			}
		})
	}
}
