package ingest

import "slices"

// dedupe drops repeated IDs from ids in place, keeping the first of each, and
// returns the shortened slice. Bodies repeat IDs heavily (a customer's body,
// 0 to 199 IDs drawn from 100, holds ~57 distinct), and dropping repeats on the sender's goroutine spares
// the single dispatcher goroutine most of its map lookups at saturation.
//
// Up to dedupeMax IDs it uses an open-addressing set on the stack (no
// allocation, a few ns an ID); a larger body is sorted instead.
func dedupe(ids []int64) []int64 {
	if len(ids) > dedupeMax {
		slices.Sort(ids)
		return slices.Compact(ids)
	}
	var (
		slots [2 * dedupeMax]int64 // at most half full, so probes stay short
		used  [2 * dedupeMax]bool
		n     int
	)
	const mask = 1<<dedupeBits - 1
	for _, id := range ids {
		h := uint64(id) * 0x9E3779B97F4A7C15 >> (64 - dedupeBits) // Fibonacci hashing: the top bits
		for used[h] && slots[h] != id {
			h = (h + 1) & mask
		}
		if used[h] {
			continue // a repeat
		}
		used[h], slots[h] = true, id
		ids[n] = id
		n++
	}
	return ids[:n]
}

// The set has 1<<dedupeBits slots, and takes bodies of up to half that.
const (
	dedupeBits = 10
	dedupeMax  = 1 << (dedupeBits - 1)
)
