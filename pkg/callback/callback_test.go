package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"callback/pkg/callback"
	"callback/pkg/ingest"
	"callback/pkg/logtest"
)

type fakeEnqueuer struct {
	EnqueueFunc func(ids []int64, received time.Time) error
}

func (f *fakeEnqueuer) Enqueue(_ context.Context, ids []int64, received time.Time) error {
	return f.EnqueueFunc(ids, received)
}

// enqueued is one call of Enqueue.
type enqueued struct {
	IDs      []int64
	Received time.Time
}

// idsBody returns {"object_ids":[1,2,...,n]} and the IDs in it.
func idsBody(n int) (string, []int64) {
	ids := make([]int64, n)
	var b strings.Builder
	b.WriteString(`{"object_ids":[`)
	for i := range ids {
		ids[i] = int64(i + 1)
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, ids[i])
	}
	b.WriteString(`]}`)
	return b.String(), ids
}

// checkErrorBody asserts the {"error":"..."} answer every refusal carries and
// returns its message.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if got, want := rec.Header().Get("Content-Type"), "application/json"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	var body struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body %q: %v, want {\"error\":\"...\"}", rec.Body.String(), err)
	}
	if body.Error == "" {
		t.Errorf("error message is empty in %q, want a reason", rec.Body.String())
	}
	return body.Error
}

