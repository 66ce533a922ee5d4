package wal

import (
	"testing"
	"time"
)

// FuzzRecycledSegment: a segment written over a recycled file reads back
// exactly its own records, whatever the file held before and however the
// bytes from the end mark on are damaged: a former record never replays.
func FuzzRecycledSegment(f *testing.F) {
	f.Add([]byte{1, 2, 3, 200, 7}, []byte{9}, uint16(0), byte(0xff))
	f.Add([]byte{}, []byte{1, 2}, uint16(5), byte(0))
	f.Add(make([]byte, 64), []byte{}, uint16(300), byte(1))
	f.Fuzz(func(t *testing.T, former, fresh []byte, at uint16, b byte) {
		const before, now = 3, 7 // the file's former index, and its new one
		file := commit(nil, records(former), before)
		mine := records(fresh)
		recs := commit(nil, mine, now)
		if len(file) < len(recs) {
			file = append(file, make([]byte, len(recs)-len(file))...)
		}
		copy(file, recs)
		end := len(recs) - len(endMark)
		file[end+int(at)%(len(file)-end)] ^= b // damage from the end mark on
		var got []Record
		if _, err := readRecords(file, stamp(now), func(r Record) error { got = append(got, r); return nil }); err != nil {
			t.Fatal(err)
		}
		if !equal(got, mine) {
			t.Fatalf("read %d records, want %d: %v", len(got), len(mine), got)
		}
	})
}

// records makes a record of each byte: its receipt second, and as many IDs.
func records(seed []byte) []Record {
	var rs []Record
	for i, c := range seed {
		ids := make([]int64, int(c)%40)
		for j := range ids {
			ids[j] = int64(c)<<8 | int64(j)
		}
		rs = append(rs, Record{Received: time.Unix(int64(i), int64(c)), IDs: ids})
	}
	return rs
}

// commit frames rs as one commit of segment index would: stamped, then an
// end mark.
func commit(dst []byte, rs []Record, index uint64) []byte {
	start := len(dst)
	for _, r := range rs {
		dst = encode(dst, r)
	}
	restamp(dst[start:], stamp(index))
	return append(dst, endMark[:]...)
}
