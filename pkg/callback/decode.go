package callback

import (
	"bytes"
	"io"
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
