package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"callback/pkg/jsonscan"
)

// The fast path. At saturation the handler's cost is nearly all decoding,
// and almost every body is the plain shape every sender writes:
//
//	{"object_ids":[1,2,3]}
//
// with any JSON white space around the tokens. parsePlain reads exactly that
// shape, and nothing else: one key spelled "object_ids" (no escapes, no
// other case), integers without fraction or exponent within int64. For such
// a body encoding/json gives the same IDs, so the answer is the same.
// Anything else, every error included, goes to decodeJSON, which is
// encoding/json itself, so every error keeps its status and message. The
// fuzz targets check both halves against encoding/json.

// decode reads the whole body, then parses it: the fast path when it can,
// encoding/json otherwise. Its errors are *httpError, each with the answer it
// calls for.
func decode(r io.Reader) ([]int64, error) {
	buf := bufPool.Get().(*bytes.Buffer)
	defer putBuf(buf)
	buf.Reset()
	_, err := buf.ReadFrom(r)
	if err != nil {
		// Replay what arrived, then the error, through encoding/json: a
		// syntax error before the failure still wins, exactly as when the
		// decoder read the body itself.
		return decodeJSON(io.MultiReader(bytes.NewReader(buf.Bytes()), errReader{err}))
	}
	if ids, ok := parsePlain(buf.Bytes()); ok {
		return ids, nil
	}
	return decodeJSON(bytes.NewReader(buf.Bytes()))
}

// bufPool recycles body buffers; a 200-ID body is ~1-5 KiB.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putBuf returns buf to the pool unless a huge body grew it: holding 1 MiB
// per pooled buffer for a rare sender is not worth it.
func putBuf(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		bufPool.Put(buf)
	}
}

// errReader fails every read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// parsePlain parses b if it is the plain shape, and reports whether it was.
// It never fails: ok false only means "ask encoding/json".
func parsePlain(b []byte) (ids []int64, ok bool) {
	const key = `"object_ids"`
	i := jsonscan.SkipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = jsonscan.SkipSpace(b, i+1)
	if !bytes.HasPrefix(b[i:], []byte(key)) {
		return nil, false
	}
	i = jsonscan.SkipSpace(b, i+len(key))
	if i >= len(b) || b[i] != ':' {
		return nil, false
	}
	i = jsonscan.SkipSpace(b, i+1)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i = jsonscan.SkipSpace(b, i+1)
	// At most one ID per comma, plus one: sized once, never grown.
	ids = make([]int64, 0, bytes.Count(b[i:], []byte{','})+1)
	if i < len(b) && b[i] == ']' {
		i++
	} else {
		for {
			var id int64
			if id, i, ok = jsonscan.Int(b, i); !ok {
				return nil, false
			}
			ids = append(ids, id)
			i = jsonscan.SkipSpace(b, i)
			if i >= len(b) {
				return nil, false
			}
			if b[i] == ']' {
				i++
				break
			}
			if b[i] != ',' {
				return nil, false
			}
			i = jsonscan.SkipSpace(b, i+1)
		}
	}
	i = jsonscan.SkipSpace(b, i)
	if i >= len(b) || b[i] != '}' {
		return nil, false
	}
	if jsonscan.SkipSpace(b, i+1) != len(b) {
		return nil, false
	}
	return ids, true
}

// Messages of the 400 answers: short and fixed.
var (
	errEmpty     = errors.New("empty body")
	errNotObject = errors.New(`body must be a JSON object like {"object_ids":[1,2,3]}`)
	errNoIDs     = errors.New("object_ids is required and must be an array")
	errBadID     = errors.New("object_ids must hold integers in int64 range")
	errTrailing  = errors.New("unexpected data after the JSON object")
)

// badRequest is a 400 for a body that was read but is not a valid callback.
func badRequest(msg string, cause error) error {
	return &httpError{status: http.StatusBadRequest, msg: msg, log: "bad callback", level: slog.LevelDebug, err: cause}
}

// decodeJSON reads one JSON object with an "object_ids" array of integers
// with encoding/json: the reference for what a body means, and the path for
// every body the fast path (parsePlain) does not take. Unknown keys are
// ignored so that senders may add fields.
func decodeJSON(r io.Reader) ([]int64, error) {
	var req struct {
		ObjectIDs *[]objectID `json:"object_ids"`
	}
	body := &bodyReader{r: r}
	dec := json.NewDecoder(body)
	if err := dec.Decode(&req); err != nil {
		if body.err != nil {
			return nil, readError(body.err)
		}
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return nil, badRequest(errEmpty.Error(), err)
		case errors.Is(err, errBadID):
			return nil, badRequest(errBadID.Error(), err)
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return nil, badRequest(errNotObject.Error(), err)
		case errors.As(err, &typeErr):
			return nil, badRequest(errNoIDs.Error(), err)
		default:
			return nil, badRequest("invalid JSON: "+err.Error(), err)
		}
	}
	// Exactly one value: anything but white space after it is an error, and
	// reading to EOF also catches a body over the limit hidden after it.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if body.err != nil {
			return nil, readError(body.err)
		}
		return nil, badRequest(errTrailing.Error(), err)
	}
	if req.ObjectIDs == nil {
		return nil, badRequest(errNoIDs.Error(), errNoIDs)
	}
	ids := make([]int64, len(*req.ObjectIDs))
	for i, id := range *req.ObjectIDs {
		ids[i] = int64(id)
	}
	return ids, nil
}

// bodyReader remembers the first error of the body itself (not io.EOF), so
// that a failed decode can tell a body that could not be read from one whose
// JSON is wrong: encoding/json returns both kinds alike.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// readError is the answer for a body that could not be read: too large
// (413), not sent in time (408), or cut off (400). The client never sees the
// cause, which names sockets.
func readError(err error) error {
	var (
		tooBig  *http.MaxBytesError
		timeout timeoutError
	)
	switch {
	case errors.As(err, &tooBig):
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body larger than %d bytes", MaxBodyBytes),
			log: "bad callback", level: slog.LevelDebug, err: err}
	case errors.As(err, &timeout) && timeout.Timeout():
		return &httpError{status: http.StatusRequestTimeout, msg: "body not received in time",
			log: "bad callback", level: slog.LevelWarn, err: err}
	default:
		return &httpError{status: http.StatusBadRequest, msg: "could not read the body",
			log: "bad callback", level: slog.LevelWarn, err: err}
	}
}

// objectID accepts only a JSON integer in int64 range. encoding/json alone
// would turn null into 0 (a real object), and a json.Number would let
// "12", 1.5 and 1e3 through.
type objectID int64

func (id *objectID) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return errBadID
	}
	n, err := strconv.ParseInt(string(b), 10, 64) // refuses 1.5, 1.0, 1e3 and overflow
	if err != nil {
		return errBadID
	}
	*id = objectID(n)
	return nil
}
