package integrationtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callback/objectsource/sim"
	"callback/pkg/pgtest"
)

// hostileUpstream answers like the customer's object service, even IDs
// online, but speaks HTTP the way a broken or hostile peer does, by the
// ID's last digit:
//
//	1: after the answer, an unsolicited one saying ID+2 (odd, offline) is online
//	4: 103 Early Hints and 100 Continue before the 200 (an online ID)
//	9: a header that never ends (the broken ones: never answered)
//
// It is raw TCP, so it can send what net/http's server never would.
type hostileUpstream struct {
	addr   string
	counts [10]atomic.Int64 // requests by last digit
}

func startHostile(t *testing.T) *hostileUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileUpstream{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { h.serve(t, c) })
		}
	})
	return h
}

func (h *hostileUpstream) serve(t *testing.T, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(t.Context(), func() { c.Close() })
	defer stop()
	br := bufio.NewReader(c)
	endless := []byte(strings.Repeat("X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 64))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		id, err := strconv.ParseInt(strings.TrimPrefix(req.URL.Path, "/objects/"), 10, 64)
		if err != nil {
			return
		}
		digit := (id%10 + 10) % 10
		h.counts[digit].Add(1)
		time.Sleep(time.Duration(20+id%80) * time.Millisecond) // a lookup's time, shortened
		var out string
		switch digit {
		case 1:
			out = answerFor(id, false) + answerFor(id+2, true)
		case 4:
			out = "HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" + answerFor(id, true)
		case 9:
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\n"); err != nil {
				return
			}
			for { // until the client gives up and closes
				if _, err := c.Write(endless); err != nil {
					return
				}
			}
		default:
			out = answerFor(id, id%2 == 0)
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
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
	h := startHostile(t)
	dbURL := pgtest.NewDB(t)
	svc := startService(t, buildFast(t), dbURL, "http://"+h.addr, "-ttl", "10s")
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
			h.counts[1].Load(), h.counts[4].Load(), h.counts[9].Load(), slices.Min(samples), peak),
		checked, 0)
}
