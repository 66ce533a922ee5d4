package integrationtest

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"callback/objectsource/sim"
	"callback/pkg/logtest"
	"callback/pkg/pgtest"
)

// needTool returns the path of a Debian package's program. Missing, the
// test skips with a message, or fails under CI=true, where .ci/run installs it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found; .ci/run installs Debian's %s package", name, pkg)
	}
	t.Skipf("%s not found: apt-get install %s to run this test", name, pkg)
	return ""
}

// balancer is a running HAProxy with deploy/haproxy/haproxy.cfg.
type balancer struct {
	URL   string // where senders post
	stats string // the stats page's CSV
	logs  *logtest.Buffer
}

// startHAProxy runs HAProxy with the repository's config in front of the
// three replicas and waits until it routes to all of them. It is stopped by
// its PID at cleanup.
func startHAProxy(t *testing.T, replicas [3]string) *balancer {
	t.Helper()
	bin := needTool(t, "haproxy", "haproxy")
	listen, stats := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "-db", "-f", "../deploy/haproxy/haproxy.cfg")
	cmd.Env = append(os.Environ(), "CALLBACK_LISTEN="+listen, "HAPROXY_STATS="+stats,
		"CALLBACK_REPLICA1="+replicas[0], "CALLBACK_REPLICA2="+replicas[1], "CALLBACK_REPLICA3="+replicas[2])
	b := &balancer{URL: "http://" + listen, stats: "http://" + stats + "/stats;csv"}
	b.logs, _ = startProcess(t, "haproxy", cmd)
	for i := range 3 {
		b.waitUp(t, fmt.Sprintf("replica%d", i+1), 10*time.Second)
	}
	return b
}

// up reports whether HAProxy has server up.
func (b *balancer) up(server string) (bool, error) {
	resp, err := http.Get(b.stats)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return false, err
	}
	for _, row := range rows {
		if len(row) > 17 && row[0] == "replicas" && row[1] == server {
			return strings.HasPrefix(row[17], "UP"), nil
		}
	}
	return false, fmt.Errorf("no server %s in haproxy's stats", server)
}

// waitUp waits until HAProxy routes to server.
func (b *balancer) waitUp(t *testing.T, server string, limit time.Duration) {
	t.Helper()
	eventually(t, limit, func() error {
		ok, err := b.up(server)
		if err == nil && !ok {
			err = fmt.Errorf("haproxy has %s down", server)
		}
		return err
	})
}

