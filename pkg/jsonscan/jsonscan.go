// Package jsonscan holds the two JSON primitives that the service's short
// parsers share: the callback body's ({"object_ids":[…]}) and the upstream
// answer's ({"id":N,"online":B}). Each short parser reads only the one shape
// it expects and hands anything else to encoding/json, so these need to
// agree with encoding/json only on what they accept.
package jsonscan

import "math"

// SkipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func SkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// Int reads a JSON integer at b[i:]: an optional minus, then 0 or a digit
// 1-9 followed by digits, and no fraction or exponent after it. It returns
// the value and the index after it, and reports false for anything else or
// a value outside int64.
func Int(b []byte, i int) (int64, int, bool) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	var u uint64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if u > (math.MaxUint64-9)/10 {
			return 0, i, false // far out of range; encoding/json decides the error
		}
		u = u*10 + uint64(b[i]-'0')
		i++
	}
	switch {
	case i == start, // no digits
		b[start] == '0' && i-start > 1,                            // a leading zero
		i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E'): // a fraction or exponent
		return 0, i, false
	case neg && u <= 1<<63:
		return -int64(u), i, true // -(1<<63) wraps to itself, which is right
	case !neg && u <= math.MaxInt64:
		return int64(u), i, true
	}
	return 0, i, false
}
