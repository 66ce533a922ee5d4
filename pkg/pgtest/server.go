package pgtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// initdbTimeout bounds initdb, which takes a few seconds on a slow machine.
	initdbTimeout = 2 * time.Minute
	// readyTimeout bounds how long Start waits for the server to accept connections.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds how long Stop waits for the postmaster to exit before killing it.
	stopTimeout = 30 * time.Second
	// startAttempts is how often the first start picks a new port. The free port we pick can
	// be taken by a parallel test binary before postgres binds it.
	startAttempts = 3
)

// errExited means the postmaster exited before it accepted connections, usually because the
// port was taken; the log file says why.
var errExited = errors.New("postgres exited during startup")

// Server is a throwaway PostgreSQL cluster: a data directory in its own temporary directory and
// one postmaster listening on 127.0.0.1 at a fixed port. The port survives Stop and Start, so
// clients configured with a URL reconnect once the server is back.
//
// The server runs with fsync off, so a crash of the machine may corrupt it, which is fine for
// data that is deleted at the end of the test binary anyway.
type Server struct {
	dir      string  // temporary directory: data/, postgres.log, the unix socket
	postgres string  // path of the postgres binary
	user     *osUser // the postgres OS user when we run as root, else nil
	port     int

	mu   sync.Mutex // guards proc
	proc *process   // nil while the server is stopped
}

// process is one run of the postmaster, from spawn until it exits.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the postmaster has exited and been reaped
	err  error         // cmd.Wait's result; read only after done is closed
}

// AdminURL returns the URL of the "postgres" maintenance database, as superuser postgres.
func (s *Server) AdminURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Stop shuts the server down fast (clients are disconnected, nothing is waited for) and blocks
// until the postmaster has exited. Stopping a stopped server does nothing.
func (s *Server) Stop() error { return s.halt(syscall.SIGINT) } // SIGINT is postgres's "fast" shutdown

// halt stops the postmaster with sig, if it runs, and waits for it to exit.
func (s *Server) halt(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	p := s.proc
	s.proc = nil
	if err := p.stop(sig); err != nil {
		return fmt.Errorf("stop postgres on port %d: %w", s.port, err)
	}
	return nil
}

// Start starts the server again on the same port and data directory and blocks until it
// accepts connections. Starting a running server does nothing. On failure the error includes
// the tail of the server log.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	p, err := s.spawn()
	if err != nil {
		return fmt.Errorf("start postgres on port %d: %w", s.port, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := s.waitReady(ctx, p); err != nil {
		if !errors.Is(err, errExited) {
			err = errors.Join(err, p.stop(syscall.SIGQUIT))
		}
		return fmt.Errorf("start postgres on port %d: %w\n--- tail of %s ---\n%s",
			s.port, err, s.logPath(), s.logTail())
	}
	s.proc = p
	return nil
}

// startCluster finds the server binaries, creates a cluster in a new temporary directory and
// starts it. It returns errNoPostgres when there are no binaries.
func startCluster() (*Server, error) {
	initdb, postgres, err := findBinaries()
	if err != nil {
		return nil, err
	}
	user, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("create cluster dir: %w", err)
	}
	s := &Server{dir: dir, postgres: postgres, user: user}
	if err := s.init(initdb); err != nil {
		return nil, errors.Join(err, s.removeDir())
	}
	for attempt := 1; ; attempt++ {
		s.port, err = freePort()
		if err == nil {
			err = s.Start()
		}
		if err == nil {
			return s, nil
		}
		if attempt == startAttempts || !errors.Is(err, errExited) {
			return nil, errors.Join(err, s.removeDir())
		}
	}
}

// ProcAttr is how to start a program that, like PostgreSQL's own, refuses to
// run as root: as the server's OS user (see serverUser), in a process group
// of its own, so that the terminal's Ctrl-C does not reach it, and, on Linux,
// sent death when the thread that started it exits, so that a test binary
// killed before its cleanup does not leave it running.
func ProcAttr(death syscall.Signal) (*syscall.SysProcAttr, error) {
	u, err := serverUser()
	if err != nil {
		return nil, err
	}
	return childAttr(u, death), nil
}

