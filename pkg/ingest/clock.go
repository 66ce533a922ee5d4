package ingest

import (
	"math"
	"time"
)

// none is "no time" among arrivals: later than any, so min passes it over.
const none int64 = math.MaxInt64

// stamp is when a callback was received, on two clocks. wall is the wall
// clock's time (Unix ns), which becomes the row's last_seen. mono is when it
// reached the pipeline on the pipeline's monotonic clock (Pipeline.now),
// which every decision about its age uses: is a lookup still worth it, is a
// row worth keeping, how old is the oldest work. A wall clock that is
// stepped (NTP after a drift, a VM resumed) moves wall and not mono, so a
// step forward gives nothing up early and a step back keeps nothing longer.
type stamp struct{ wall, mono int64 }

// now is the pipeline's monotonic clock: nanoseconds since New.
func (p *Pipeline) now() int64 { return int64(time.Since(p.epoch)) }

// arriving stamps a live callback, received now at wall time received.
func (p *Pipeline) arriving(received time.Time) stamp {
	return stamp{received.UnixNano(), p.now()}
}

// replayed stamps a callback read back from the intake log, received before
// this process started: how long ago can only be told by the wall clock.
// One from the future (the clock stepped back since) counts as received now.
func (p *Pipeline) replayed(received time.Time) stamp {
	age := max(0, time.Now().Round(0).Sub(received.Round(0)))
	return stamp{received.UnixNano(), p.now() - int64(age)}
}

// age returns how long ago, on the monotonic clock, mono was.
func (p *Pipeline) age(mono int64) time.Duration { return time.Duration(p.now() - mono) }

// newer returns the stamp of the newer of two receipts of one ID: the later
// wall time, which the row keeps (last_seen only moves forward), and the
// later arrival, which decides how long the ID is worth a lookup. After a
// step of the wall clock the two may come from different receipts.
func newer(a, b stamp) stamp {
	return stamp{max(a.wall, b.wall), max(a.mono, b.mono)}
}
