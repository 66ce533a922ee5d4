package integrationtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"callback/objectsource/sim"
	"callback/pkg/pgtest"
)

// hostile answers like the customer's object service, even IDs online, but
// speaks HTTP the way a broken or hostile peer does, by the ID's last digit:
//
//	1: after the answer, an unsolicited one saying ID+2 (odd, offline) is online
//	4: 103 Early Hints and 100 Continue before the 200 (an online ID)
//	9: a header that never ends (the broken ones: never answered)
//
// counts tallies the requests by last digit.
func hostile(counts *[10]atomic.Int64) func(w io.Writer, id int64) bool {
	endless := []byte(strings.Repeat("X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 64))
	return func(w io.Writer, id int64) bool {
		digit := (id%10 + 10) % 10
		counts[digit].Add(1)
		time.Sleep(time.Duration(20+id%80) * time.Millisecond) // a lookup's time, shortened
		var out string
		switch digit {
		case 1:
			out = answerFor(id, false) + answerFor(id+2, true)
		case 4:
			out = "HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" + answerFor(id, true)
		case 9:
			if _, err := io.WriteString(w, "HTTP/1.1 200 OK\r\n"); err != nil {
				return false
			}
			for { // until the client gives up and closes
				if _, err := w.Write(endless); err != nil {
					return false
				}
			}
		default:
			out = answerFor(id, id%2 == 0)
		}
		_, err := io.WriteString(w, out)
		return err == nil
	}
}

func answerFor(id int64, online bool) string {
	body := fmt.Sprintf(`{"id":%d,"online":%v}`, id, online)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// Scenario 17: an upstream that mixes unsolicited answers, interim answers
// and headers that never end into normal traffic. No offline ID may be
// stored (an unsolicited "online" must never be read as the next answer),
// every online ID must be, the interim-answered ones included, and the
// service's memory must stay flat though a tenth of its lookups meet a
// header without end.
func TestScenarioHostileUpstream(t *testing.T) {
	var counts [10]atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { (&sim.RawUpstream{Respond: hostile(&counts)}).Serve(t.Context(), ln); close(served) }()
	t.Cleanup(func() { ln.Close(); <-served })
	dbURL := pgtest.NewDB(t)
	svc := startService(t, buildFast(t), dbURL, "http://"+ln.Addr().String(), "-ttl", "10s")
	rss := sampleRSS(t, svc.cmd.Process.Pid, time.Second)

	l := newLedger()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	sum, err := (&sim.Sender{
		Target: svc.URL + "/callback", Senders: 4, Rate: 5, IDRange: 2000, MaxIDs: 50, OnSendFunc: l.record,
	}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sends := requireAllAccepted(t, l)
	db := connect(t, dbURL)
	checked := l.settle(t, db, even, 10*time.Second, 30*time.Second)
	samples := rss()
	peak := slices.Max(samples)
	if peak > 200 {
		t.Errorf("peak RSS %d MiB (samples %v), want it flat, well under 200 MiB", peak, samples)
	}
	report(t, "hostile-upstream",
		fmt.Sprintf("4 senders at 5/s for 15 s: %d callbacks, %d ids, upstream 20-100 ms", sends, sum.IDs),
		fmt.Sprintf("a tenth of the lookups answered then followed by an unsolicited \"online\" for an offline ID (%d), a tenth with 103 and 100 before the 200 (%d), a tenth with a header that never ends (%d); RSS %d-%d MiB",
			counts[1].Load(), counts[4].Load(), counts[9].Load(), slices.Min(samples), peak),
		checked, 0)
}
