package wal

import (
	"encoding/binary"
	"hash/crc32"
	"time"
)

// A record is framed as
//
//	length  uint32, little-endian: the payload's length
//	crc     uint32, little-endian: CRC32C (Castagnoli) of length and payload
//	payload receipt time (int64 Unix ns), ID count (uvarint), IDs (varints)
//
// as Prometheus's WAL and Vector's disk buffers frame theirs: encode writes
// it, decodeAt reads it back.
const (
	headerLen  = 8
	maxPayload = 16 << 20 // a record claiming more is corrupt: a body is at most 1 MiB
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// summary is what reading a segment found.
type summary struct {
	oldest  time.Time // the oldest receipt
	corrupt int       // damaged stretches skipped
	end     int       // the offset just after the last intact record
}

// readRecords calls fn (if set) for each intact record in data. A record
// that fails its checksum is skipped and reading resumes at the next offset
// where an intact record starts; bytes after the last intact record are left
// for the caller to judge (a torn write, or damage).
func readRecords(data []byte, fn func(Record) error) (summary, error) {
	var sum summary
	for off := 0; off < len(data); {
		rec, n, ok := decodeAt(data, off)
		if !ok {
			next := resync(data, off+1)
			if next < 0 {
				break
			}
			sum.corrupt++
			off = next
			continue
		}
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

// decodeAt decodes the record at data[off:], reporting its framed length and
// whether it is intact.
func decodeAt(data []byte, off int) (Record, int, bool) {
	if len(data)-off < headerLen {
		return Record{}, 0, false
	}
	n := binary.LittleEndian.Uint32(data[off:])
	if n > maxPayload || int(n) > len(data)-off-headerLen {
		return Record{}, 0, false
	}
	want := binary.LittleEndian.Uint32(data[off+4:])
	crc := crc32.Update(crc32.Checksum(data[off:off+4], castagnoli), castagnoli, data[off+headerLen:off+headerLen+int(n)])
	if crc != want {
		return Record{}, 0, false
	}
	rec, ok := decodePayload(data[off+headerLen : off+headerLen+int(n)])
	return rec, headerLen + int(n), ok
}

// resync returns the first offset at or after from where an intact record
// starts, or -1. It only runs past damage, so its cost does not matter.
func resync(data []byte, from int) int {
	for off := from; off+headerLen <= len(data); off++ {
		if _, _, ok := decodeAt(data, off); ok {
			return off
		}
	}
	return -1
}

// encode frames a record.
func encode(dst []byte, r Record) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerLen)...)
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
