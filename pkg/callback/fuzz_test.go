package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fuzz targets check decode and the handler against encoding/json, the
// reference for what a JSON body means. Their seeds run as ordinary tests in
// `go test ./...`; CI also fuzzes FuzzHandler for 30 s (.ci/run). Locally:
//
//	go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 60s ./pkg/callback
//	go test -run '^$' -fuzz '^FuzzHandler$' -fuzztime 60s ./pkg/callback
//
// A crasher lands in testdata/fuzz/<target>/ and stays there as a regression case.

// fuzzSeeds is every shape of body the fuzzers start from: valid ones and each
// kind of malformed one the handler must refuse.
func fuzzSeeds() []string {
	var ids5000 strings.Builder
	ids5000.WriteString(`{"object_ids":[`)
	for i := range 5000 {
		if i > 0 {
			ids5000.WriteByte(',')
		}
		ids5000.WriteString(strconv.Itoa(i*7919 - 10_000_000))
	}
	ids5000.WriteString(`]}`)

	nest := func(n int, opening, closing string) string {
		return strings.Repeat(opening, n) + strings.Repeat(closing, n)
	}
	return []string{
		// Valid.
		`{"object_ids":[1,2,3]}`,
		`{"object_ids":[]}`,
		`{"object_ids":[0]}`,
		`{"object_ids":[-1,-42]}`,
		`{"object_ids":[-0]}`,
		fmt.Sprintf(`{"object_ids":[%d,%d]}`, int64(math.MinInt64), int64(math.MaxInt64)),
		ids5000.String(),
		`{"object_ids":[3,1,3,2,1]}`,
		`{"sender":"x","object_ids":[5],"meta":{"a":[1,{}],"b":null}}`,
		`{"OBJECT_IDS":[9]}`,
		`{"object_ids":[1,2],"object_ids":[3]}`,
		" \n\t{ \"object_ids\" : [ 1 , 2 ] }\r\n ",
		"{\"object_ids\":[1],\"x\":\"\xff\"}", // invalid UTF-8 inside an ignored string

		// Malformed JSON, or not one JSON value.
		`{"object_ids":[1,}`,
		`{"object_ids":[1,2`,
		`{"object_ids":[1,2]`,
		``,
		" \n ",
		`{"object_ids":[1]} x`,
		`{"object_ids":[1]}]`,
		`{"object_ids":[1]}{"object_ids":[2]}`,
		`{"object_ids":[1]}` + "\n" + `{"object_ids":[2]}`,
		"\ufeff" + `{"object_ids":[1]}`,
		"\xff" + `{"object_ids":[1]}`,
		`{"object_ids":[1]}` + "\xff",
		"{\"object_ids\":[1]}\x00",
		"\u00a0" + `{"object_ids":[1]}`, // no-break space is not JSON white space
		"\v" + `{"object_ids":[1]}`,
		"\f" + `{"object_ids":[1]}`,
		`{'object_ids':[1]}`,
		`{object_ids:[1]}`,

		// Valid JSON, wrong shape.
		`null`,
		`[]`,
		`[1,2]`,
		`"x"`,
		`12`,
		`true`,
		`{}`,
		`{"object_id":[1]}`,
		`{"object_ids":null}`,
		`{"object_ids":[1],"object_ids":null}`,
		`{"object_ids":"1,2"}`,
		`{"object_ids":{}}`,
		`{"object_ids":1}`,
		`{"object_ids":[null]}`,
		`{"object_ids":[1,null]}`,
		`{"object_ids":["1"]}`,
		`{"object_ids":["x"]}`,
		`{"object_ids":[1.5]}`,
		`{"object_ids":[1.0]}`,
		`{"object_ids":[-0.0]}`,
		`{"object_ids":[1e3]}`,
		`{"object_ids":[1E3]}`,
		`{"object_ids":[1e-3]}`,
		`{"object_ids":[true]}`,
		`{"object_ids":[false]}`,
		`{"object_ids":[[1]]}`,
		`{"object_ids":[{}]}`,
		`{"object_ids":[9223372036854775808]}`,
		`{"object_ids":[-9223372036854775809]}`,
		`{"object_ids":[` + strings.Repeat("9", 100) + `]}`,
		`{"object_ids":[-` + strings.Repeat("9", 100) + `]}`,
		`{"object_ids":[01]}`,
		`{"object_ids":[-01]}`,
		`{"object_ids":[+1]}`,
		`{"object_ids":[0x10]}`,
		`{"object_ids":[NaN]}`,
		`{"object_ids":[Infinity]}`,

		// Deep nesting: encoding/json stops at 10,000 levels.
		nest(10_000, "[", "]"),
		nest(10_001, "[", "]"),
		strings.Repeat("[", 10_000),
		`{"object_ids":` + nest(10_000, "[", "]") + `}`,
		`{"object_ids":[1],"x":` + nest(9_000, `{"a":`, "}") + `}`,
		nest(10_001, `{"a":`, "}"),
	}
}