func TestHandler(t *testing.T) {
	const (
		msgEmpty     = "empty body"
		msgNotObject = "must be a JSON object"
		msgNoIDs     = "object_ids is required"
		msgBadID     = "integers in int64 range"
		msgTrailing  = "unexpected data after"
		msgInvalid   = "invalid JSON"
		msgTooBig    = "body larger than"
		msgBusy      = "retry later"
		msgMethod    = "method not allowed"
	)
	body5000, ids5000 := idsBody(5000)
	// Over the limit, yet each part valid: the decoder must stop at the cap.
	hugeIDs := `{"object_ids":[` + strings.Repeat("1,", callback.MaxBodyBytes/2) + `1]}`
	// A valid object with the excess hidden after it, where a decoder that
	// stops after one value would never look.
	hiddenTail := `{"object_ids":[1]}` + strings.Repeat(" ", callback.MaxBodyBytes+1)
	// Exactly at the limit is still fine.
	atLimit := `{"object_ids":[7]}`
	atLimit += strings.Repeat(" ", callback.MaxBodyBytes-len(atLimit))

	tests := []struct {
		name       string
		method     string // default POST
		body       string
		enqErr     error
		wantStatus int
		wantIDs    []int64 // nil: Enqueue must not be called
		wantMsg    string  // substring of the error message, for refusals
	}{
		{name: "valid", body: `{"object_ids":[1,2,3]}`, wantStatus: 202, wantIDs: []int64{1, 2, 3}},
		{name: "order-and-duplicates-kept", body: `{"object_ids":[3,1,3,2,1]}`, wantStatus: 202, wantIDs: []int64{3, 1, 3, 2, 1}},
		// The handler passes the empty list on; Pipeline.Enqueue treats it as a no-op.
		{name: "empty-list", body: `{"object_ids":[]}`, wantStatus: 202, wantIDs: []int64{}},
		{name: "id-zero", body: `{"object_ids":[0]}`, wantStatus: 202, wantIDs: []int64{0}},
		{name: "negative-ids", body: `{"object_ids":[-1,-42]}`, wantStatus: 202, wantIDs: []int64{-1, -42}},
		{name: "minus-zero", body: `{"object_ids":[-0]}`, wantStatus: 202, wantIDs: []int64{0}},
		{name: "int64-extremes", body: `{"object_ids":[9223372036854775807,-9223372036854775808]}`,
			wantStatus: 202, wantIDs: []int64{9223372036854775807, -9223372036854775808}},
		{name: "5000-ids", body: body5000, wantStatus: 202, wantIDs: ids5000},
		{name: "unknown-keys-ignored", body: `{"sender":"x","object_ids":[5],"meta":{"a":[1,{}]}}`, wantStatus: 202, wantIDs: []int64{5}},
		{name: "surrounding-whitespace", body: " \n\t{ \"object_ids\" : [ 1 , 2 ] }\r\n ", wantStatus: 202, wantIDs: []int64{1, 2}},
		// encoding/json matches keys case-insensitively and lets the last duplicate win.
		{name: "key-case-insensitive", body: `{"OBJECT_IDS":[9]}`, wantStatus: 202, wantIDs: []int64{9}},
		{name: "duplicate-key-last-wins", body: `{"object_ids":[1,2],"object_ids":[3]}`, wantStatus: 202, wantIDs: []int64{3}},
		{name: "body-at-limit", body: atLimit, wantStatus: 202, wantIDs: []int64{7}},

		{name: "malformed-json", body: `{"object_ids":[1,}`, wantStatus: 400, wantMsg: msgInvalid},
		{name: "empty-body", body: "", wantStatus: 400, wantMsg: msgEmpty},
		{name: "whitespace-body", body: " \n ", wantStatus: 400, wantMsg: msgEmpty},
		{name: "null", body: `null`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "empty-array", body: `[]`, wantStatus: 400, wantMsg: msgNotObject},
		{name: "bare-array", body: `[1,2]`, wantStatus: 400, wantMsg: msgNotObject},
		{name: "string", body: `"x"`, wantStatus: 400, wantMsg: msgNotObject},
		{name: "number", body: `12`, wantStatus: 400, wantMsg: msgNotObject},
		{name: "missing-object-ids", body: `{}`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "misspelled-key", body: `{"object_id":[1]}`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "object-ids-null", body: `{"object_ids":null}`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "duplicate-key-last-null", body: `{"object_ids":[1],"object_ids":null}`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "object-ids-string", body: `{"object_ids":"1,2"}`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "object-ids-object", body: `{"object_ids":{}}`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "object-ids-number", body: `{"object_ids":1}`, wantStatus: 400, wantMsg: msgNoIDs},
		{name: "id-null", body: `{"object_ids":[null]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-null-after-valid", body: `{"object_ids":[1,null]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-fraction", body: `{"object_ids":[1.5]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-float-integral", body: `{"object_ids":[1.0]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-exponent", body: `{"object_ids":[1e3]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-exponent-upper", body: `{"object_ids":[1E3]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-string", body: `{"object_ids":["1"]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-bool", body: `{"object_ids":[true]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-nested-array", body: `{"object_ids":[[1]]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-object", body: `{"object_ids":[{}]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-above-int64", body: `{"object_ids":[9223372036854775808]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-below-int64", body: `{"object_ids":[-9223372036854775809]}`, wantStatus: 400, wantMsg: msgBadID},
		{name: "id-leading-zero", body: `{"object_ids":[01]}`, wantStatus: 400, wantMsg: msgInvalid},
		{name: "id-plus-sign", body: `{"object_ids":[+1]}`, wantStatus: 400, wantMsg: msgInvalid},
		{name: "trailing-garbage", body: `{"object_ids":[1]} x`, wantStatus: 400, wantMsg: msgTrailing},
		{name: "trailing-bracket", body: `{"object_ids":[1]}]`, wantStatus: 400, wantMsg: msgTrailing},
		{name: "two-objects", body: `{"object_ids":[1]}{"object_ids":[2]}`, wantStatus: 400, wantMsg: msgTrailing},
		{name: "truncated", body: `{"object_ids":[1,2`, wantStatus: 400, wantMsg: msgInvalid},
		{name: "truncated-object", body: `{"object_ids":[1,2]`, wantStatus: 400, wantMsg: msgInvalid},

		{name: "too-large", body: hugeIDs, wantStatus: 413, wantMsg: msgTooBig},
		{name: "too-large-after-valid-object", body: hiddenTail, wantStatus: 413, wantMsg: msgTooBig},

		{name: "get", method: http.MethodGet, wantStatus: 405, wantMsg: msgMethod},
		{name: "put", method: http.MethodPut, body: `{"object_ids":[1]}`, wantStatus: 405, wantMsg: msgMethod},
		{name: "delete", method: http.MethodDelete, wantStatus: 405, wantMsg: msgMethod},

		{name: "queue-full", body: `{"object_ids":[1,2]}`, enqErr: ingest.ErrFull,
			wantStatus: 503, wantIDs: []int64{1, 2}, wantMsg: msgBusy},
		{name: "queue-closed", body: `{"object_ids":[1]}`, enqErr: ingest.ErrClosed,
			wantStatus: 503, wantIDs: []int64{1}, wantMsg: msgBusy},
		{name: "queue-full-wrapped", body: `{"object_ids":[1]}`, enqErr: fmt.Errorf("pipeline: %w", ingest.ErrFull),
			wantStatus: 503, wantIDs: []int64{1}, wantMsg: msgBusy},
		{name: "queue-closed-wrapped", body: `{"object_ids":[1]}`, enqErr: fmt.Errorf("pipeline: %w", ingest.ErrClosed),
			wantStatus: 503, wantIDs: []int64{1}, wantMsg: msgBusy},
		{name: "enqueue-other-error", body: `{"object_ids":[1]}`, enqErr: errors.New("boom"),
			wantStatus: 503, wantIDs: []int64{1}, wantMsg: msgBusy},
	}
	received := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls []enqueued
			q := &fakeEnqueuer{EnqueueFunc: func(ids []int64, received time.Time) error {
				calls = append(calls, enqueued{ids, received})
				return tt.enqErr
			}}
			h := callback.NewHandler(logtest.Discard(), q)
			h.NowFunc = func() time.Time { return received }

			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/callback", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %.200q)", rec.Code, tt.wantStatus, rec.Body.String())
			}

			switch {
			case tt.wantIDs == nil && len(calls) > 0:
				t.Errorf("Enqueue called %d times with %v, want no call", len(calls), calls[0].IDs)
			case tt.wantIDs != nil && len(calls) != 1:
				t.Errorf("Enqueue called %d times, want 1", len(calls))
			case tt.wantIDs != nil:
				if got := calls[0].IDs; !slices.Equal(got, tt.wantIDs) {
					t.Errorf("enqueued IDs = %v, want %v", got, tt.wantIDs)
				}
				if got := calls[0].Received; !got.Equal(received) {
					t.Errorf("Received = %v, want %v", got, received)
				}
			}

			if tt.wantStatus == http.StatusAccepted {
				if rec.Body.Len() != 0 {
					t.Errorf("202 body = %q, want empty", rec.Body.String())
				}
				return
			}
			if msg := checkErrorBody(t, rec); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("error = %q, want it to contain %q", msg, tt.wantMsg)
			}
			if tt.wantStatus == http.StatusMethodNotAllowed {
				if got, want := rec.Header().Get("Allow"), http.MethodPost; got != want {
					t.Errorf("Allow = %q, want %q", got, want)
				}
			}
			if tt.wantStatus == http.StatusServiceUnavailable {
				if got := rec.Header().Get("Retry-After"); got == "" {
					t.Errorf("Retry-After = %q, want a delay", got)
				}
			}
		})
	}
}

