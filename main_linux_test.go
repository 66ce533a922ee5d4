package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"callback/objectsource/sim"
	"callback/pkg/pgtest"
)

// TestRunStopsWhenServerFails kills the listening socket under the running
// server, as a dying listener would: Serve returns an error, and run must
// stop every part it started, drain what it accepted and return that error
// without waiting for a signal. An earlier run left the sweeper on the signal
// context and hung here until one came.
func TestRunStopsWhenServerFails(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	up := httptest.NewServer(&sim.Upstream{})
	t.Cleanup(up.Close)
	addr, logs, done := startRun(t, t.Context(), "-src", up.URL, "-db", dbURL)
	if got := postWhenUp(t, addr, `{"object_ids":[0,1,2]}`, logs); got != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202", got)
	}

	shutdownListener(t, addr)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "accept") {
			t.Errorf("run = %v, want the accept error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run still running 30 s after its listener failed\n%s", logs.String())
	}
	if ids := objectIDs(t, dbURL); len(ids) != 2 || ids[0] != 0 || ids[1] != 2 {
		t.Errorf("ids = %v, want [0 2]: the accepted callback must be drained", ids)
	}
}

// shutdownListener finds this process's listening socket bound to addr and
// shuts it down, so the next accept fails with EINVAL. It is how a test
// breaks a listener that run opened and keeps to itself (Linux only).
func shutdownListener(t *testing.T, addr string) {
	t.Helper()
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		in, ok := sa.(*syscall.SockaddrInet4)
		if !ok || in.Port != port {
			continue
		}
		// Only the listener: accepted connections share its local port.
		if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || v == 0 {
			continue
		}
		if err := syscall.Shutdown(fd, syscall.SHUT_RDWR); err != nil {
			t.Fatalf("shutdown listener fd %d: %v", fd, err)
		}
		return
	}
	t.Fatalf("no listening socket on %s", addr)
}