// fuzzEnqueuer records every callback it is given and accepts it.
type fuzzEnqueuer struct {
	calls []fuzzCall
}

type fuzzCall struct{ IDs []int64 }

func (f *fuzzEnqueuer) Enqueue(_ context.Context, ids []int64, _ time.Time) error {
	f.calls = append(f.calls, fuzzCall{ids})
	return nil
}

// referenceIDs decodes body with encoding/json alone, numbers kept as text,
// with the same key matching as decode (case-insensitive, last key wins).
func referenceIDs(body []byte) ([]json.Number, error) {
	var ref struct {
		ObjectIDs []json.Number `json:"object_ids"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&ref); err != nil {
		return nil, err
	}
	return ref.ObjectIDs, nil
}

// checkDecoded holds the properties of a body that decode accepted: it is
// valid JSON, its object_ids as encoding/json reads them are exactly ids
// (integers, no fractions or exponents), and ids survive a round trip.
func checkDecoded(t *testing.T, body []byte, ids []int64) {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("decode accepted %q, which json.Valid refuses", body)
	}
	ref, err := referenceIDs(body)
	if err != nil {
		t.Fatalf("decode accepted %q as %v, encoding/json refuses it: %v", body, ids, err)
	}
	if len(ref) != len(ids) {
		t.Fatalf("decode(%q) = %d ids, encoding/json reads %d: %v vs %v", body, len(ids), len(ref), ids, ref)
	}
	for i, id := range ids {
		want := string(ref[i])
		if want == "-0" {
			want = "0" // the one integer spelling that FormatInt does not reproduce
		}
		if got := strconv.FormatInt(id, 10); got != want {
			t.Fatalf("decode(%q): id %d = %s, input has %s", body, i, got, ref[i])
		}
	}

	again, err := json.Marshal(struct {
		ObjectIDs []int64 `json:"object_ids"`
	}{ids})
	if err != nil {
		t.Fatalf("marshal %v: %v", ids, err)
	}
	round, err := decode(bytes.NewReader(again))
	if err != nil {
		t.Fatalf("decode(%s) after round trip: %v", again, err)
	}
	if !slices.Equal(round, ids) {
		t.Fatalf("round trip of %v = %v", ids, round)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ids, err := decode(bytes.NewReader(body)) // a panic fails the fuzz run by itself
		if err != nil {
			if ids != nil {
				t.Errorf("decode(%q) = %v with error %v, want no ids", body, ids, err)
			}
			if err.Error() == "" {
				t.Errorf("decode(%q) returned an error with no message", body)
			}
			return
		}
		if ids == nil {
			t.Fatalf("decode(%q) = nil, nil; want a non-nil slice (possibly empty)", body)
		}
		checkDecoded(t, body, ids)
	})
}

func FuzzHandler(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, body []byte) {
		// What the handler should conclude: decode behind the same byte cap.
		want, wantErr := decode(http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(bytes.NewReader(body)), MaxBodyBytes))

		q := &fuzzEnqueuer{}
		h := NewHandler(log, q)
		req := httptest.NewRequest(http.MethodPost, "/callback", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		switch {
		case wantErr != nil || !json.Valid(body):
			if rec.Code < 400 || rec.Code > 499 {
				t.Errorf("body %q: status = %d, want 4xx (decode: %v, json.Valid: %v)", body, rec.Code, wantErr, json.Valid(body))
			}
			if len(q.calls) != 0 {
				t.Errorf("body %q: Enqueue called with %v, want no call", body, q.calls[0].IDs)
			}
		default:
			if rec.Code != http.StatusAccepted {
				t.Errorf("body %q: status = %d, want %d (body %.200q)", body, rec.Code, http.StatusAccepted, rec.Body.String())
			}
			if len(q.calls) != 1 {
				t.Fatalf("body %q: Enqueue called %d times, want 1", body, len(q.calls))
			}
			if got := q.calls[0].IDs; !slices.Equal(got, want) {
				t.Errorf("body %q: enqueued %v, want %v", body, got, want)
			}
			if len(body) <= MaxBodyBytes {
				checkDecoded(t, body, q.calls[0].IDs)
			}
		}

		if rec.Code == http.StatusAccepted {
			if rec.Body.Len() != 0 {
				t.Errorf("202 body = %q, want empty", rec.Body.String())
			}
			return
		}
		if got := rec.Header().Get("Content-Type"); got != "application/json" {
			t.Errorf("status %d: Content-Type = %q, want application/json", rec.Code, got)
		}
		var answer struct {
			Error *string `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
			t.Fatalf("status %d: body %q is not JSON: %v", rec.Code, rec.Body.String(), err)
		}
		if answer.Error == nil || *answer.Error == "" {
			t.Errorf("status %d: body %q, want a non-empty \"error\" string", rec.Code, rec.Body.String())
		}
	})
}