// TestHandlerTooLargeNeverAccepted sends a valid object followed by more
// than MaxBodyBytes of padding: whatever the status, it must not be 2xx and
// nothing may be enqueued.
func TestHandlerTooLargeNeverAccepted(t *testing.T) {
	tests := []struct {
		name string
		pad  string
	}{
		{name: "spaces", pad: " "},
		{name: "newlines", pad: "\n"},
		{name: "garbage", pad: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			enqueued := false
			h := callback.NewHandler(logtest.Discard(), &fakeEnqueuer{EnqueueFunc: func([]int64, time.Time) error {
				enqueued = true
				return nil
			}})
			body := `{"object_ids":[1]}` + strings.Repeat(tt.pad, 2*callback.MaxBodyBytes)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/callback", strings.NewReader(body)))
			if rec.Code != http.StatusRequestEntityTooLarge && rec.Code != http.StatusBadRequest {
				t.Errorf("status = %d, want %d or %d", rec.Code, http.StatusRequestEntityTooLarge, http.StatusBadRequest)
			}
			if enqueued {
				t.Error("Enqueue was called, want no call")
			}
		})
	}
}

func TestHandlerLogsEnqueueFailure(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantLog string
	}{
		{name: "full-is-warn", err: ingest.ErrFull, wantLog: `level=WARN msg="callback refused"`},
		{name: "other-is-error", err: errors.New("boom"), wantLog: `level=ERROR msg="enqueue callback"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			h := callback.NewHandler(log, &fakeEnqueuer{EnqueueFunc: func([]int64, time.Time) error { return tt.err }})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/callback", strings.NewReader(`{"object_ids":[1,2]}`)))
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("status = %d, want %d", rec.Code, http.StatusServiceUnavailable)
			}
			got := buf.String()
			for _, want := range []string{tt.wantLog, "component=callback", "count=2", tt.err.Error()} {
				if !strings.Contains(got, want) {
					t.Errorf("log = %q, want it to contain %q", got, want)
				}
			}
		})
	}
}

func TestNewHandlerNilDependency(t *testing.T) {
	tests := []struct {
		name string
		log  *slog.Logger
		q    callback.Enqueuer
	}{
		{name: "nil-logger", q: &fakeEnqueuer{}},
		{name: "nil-enqueuer", log: logtest.Discard()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil {
					t.Error("recover() = nil, want a panic")
				}
			}()
			callback.NewHandler(tt.log, tt.q)
		})
	}
}

func TestRecover(t *testing.T) {
	t.Run("panic-is-500", func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		h := callback.Recover(log, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("kaboom")
		}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/callback", nil))

		if got, want := rec.Code, http.StatusInternalServerError; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
		if msg, want := checkErrorBody(t, rec), "internal error"; msg != want {
			t.Errorf("error = %q, want %q", msg, want)
		}
		if strings.Contains(rec.Body.String(), "kaboom") {
			t.Errorf("body = %q, want the panic value kept out of the response", rec.Body.String())
		}
		for _, want := range []string{"level=ERROR", `msg="handler panicked"`, "panic=kaboom", "path=/callback", "method=POST", "stack="} {
			if !strings.Contains(buf.String(), want) {
				t.Errorf("log = %q, want it to contain %q", buf.String(), want)
			}
		}
	})

	t.Run("abort-handler-repanics", func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		h := callback.Recover(log, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic(http.ErrAbortHandler)
		}))
		rec := httptest.NewRecorder()
		got := func() (r any) {
			defer func() { r = recover() }()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			return nil
		}()
		if got != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", got)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("body = %q, want nothing written", rec.Body.String())
		}
		if buf.Len() != 0 {
			t.Errorf("log = %q, want nothing logged", buf.String())
		}
	})

	t.Run("no-panic-passes-through", func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		h := callback.Recover(log, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			_, _ = io.WriteString(w, "tea")
		}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if got, want := rec.Code, http.StatusTeapot; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
		if got, want := rec.Body.String(), "tea"; got != want {
			t.Errorf("body = %q, want %q", got, want)
		}
		if buf.Len() != 0 {
			t.Errorf("log = %q, want nothing logged", buf.String())
		}
	})
}

// BenchmarkHandler measures the server-side cost of one 200-ID callback.
func BenchmarkHandler(b *testing.B) {
	body, _ := idsBody(200)
	h := callback.NewHandler(logtest.Discard(), &fakeEnqueuer{EnqueueFunc: func([]int64, time.Time) error { return nil }})
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/callback", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("status = %d, want %d", rec.Code, http.StatusAccepted)
		}
	}
}

// failingReader yields a prefix of a body and then err, as a connection
// that times out or is reset mid-body does.
type failingReader struct {
	prefix io.Reader
	err    error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if n, _ := r.prefix.Read(p); n > 0 {
		return n, nil
	}
	return 0, r.err
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "read tcp 127.0.0.1:9090->127.0.0.1:5555: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestHandlerBodyReadErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
	}{
		{"timeout", timeoutError{}, http.StatusRequestTimeout},
		{"reset", errors.New("read tcp 127.0.0.1:9090->127.0.0.1:5555: connection reset by peer"), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			h := callback.NewHandler(logtest.Discard(), &fakeEnqueuer{EnqueueFunc: func([]int64, time.Time) error {
				called = true
				return nil
			}})
			body := &failingReader{prefix: strings.NewReader(`{"object_ids":[1`), err: tt.err}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/callback", body))
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			msg := checkErrorBody(t, rec)
			if strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "JSON") {
				t.Errorf("error = %q, want a fixed message that neither blames the JSON nor names sockets", msg)
			}
			if called {
				t.Error("enqueued a body that was never fully read")
			}
		})
	}
}
