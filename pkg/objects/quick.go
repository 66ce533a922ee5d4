package objects

import (
	"bufio"
	"bytes"

	"callback/pkg/jsonscan"
)

// The two parsers here take the answers a well-behaved upstream sends,
// which is nearly all of them, at a fraction of the general parsers' cost:
// at thousands of lookups a second, http.ReadResponse and encoding/json were
// a sixth of the service's CPU (their header maps, textproto readers and
// reflection allocate on every answer). Each decides only what it is sure
// of and leaves everything else to the general parser, so no answer is read
// differently; FuzzQuickAnswer and FuzzQuickObject check that against
// net/http and encoding/json.

// quickAnswer reads an answer that is already whole in br's buffer and
// plainly framed: HTTP/1.1, a final status other than 204 and 304, exactly
// one Content-Length, no Transfer-Encoding, a Connection header (if any) of
// just "close" or "keep-alive", and nothing but token header names and
// printable values. It consumes the answer and reports ok. Otherwise it
// consumes nothing, and the caller hands br to http.ReadResponse.
func quickAnswer(br *bufio.Reader) (ans answer, keep, ok bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return answer{}, false, false
	}
	head := buf[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 200" and an optional reason phrase.
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return answer{}, false, false
	}
	status := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return answer{}, false, false
		}
		status = status*10 + int(c-'0')
	}
	if status < 200 || status == 204 || status == 304 || !printable(line[12:]) {
		return answer{}, false, false
	}

	length, closeConn := -1, false
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found || !token(name) || !printable(value) {
			return answer{}, false, false
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length >= 0 || len(value) == 0 || len(value) > 6 {
				return answer{}, false, false
			}
			length = 0
			for _, c := range value {
				if c < '0' || c > '9' {
					return answer{}, false, false
				}
				length = length*10 + int(c-'0')
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return answer{}, false, false
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				closeConn = true
			case !bytes.EqualFold(value, []byte("keep-alive")):
				return answer{}, false, false
			}
		case bytes.EqualFold(name, []byte("Retry-After")):
			if ans.retryAfter == "" {
				ans.retryAfter = string(value)
			}
		case bytes.EqualFold(name, []byte("Location")):
			if ans.location == "" {
				ans.location = string(value)
			}
		}
	}
	total := end + 4 + length
	if length < 0 || length > maxBody || total > len(buf) {
		return answer{}, false, false
	}
	ans.status = status
	ans.body = bytes.Clone(buf[end+4 : total]) // buf is reused by the next read
	_, _ = br.Discard(total)                   // cannot fail: total bytes are buffered
	return ans, !closeConn, true
}

// token reports whether b is a non-empty header field name of the letters,
// digits and '-' that real header names use (a subset of RFC 9110's token).
func token(b []byte) bool {
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return len(b) > 0
}

// printable reports whether b holds only visible ASCII, spaces and tabs.
func printable(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

// quickObject reads the body the upstream is specified to send,
// {"id":N,"online":B} or {"online":B,"id":N} with no white space inside and
// any after, N within int64. ok is false for anything else, which
// encoding/json then decodes.
func quickObject(b []byte) (id int64, online, ok bool) {
	var haveID, haveOnline bool
	b, ok = bytes.CutPrefix(b, []byte(`{`))
	for ok && !(haveID && haveOnline) {
		if haveID || haveOnline {
			if b, ok = bytes.CutPrefix(b, []byte(`,`)); !ok {
				break
			}
		}
		var rest []byte
		if rest, ok = bytes.CutPrefix(b, []byte(`"id":`)); ok && !haveID {
			var n int
			id, n, ok = jsonscan.Int(rest, 0)
			b, haveID = rest[n:], true
		} else if rest, ok = bytes.CutPrefix(b, []byte(`"online":`)); ok && !haveOnline {
			online, b, ok = quickBool(rest)
			haveOnline = true
		} else {
			ok = false
		}
	}
	if !ok {
		return 0, false, false
	}
	if b, ok = bytes.CutPrefix(b, []byte(`}`)); !ok || jsonscan.SkipSpace(b, 0) != len(b) {
		return 0, false, false
	}
	return id, online, true
}

func quickBool(b []byte) (bool, []byte, bool) {
	if rest, ok := bytes.CutPrefix(b, []byte("true")); ok {
		return true, rest, true
	}
	if rest, ok := bytes.CutPrefix(b, []byte("false")); ok {
		return false, rest, true
	}
	return false, nil, false
}
