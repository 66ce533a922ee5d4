package store_test

import (
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"callback/pkg/logtest"
	"callback/pkg/pgtest"
	"callback/pkg/store"
)

// hostsURL is dbURL with hosts put before its own and its query set.
func hostsURL(t *testing.T, dbURL string, hosts []string, query map[string]string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = strings.Join(append(hosts, u.Host), ",")
	q := u.Query()
	for k, v := range query {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// A listener that takes connections and never answers: a frozen host.
func frozenHost(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().String()
}

// An address where nothing listens.
func refusingHost(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func connectLogged(t *testing.T, dbURL string) (*pgxpool.Pool, *logtest.Buffer, error) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	log, buf := logtest.Text()
	store.LogHostFailures(&cfg.ConnConfig.Config, log)
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, buf, pool.Ping(t.Context())
}

// When a later host in the URL takes the connection, the log still names
// each earlier one and why it failed: pgx itself would say nothing.
func TestLogHostFailuresNamesEachFailedHost(t *testing.T) {
	refused, frozen := refusingHost(t), frozenHost(t)
	dbURL := hostsURL(t, pgtest.NewDB(t), []string{refused, frozen}, map[string]string{"connect_timeout": "1"})
	start := time.Now()
	_, logs, err := connectLogged(t, dbURL)
	if err != nil {
		t.Fatalf("ping through the third host = %v, want nil", err)
	}
	t.Logf("connected in %v", time.Since(start))
	for _, want := range []string{
		"host=" + refused + " err=",
		"did not answer within the connect timeout\" host=" + frozen,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs.String(), "database host failed"); n != 2 {
		t.Errorf("%d warnings, want 2 (the connection that worked says nothing):\n%s", n, logs)
	}
}

// A host that is not what target_session_attrs asks for is named too (here
// a primary where the URL asks for a standby; in a failover, a demoted
// primary where it asks for read-write).
func TestLogHostFailuresNamesTheWrongKindOfServer(t *testing.T) {
	dbURL := hostsURL(t, pgtest.NewDB(t), nil, map[string]string{"target_session_attrs": "standby"})
	_, logs, err := connectLogged(t, dbURL)
	if err == nil {
		t.Fatal("ping on a primary with target_session_attrs=standby = nil, want an error")
	}
	if !strings.Contains(logs.String(), "not the kind of server the URL asks for") {
		t.Errorf("no warning names the primary:\n%s", logs)
	}
}