// init runs initdb. Trust authentication is safe because the server listens on 127.0.0.1 and
// in a private socket directory only; the C locale keeps sorting identical on every machine.
func (s *Server) init(initdb string) error {
	// MkdirTemp made the directory 0700 for root; the server user must create data/ in it.
	if err := chownTo(s.dir, s.user); err != nil {
		return fmt.Errorf("chown cluster dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), initdbTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, initdb,
		"-D", s.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Dir = s.dir // the server user may not be able to read our working directory
	cmd.SysProcAttr = runAs(s.user)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", s.dataDir(), err, out)
	}
	return nil
}

// spawn starts the postmaster without waiting for it to accept connections. Server output goes
// to the log file, appended across restarts.
func (s *Server) spawn() (*process, error) {
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	cmd := exec.Command(s.postgres,
		"-D", s.dataDir(),
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.dir,
		// Durability buys nothing for data deleted at the end of the run.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		// Headroom for many parallel tests, each with its own pool.
		"-c", "max_connections=200",
	)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The postmaster is shut down in one way only: by Stop, by Main, or, if the test binary
	// dies without reaching Main (Ctrl-C, a test timeout, SIGKILL), by the SIGQUIT of
	// childAttr, which is postgres's immediate shutdown.
	cmd.SysProcAttr = childAttr(s.user, syscall.SIGQUIT)

	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	// This goroutine owns the process: it starts it, reaps it and then closes done. Stop and
	// shutdown wait for done. It keeps its OS thread locked because Pdeathsig fires when the
	// thread that forked the child exits, not when the process does, and the Go runtime may
	// otherwise end or reuse that thread.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- errors.Join(err, logf.Close()) // the child holds its own copy of the log fd
		if err != nil {
			return
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("spawn %s: %w", s.postgres, err)
	}
	return p, nil
}

// waitReady polls until the server accepts a connection to the maintenance database. It gives
// up as soon as the postmaster exits, rather than waiting out ctx.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	const interval = 50 * time.Millisecond
	for {
		connCtx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(connCtx, s.AdminURL())
		if err == nil {
			err = conn.Close(connCtx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w: %v", errExited, p.err)
		case <-ctx.Done():
			return fmt.Errorf("wait for connections: %w (last attempt: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// stop sends sig to the postmaster and waits for it to exit, killing it after stopTimeout.
// SIGINT is a fast shutdown (a checkpoint, then exit); SIGQUIT is immediate (no checkpoint).
func (p *process) stop(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("postgres had already exited: %v", p.err)
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	err := p.cmd.Process.Kill()
	<-p.done
	return errors.Join(fmt.Errorf("postgres ignored %v for %v, killed it", sig, stopTimeout), err)
}

// shutdown stops the server immediately, since its data is about to be deleted, and removes
// its directory. Main calls it once all tests have finished.
func (s *Server) shutdown() error {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	var err error
	if p != nil {
		err = p.stop(syscall.SIGQUIT)
	}
	return errors.Join(err, s.removeDir())
}

func (s *Server) removeDir() error {
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("remove cluster dir: %w", err)
	}
	return nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

// logTail returns the end of the server log, for error messages.
func (s *Server) logTail() string {
	const tailBytes = 4 << 10
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
	}
	return string(b)
}

// freePort asks the kernel for a free TCP port on 127.0.0.1. The port is free only until
// somebody else takes it, which is why startCluster retries.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	return port, nil
}

// findBinaries returns initdb and postgres from PATH or else from the newest
// /usr/lib/postgresql/*/bin, where Debian and Ubuntu install them off PATH. Both come from the
// same directory when possible, so that their versions match.
func findBinaries() (initdb, postgres string, err error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if postgres := filepath.Join(filepath.Dir(initdb), "postgres"); isExecutable(postgres) {
			return initdb, postgres, nil
		}
		if postgres, err := exec.LookPath("postgres"); err == nil {
			return initdb, postgres, nil
		}
	}
	dirs, err := filepath.Glob("/usr/lib/postgresql/*/bin")
	if err != nil {
		return "", "", fmt.Errorf("find postgres binaries: %w", err)
	}
	slices.SortFunc(dirs, func(a, b string) int { // newest first
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, dir := range dirs {
		initdb, postgres := filepath.Join(dir, "initdb"), filepath.Join(dir, "postgres")
		if isExecutable(initdb) && isExecutable(postgres) {
			return initdb, postgres, nil
		}
	}
	return "", "", errNoPostgres
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// compareVersions orders dotted versions numerically, so that "10" is newer than "9.6".
// Parts that are not numbers sort first.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		if c := cmp.Compare(versionPart(as, i), versionPart(bs, i)); c != 0 {
			return c
		}
	}
	return 0
}

func versionPart(parts []string, i int) int {
	if i >= len(parts) {
		return 0
	}
	n, err := strconv.Atoi(parts[i])
	if err != nil {
		return -1
	}
	return n
}

// NewPrimary starts a cluster of the test's own, stopped and removed at
// cleanup, for a test that crashes it or fails it over, which the shared
// one must never be. It skips or fails like NewDB when there is no
// PostgreSQL.
func NewPrimary(t testing.TB) *Server {
	t.Helper()
	sharedServer(t) // the same skip or failure as every other test without PostgreSQL
	s, err := startCluster()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.shutdown(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// Port is the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Standby makes a streaming standby of s (see cloneFrom) in a directory of
// its own, with a postmaster on a port of its own, replaying s's WAL. It is stopped and
// removed at cleanup.
func (s *Server) Standby(t testing.TB) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgtest-standby-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	st := &Server{dir: dir, postgres: s.postgres, user: s.user}
	t.Cleanup(func() {
		if err := st.shutdown(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	if err := chownTo(dir, st.user); err != nil {
		t.Fatalf("pgtest: chown standby dir: %v", err)
	}
	if err := st.cloneFrom(s); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if st.port, err = freePort(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := st.Start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return st
}

// Rejoin brings s, a stopped former primary, back as a streaming standby of
// primary, on its old port: what an operator (or Patroni's reinit) does once
// a failover has left the old primary's timeline behind. Its data is
// replaced by a fresh base backup of primary.
func (s *Server) Rejoin(primary *Server) error {
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		return fmt.Errorf("rejoin: the server on port %d is still running", s.port)
	}
	if err := os.RemoveAll(s.dataDir()); err != nil {
		return fmt.Errorf("rejoin: remove old data: %w", err)
	}
	if err := s.cloneFrom(primary); err != nil {
		return fmt.Errorf("rejoin: %w", err)
	}
	return s.Start()
}

// cloneFrom makes s's data directory a standby of primary, as a replica is
// set up in production: pg_basebackup -R, which writes standby.signal and
// the primary's address.
func (s *Server) cloneFrom(primary *Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), initdbTimeout)
	defer cancel()
	// Beside the real postgres binary, which PATH may reach through a link.
	bin, err := filepath.EvalSymlinks(s.postgres)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(filepath.Dir(bin), "pg_basebackup"),
		"-D", s.dataDir(), "-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.port), "-U", "postgres")
	cmd.Dir = s.dir
	cmd.SysProcAttr = runAs(s.user)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_basebackup: %w\n%s", err, out)
	}
	return nil
}

// Crash stops the server the way a power cut or `pg_ctl stop -m immediate`
// does: SIGQUIT, no checkpoint, connections cut.
func (s *Server) Crash() error { return s.halt(syscall.SIGQUIT) }

// Promote makes a standby a primary and waits until it takes writes.
func (s *Server) Promote(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.AdminURL())
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(wait => true)").Scan(&ok); err != nil || !ok {
		return fmt.Errorf("promote on port %d: %v (promoted: %v)", s.port, err, ok)
	}
	return nil
}
