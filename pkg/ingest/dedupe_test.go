package ingest

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestDedupe(t *testing.T) {
	tests := []struct {
		name     string
		in, want []int64
	}{
		{"empty", []int64{}, []int64{}},
		{"first-of-each-kept-in-order", []int64{3, 1, 3, 2, 1, 0, 0}, []int64{3, 1, 2, 0}},
		{"extremes", []int64{-1 << 63, 1<<63 - 1, -1 << 63, 0, -1}, []int64{-1 << 63, 1<<63 - 1, 0, -1}},
	}
	for _, tt := range tests {
		if got := dedupe(slices.Clone(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: dedupe(%v) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
	// Against a map, on sizes around the switch to sorting, with IDs that
	// collide in the table.
	for _, n := range []int{1, 200, dedupeMax, dedupeMax + 1, 3000} {
		in := make([]int64, n)
		for i := range in {
			in[i] = rand.Int64N(int64(n)) << 54 // same low bits: every hash collides on its multiplier's input
		}
		got := dedupe(slices.Clone(in))
		want := map[int64]bool{}
		for _, id := range in {
			want[id] = true
		}
		seen := map[int64]bool{}
		for _, id := range got {
			if seen[id] || !want[id] {
				t.Fatalf("n=%d: dedupe returned %d twice or not in the input", n, id)
			}
			seen[id] = true
		}
		if len(seen) != len(want) {
			t.Fatalf("n=%d: dedupe kept %d distinct ids, want %d", n, len(seen), len(want))
		}
	}
}