// TestHAProxyUnusedConnection: a connection that sends nothing for a while
// still carries a post through the balancer. Go's transport keeps the loser
// of a dial race idle in its pool, so a sender's connection may carry its
// first request seconds after it was opened. With the config's old 5 s for
// the first request, HAProxy answered such a connection 408 unasked, and a
// post written just then read that 408 as its answer (once in about eight
// rolling deploys).
func TestHAProxyUnusedConnection(t *testing.T) {
	var replicas [3]string
	for i := range replicas {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /readyz", func(http.ResponseWriter, *http.Request) {})
		mux.HandleFunc("POST /callback", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		replicas[i] = srv.Listener.Addr().String()
	}
	lb := startHAProxy(t, replicas)
	c, err := net.Dial("tcp", strings.TrimPrefix(lb.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(6 * time.Second) // past the old 5 s
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	body := `{"object_ids":[1]}`
	if _, err := fmt.Fprintf(c, "POST /callback HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
		t.Fatalf("post on a connection idle 6 s: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("post on a connection idle 6 s: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post on a connection idle 6 s: %s, want 202 Accepted", resp.Status)
	}
}

// Scenario 11: a rolling deploy of three replicas behind HAProxy with the
// repository's config. Ten customer-like senders (1 s timeout, keep-alive,
// no retries, answers closed unread) post through it while every replica in
// turn gets SIGTERM, exits 0, starts again on the same address and log
// directory and becomes ready. Not one post may fail, and every accepted
// online ID must be stored with its newest receipt. The default
// -shutdown-delay is what keeps a post from meeting a closing listener:
// with -shutdown-delay 0 the same run failed posts (see the commit).
func TestScenarioRollingDeploy(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	// The upstream in a process of its own, so that its load does not
	// take the CPU the senders in this one need for their 1 s deadline.
	src := startUpstream(t, "-min-latency", "300ms", "-max-latency", "2s")
	bin := buildFast(t)
	var addrs [3]string
	var dirs [3]string
	var replicas [3]*service
	for i := range 3 {
		addrs[i], dirs[i] = freeAddr(t), t.TempDir()
		replicas[i] = startServiceAt(t, bin, addrs[i], dbURL, src, "-wal-dir", dirs[i])
	}
	lb := startHAProxy(t, addrs)
	db := connect(t, dbURL)

	l := newLedger()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sums := runSender(t, ctx, &sim.Sender{
		Target: lb.URL + "/callback", Senders: 10, Interval: 200 * time.Millisecond, MaxIDs: 100, IDRange: 3000,
		OnSendFunc: l.record,
	})
	var restarts []string
	for i := range 3 {
		time.Sleep(2 * time.Second)
		code, took := replicas[i].stop(syscall.SIGTERM, 60*time.Second)
		if code != 0 {
			t.Fatalf("replica %d exited %d after SIGTERM, want 0", i+1, code)
		}
		replicas[i] = startServiceAt(t, bin, addrs[i], dbURL, src, "-wal-dir", dirs[i])
		start := time.Now()
		lb.waitUp(t, fmt.Sprintf("replica%d", i+1), 10*time.Second)
		restarts = append(restarts, fmt.Sprintf("replica %d: exit 0 after %v, back in the balancer %v after its start",
			i+1, took.Round(10*time.Millisecond), time.Since(start).Round(10*time.Millisecond)))
	}
	time.Sleep(2 * time.Second)
	cancel()
	sum := <-sums
	sends := requireAllAccepted(t, l)
	checked := l.settle(t, db, even, 30*time.Second, 30*time.Second)
	t.Log(strings.Join(restarts, "; "))
	report(t, "rolling-deploy",
		fmt.Sprintf("10 senders through HAProxy (1 s timeout, keep-alive, no retries): %d callbacks, %d ids; p99 %v", sends, sum.IDs, sum.P99.Round(100*time.Microsecond)),
		"3 replicas on one database, each restarted in turn (SIGTERM, exit 0, start on the same address and -wal-dir, ready); failed posts: 0", checked, 0)
}

// frozenHost listens and takes connections but never answers, as a frozen
// VM or a black-holed route does, until the test ends.
func frozenHost(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // read nothing, answer nothing
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// Scenario 12: a frozen first host in a multi-host database URL. The first
// host takes connections and never answers; the second is the real
// primary. Every connection attempt must give up on the first within the
// connect timeout and go on to the second, so callbacks are stored as
// usual. (Before, with no connect timeout, each attempt waited on the
// frozen host for the whole statement timeout and the second was never
// tried: nothing was written for as long as the host stayed frozen.)
func TestScenarioFrozenFirstHost(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	frozen := frozenHost(t)
	u.Host = frozen + "," + u.Host
	q := u.Query()
	q.Set("target_session_attrs", "read-write")
	u.RawQuery = q.Encode()
	up := &sim.Upstream{MinLatency: 100 * time.Millisecond, MaxLatency: 500 * time.Millisecond}
	svc := startService(t, buildService(t), u.String(), upstream(t, up))
	db := connect(t, dbURL)

	l := newLedger()
	start := time.Now()
	_, err = (&sim.Sender{Target: svc.URL + "/callback", Interval: 500 * time.Millisecond, MaxSends: 10, IDRange: 500, OnSendFunc: l.record}).Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	requireAllAccepted(t, l)
	checked := l.settle(t, db, even, 30*time.Second, 30*time.Second)
	// The operator must learn that the first host is frozen, although
	// every connection ended up on the second.
	if logs := svc.logs.String(); !strings.Contains(logs, `"host":"`+frozen+`"`) || !strings.Contains(logs, "did not answer within the connect timeout") {
		t.Errorf("no warning names the frozen host %s and why it failed:\n%s", frozen, logs)
	}
	report(t, "frozen-first-host", "10 callbacks, 2/s, upstream 0.1–0.5 s",
		fmt.Sprintf("-db names a host that takes connections and never answers before the real one (target_session_attrs=read-write): every callback stored %v after the first was sent", time.Since(start).Round(100*time.Millisecond)),
		checked, 0)
}

// startPgBouncer runs Debian's PgBouncer in transaction mode in front of
// the server of dbURL and returns dbURL with PgBouncer's address. It runs as
// the postgres OS user when the test runs as root (PgBouncer refuses root)
// and is stopped by its PID at cleanup.
func startPgBouncer(t *testing.T, dbURL string) string {
	t.Helper()
	bin := needTool(t, "pgbouncer", "pgbouncer")
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	server, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // readable by the postgres user
		t.Fatal(err)
	}
	listen := freeAddr(t)
	host, lport, _ := net.SplitHostPort(listen)
	cfg := fmt.Sprintf(`[databases]
* = host=%s port=%s
[pgbouncer]
listen_addr = %s
listen_port = %s
unix_socket_dir =
auth_type = trust
auth_file = %s/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
ignore_startup_parameters = extra_float_digits
`, server, port, host, lport, dir)
	for name, text := range map[string]string{"pgbouncer.ini": cfg, "users.txt": `"postgres" ""` + "\n"} {
		if err := os.WriteFile(dir+"/"+name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	attr, err := pgtest.ProcAttr(syscall.SIGKILL)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, dir+"/pgbouncer.ini")
	cmd.SysProcAttr = attr
	startProcess(t, "pgbouncer", cmd)
	eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err
	})
	u.Host = listen
	return u.String()
}

// Scenario 13: two replicas through PgBouncer in transaction mode, on an
// empty database. Both must create the table (one of them, under the
// schema's advisory lock) and write every row. (Before, pgx's cached
// prepared statements met on PgBouncer's shared server connections:
// "prepared statement stmtcache_… already exists (42P05)", and neither
// replica could create the table.)
func TestScenarioPgBouncerTwoReplicas(t *testing.T) {
	dbURL := pgtest.NewDB(t)
	pooled := startPgBouncer(t, dbURL)
	up := &sim.Upstream{MinLatency: 100 * time.Millisecond, MaxLatency: 800 * time.Millisecond}
	src := upstream(t, up)
	bin := buildFast(t)
	a := startService(t, bin, pooled, src)
	b := startService(t, bin, pooled, src)
	db := connect(t, dbURL)

	l := newLedger()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
	defer cancel()
	sa := runSender(t, ctx, &sim.Sender{Target: a.URL + "/callback", Senders: 2, Rate: 5, IDRange: 4000, MaxIDs: 100, OnSendFunc: l.record})
	sb := runSender(t, ctx, &sim.Sender{Target: b.URL + "/callback", Senders: 2, Rate: 5, IDRange: 4000, MaxIDs: 100, OnSendFunc: l.record})
	<-sa
	<-sb
	sends := requireAllAccepted(t, l)
	checked := l.settle(t, db, even, 30*time.Second, 30*time.Second)
	for _, s := range []*service{a, b} {
		if logs := s.logs.String(); strings.Contains(logs, "write failed") || strings.Contains(logs, "database not ready") {
			t.Errorf("a replica's writes failed through PgBouncer:\n%s", logs)
		}
	}
	report(t, "pgbouncer-two-replicas", fmt.Sprintf("%d callbacks to two replicas in 8 s over 4,000 ids, an empty database", sends),
		"both replicas through PgBouncer 1.18 in transaction mode (default_pool_size 4): the table created once, every write through the pooler; no failed write", checked, 0)
}

// admin runs statements on a server's maintenance database.
func admin(t *testing.T, srv *pgtest.Server, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// replicatedPair starts a primary of the test's own with a database
// "callback" and a streaming standby that replicates synchronously (what
// "nothing lost" asks of PostgreSQL: an asynchronous standby may lack the
// last commits), and waits until the standby is in sync.
func replicatedPair(t *testing.T) (primary, standby *pgtest.Server) {
	t.Helper()
	primary = pgtest.NewPrimary(t)
	admin(t, primary, "CREATE DATABASE callback",
		"ALTER DATABASE callback SET synchronous_commit = on") // pgtest's servers default to off
	standby = primary.Standby(t)
	awaitSyncStandby(t, primary)
	return primary, standby
}

// awaitSyncStandby makes primary wait for a standby at every commit and
// returns once one is in sync.
func awaitSyncStandby(t *testing.T, primary *pgtest.Server) {
	t.Helper()
	admin(t, primary, "ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()")
	eventually(t, 30*time.Second, func() error {
		conn, err := pgx.Connect(t.Context(), primary.AdminURL())
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").Scan(&n); err != nil || n == 0 {
			return fmt.Errorf("no synchronous standby yet (%v)", err)
		}
		return nil
	})
}

// promote makes standby the primary and returns when; as the new primary
// has no standby of its own, it stops waiting for one.
func promote(t *testing.T, standby *pgtest.Server) time.Time {
	t.Helper()
	if err := standby.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	admin(t, standby, "ALTER SYSTEM RESET synchronous_standby_names", "SELECT pg_reload_conf()")
	return at
}

// firstRowAfter waits until db holds a row received after since and
// returns how long after since that was.
func firstRowAfter(t *testing.T, db *pgxpool.Pool, since time.Time) time.Duration {
	t.Helper()
	var took time.Duration
	eventually(t, 30*time.Second, func() error {
		var n int
		if err := db.QueryRow(t.Context(), "SELECT count(*) FROM objects WHERE last_seen > $1", since).Scan(&n); err != nil || n == 0 {
			return fmt.Errorf("no row received after %v on the new primary yet (%v)", since.Format(time.StampMilli), err)
		}
		took = time.Since(since)
		return nil
	})
	return took
}

// Scenario 14: a primary failover and back. A primary and a streaming
// standby made with pg_basebackup -R, replicating synchronously (what
// "nothing lost" needs of PostgreSQL: an asynchronous standby may lack the
// last commits); the service's URL names both with
// target_session_attrs=read-write. Under paced load the primary is stopped
// with -m immediate, and 3 s later the standby is promoted. The old primary
// then comes back as a synchronous standby of the new one, on its old port,
// where the URL's first host now answers read-only; and the new primary
// fails in turn, so that the old one is promoted again. Every post must get
// its 202, nothing may be lost, and the test reports how long after each
// promotion the first new row was written.
func TestScenarioPrimaryFailover(t *testing.T) {
	first, second := replicatedPair(t)
	dbURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/callback?sslmode=disable&target_session_attrs=read-write",
		first.Port(), second.Port())
	up := &sim.Upstream{MinLatency: 100 * time.Millisecond, MaxLatency: time.Second}
	svc := startService(t, buildFast(t), dbURL, upstream(t, up))

	l := newLedger()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	began := time.Now()
	sums := runSender(t, ctx, &sim.Sender{
		Target: svc.URL + "/callback", Senders: 4, Rate: 5, IDRange: 2000, MaxIDs: 50, OnSendFunc: l.record,
	})
	// failOver crashes from, promotes to 3 s later and returns a pool on to
	// and the seconds from the promotion to its first new row.
	failOver := func(from, to *pgtest.Server) (*pgxpool.Pool, time.Duration) {
		time.Sleep(4 * time.Second)
		if err := from.Crash(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		promoted := promote(t, to)
		db := connect(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/callback?sslmode=disable", to.Port()))
		return db, firstRowAfter(t, db, promoted)
	}
	_, firstRow := failOver(first, second)
	if err := first.Rejoin(second); err != nil {
		t.Fatal(err)
	}
	awaitSyncStandby(t, second)
	db, backRow := failOver(second, first)
	time.Sleep(3 * time.Second)
	cancel()
	sum := <-sums
	sends := requireAllAccepted(t, l)
	checked := l.settle(t, db, even, 30*time.Second, 30*time.Second)
	report(t, "primary-failover",
		fmt.Sprintf("4 senders at 5/s for %v: %d callbacks, %d ids; p99 %v", time.Since(began).Round(time.Second), sends, sum.IDs, sum.P99.Round(100*time.Microsecond)),
		fmt.Sprintf("primary (synchronous streaming standby, multi-host URL) stopped -m immediate, standby promoted 3 s later: first new row %v after the promotion; "+
			"the old primary back as a standby of the new one, which then failed the same way: first new row %v after the old one's promotion; every post 202",
			firstRow.Round(10*time.Millisecond), backRow.Round(10*time.Millisecond)),
		checked, 0)
}

// sessionProxy forwards TCP connections to a target the test can switch,
// and never closes a session when the target changes: a TCP VIP, a cloud
// balancer, or HAProxy without on-marked-down shutdown-sessions.
type sessionProxy struct {
	Addr   string
	target atomic.Value // string: where new connections go
}

func startSessionProxy(t *testing.T, target string) *sessionProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &sessionProxy{Addr: ln.Addr().String()}
	p.target.Store(target)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn // guarded by mu
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target.Load().(string))
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
			wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// Scenario 15: a switchover behind a balancer that keeps sessions. The
// service reaches PostgreSQL through a proxy that never cuts a session. The
// primary turns read-only (demoted), its synchronous standby is promoted,
// and for 3 s more the proxy still sends new connections to the old node,
// as a lagging balancer does; then to the new primary. Connections made in
// that window stay on the read-only node. Every write there gets SQLSTATE
// 25006; the service must drop them and reconnect, so every post gets its
// 202 and every row lands on the new primary. (Before, the pool kept those
// connections and writes failed for as long as they lived, an hour.)
func TestScenarioSwitchoverKeptSessions(t *testing.T) {
	primary, standby := replicatedPair(t)
	proxy := startSessionProxy(t, fmt.Sprintf("127.0.0.1:%d", primary.Port()))
	dbURL := fmt.Sprintf("postgres://postgres@%s/callback?sslmode=disable", proxy.Addr)
	up := &sim.Upstream{MinLatency: 100 * time.Millisecond, MaxLatency: time.Second}
	svc := startService(t, buildFast(t), dbURL, upstream(t, up))

	l := newLedger()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	sums := runSender(t, ctx, &sim.Sender{
		Target: svc.URL + "/callback", Senders: 4, Rate: 5, IDRange: 2000, MaxIDs: 50, OnSendFunc: l.record,
	})
	time.Sleep(4 * time.Second)
	// Demote: the old primary takes no more writes, on any session.
	admin(t, primary, "ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()")
	promoted := promote(t, standby)
	time.Sleep(3 * time.Second) // the balancer lags
	proxy.target.Store(fmt.Sprintf("127.0.0.1:%d", standby.Port()))
	db := connect(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/callback?sslmode=disable", standby.Port()))
	firstRow := firstRowAfter(t, db, promoted)
	sum := <-sums
	sends := requireAllAccepted(t, l)
	checked := l.settle(t, db, even, 30*time.Second, 30*time.Second)
	report(t, "switchover-kept-sessions",
		fmt.Sprintf("4 senders at 5/s for 15 s: %d callbacks, %d ids; p99 %v", sends, sum.IDs, sum.P99.Round(100*time.Microsecond)),
		fmt.Sprintf("through a proxy that keeps sessions: the primary turned read-only and its standby promoted at 4 s, new connections still sent to the old node for 3 s: first new row on the new primary %v after the promotion; every post 202", firstRow.Round(10*time.Millisecond)),
		checked, 0)
}