// FuzzDecodeMatchesJSON is the differential check of the fast path: for any
// body, decode (fast path or not) and decodeJSON (encoding/json alone) give
// the same IDs, or the same error, status and message.
func FuzzDecodeMatchesJSON(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"object_ids":[-0,0,-9223372036854775808,9223372036854775807]}`,
		`{"object_ids":[9223372036854775808]}`, `{"object_ids":[-9223372036854775809]}`,
		`{"object_ids":[18446744073709551616]}`, `{"object_ids":[01]}`, `{"object_ids":[1.0]}`,
		`{"object_ids":[1e2]}`, `{"object_ids":[1,]}`, `{"object_ids":[,1]}`, `{"object_ids":[-]}`,
		`{"object_ids":[1 2]}`, `{"object_ids":[1]} x`, `{"object_ids":[1]}{}`, `{"object_ids":[1]`,
		`{"object_ids" :[ 1 ,2 ]}`, "\t{\r\n\"object_ids\":[]}\n", `{"object_ids":null}`,
		`{"object_ids":[1],"object_ids":[2]}`, `{"object_idſ":[1]}`, `{"Object_ids":[1]}`,
		`{"object_\u0069ds":[1]}`, `{"object_ids":[1]}` + "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := decode(bytes.NewReader(body))
		want, wantErr := decodeJSON(bytes.NewReader(body))
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("body %q: decode error %v, encoding/json error %v", body, gotErr, wantErr)
		}
		if gotErr != nil {
			if gotErr.Error() != wantErr.Error() {
				t.Fatalf("body %q: decode error %q, encoding/json error %q", body, gotErr, wantErr)
			}
			return
		}
		if !slices.Equal(got, want) {
			t.Fatalf("body %q: decode = %v, encoding/json = %v", body, got, want)
		}
	})
}
