package wal

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
	"slices"
	"time"
)

// A record is framed as
//
//	length  uint32, little-endian: the payload's length
//	crc     uint32, little-endian: CRC32C (Castagnoli) of length and payload,
//	        XORed with the segment's stamp (see stamp)
//	payload receipt time (int64 Unix ns), ID count (uvarint), IDs (varints)
//
// as Prometheus's WAL and Vector's disk buffers frame theirs: encode writes
// it, decodeAt reads it back. Each commit's records are followed by an end
// mark, headerLen zero bytes, which the next commit overwrites: a length of
// 0 is no record, so the reader knows where a segment's records end even
// when the file goes on with a former life's bytes (recycled segments,
// writer.go).
const (
	headerLen  = 8
	maxPayload = 16 << 20 // a record claiming more is corrupt: a body is at most 1 MiB
)

// endMark follows the last record of every commit.
var endMark [headerLen]byte

// stamp is what a segment's records XOR their checksum with: its mark (its
// index+1), so that a record left in a recycled file by the segment it was
// before fails the checksum of the segment it is now. The stamp is never 0
// (until 2^32 segments, 270 years of 2 s ones), so a record of a log written
// before segments were recycled, whose checksum is bare, is told apart too.
func stamp(index uint64) uint32 { return uint32(index + 1) }

// restamp XORs the checksum of every record framed in recs with x: stamping
// a batch for its segment, or taking the stamp off again. encode leaves a
// record unstamped, because the handler that encodes it does not know the
// segment the writer will put it in.
func restamp(recs []byte, x uint32) {
	for off := 0; off+headerLen <= len(recs); {
		n := binary.LittleEndian.Uint32(recs[off:])
		crc := recs[off+4 : off+headerLen]
		binary.LittleEndian.PutUint32(crc, binary.LittleEndian.Uint32(crc)^x)
		off += headerLen + int(n)
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// summary is what reading a segment found.
type summary struct {
	oldest  time.Time // the oldest receipt
	corrupt int       // damaged stretches skipped
	end     int       // the offset just after the last intact record
	marked  bool      // an end mark follows it: what comes after is no record of this segment's
	legacy  bool      // some records are unstamped: written before segments were recycled
}

// readRecords calls fn (if set) for each intact record in data, a segment
// whose records carry stamp st, up to the end mark. A record that fails its
// checksum is skipped and reading resumes at the next offset where an intact
// record starts; bytes after the last intact record and no end mark are left
// for the caller to judge (a torn write, or damage).
func readRecords(data []byte, st uint32, fn func(Record) error) (summary, error) {
	var sum summary
	for off := 0; off < len(data); {
		if len(data)-off >= headerLen && [headerLen]byte(data[off:off+headerLen]) == endMark {
			sum.marked = true
			break
		}
		rec, n, legacy, ok := decodeAt(data, off, st)
		if !ok {
			next := resync(data, off+1, st)
			if next < 0 {
				break
			}
			sum.corrupt++
			off = next
			continue
		}
		sum.legacy = sum.legacy || legacy
		sum.oldest = earlier(sum.oldest, rec.Received)
		if fn != nil {
			if err := fn(rec); err != nil {
				return sum, err
			}
		}
		off += n
		sum.end = off
	}
	return sum, nil
}

// decodeAt decodes the record at data[off:], in a segment whose stamp is st,
// reporting its framed length, whether it is unstamped (legacy), and whether
// it is intact.
func decodeAt(data []byte, off int, st uint32) (rec Record, n int, legacy, ok bool) {
	if len(data)-off < headerLen {
		return Record{}, 0, false, false
	}
	size := binary.LittleEndian.Uint32(data[off:])
	if size > maxPayload || int(size) > len(data)-off-headerLen {
		return Record{}, 0, false, false
	}
	payload := data[off+headerLen : off+headerLen+int(size)]
	crc := crc32.Update(crc32.Checksum(data[off:off+4], castagnoli), castagnoli, payload)
	switch binary.LittleEndian.Uint32(data[off+4:]) {
	case crc ^ st:
	case crc:
		legacy = true
	default:
		return Record{}, 0, false, false
	}
	rec, ok = decodePayload(payload)
	return rec, headerLen + int(size), legacy, ok
}

// resync returns the first offset at or after from where an intact record
// starts, or -1. It only runs past damage, so its cost does not matter.
func resync(data []byte, from int, st uint32) int {
	for off := from; off+headerLen <= len(data); off++ {
		if _, _, _, ok := decodeAt(data, off, st); ok {
			return off
		}
	}
	return -1
}

// encode frames a record, unstamped (see restamp), growing dst once.
func encode(dst []byte, r Record) []byte {
	start := len(dst)
	size := headerLen + 8 + varintLen(uint64(len(r.IDs)))
	for _, id := range r.IDs {
		size += varintLen(uint64(id<<1) ^ uint64(id>>63)) // zigzag, as AppendVarint
	}
	dst = slices.Grow(dst, size)
	var frame [headerLen]byte // filled in below, once the payload's length is known
	dst = append(dst, frame[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Received.UnixNano()))
	dst = binary.AppendUvarint(dst, uint64(len(r.IDs)))
	for _, id := range r.IDs {
		dst = binary.AppendVarint(dst, id)
	}
	n := len(dst) - start - headerLen
	binary.LittleEndian.PutUint32(dst[start:], uint32(n))
	crc := crc32.Update(crc32.Checksum(dst[start:start+4], castagnoli), castagnoli, dst[start+headerLen:])
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst
}

// varintLen is the length of x as a uvarint.
func varintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

func decodePayload(p []byte) (Record, bool) {
	if len(p) < 9 {
		return Record{}, false
	}
	r := Record{Received: time.Unix(0, int64(binary.LittleEndian.Uint64(p)))}
	p = p[8:]
	count, n := binary.Uvarint(p)
	if n <= 0 || count > uint64(len(p)) {
		return Record{}, false
	}
	p = p[n:]
	r.IDs = make([]int64, 0, count)
	for range count {
		id, n := binary.Varint(p)
		if n <= 0 {
			return Record{}, false
		}
		r.IDs = append(r.IDs, id)
		p = p[n:]
	}
	return r, len(p) == 0
}
