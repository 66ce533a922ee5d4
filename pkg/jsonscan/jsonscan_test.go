package jsonscan

import (
	"encoding/json"
	"testing"
)

// Int accepts exactly the integers encoding/json reads into an int64
// (which takes no fraction or exponent).
func TestInt(t *testing.T) {
	for _, s := range []string{
		"0", "-0", "7", "-12", "9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "-9223372036854775809", "99999999999999999999999",
		"01", "-", "", "1.5", "1e3", "1E3", "+1", "x",
	} {
		var want int64
		wantOK := json.Unmarshal([]byte(s), &want) == nil
		got, end, ok := Int([]byte(s), 0)
		if ok != wantOK || (ok && (got != want || end != len(s))) {
			t.Errorf("Int(%q) = %d, %d, %v; encoding/json: %d, %v", s, got, end, ok, want, wantOK)
		}
	}
}

func TestSkipSpace(t *testing.T) {
	if got := SkipSpace([]byte("a \t\r\n b"), 1); got != 6 {
		t.Errorf("SkipSpace = %d, want 6", got)
	}
	if got := SkipSpace([]byte("  "), 0); got != 2 {
		t.Errorf("SkipSpace at the end = %d, want 2", got)
	}
}
