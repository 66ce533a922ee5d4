package callback

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchBody returns a body of n IDs drawn like the customer's (0..99), or
// from a wide range when wide is set.
func benchBody(n int, wide bool) []byte {
	ids := make([]int64, n)
	for i := range ids {
		if wide {
			ids[i] = rand.Int64N(1 << 40)
		} else {
			ids[i] = rand.Int64N(100)
		}
	}
	b, _ := json.Marshal(struct {
		ObjectIDs []int64 `json:"object_ids"`
	}{ids})
	return b
}

// BenchmarkDecode compares decode with encoding/json decoding the same body
// into []int64 (the read+decode baseline's work), per body size.
func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{10, 200, 1000} {
		for _, wide := range []bool{false, true} {
			body := benchBody(n, wide)
			name := fmt.Sprintf("ids=%d/wide=%t", n, wide)
			b.Run(name+"/encoding-json", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					var req struct {
						ObjectIDs []int64 `json:"object_ids"`
					}
					if err := json.NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/decode", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					if _, err := decode(bytes.NewReader(body)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
