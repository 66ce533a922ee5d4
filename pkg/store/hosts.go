package store

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// LogHostFailures makes cfg log a warning, naming the host and the reason,
// whenever a connection attempt to one of its hosts fails in a way a
// failover produces: the host refuses or cannot be reached, takes the TCP
// connection but does not finish the startup within the connect timeout (a
// frozen VM, a black-holed route), or is not what target_session_attrs asks
// for (a demoted primary). pgx reports the hosts' errors only when every
// host fails; when a later host takes the connection, why the earlier ones
// did not is lost, and with it the operator's only sign that the first host
// in the URL is frozen or demoted.
//
// Errors the server sends during the startup (a wrong password, "the
// database system is starting up") still reach the log only through the
// caller's error, when every host has failed.
func LogHostFailures(cfg *pgconn.Config, log *slog.Logger) {
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			log.Warn("database host failed: cannot connect", "host", addr, "err", err)
			return nil, err
		}
		if cfg.ConnectTimeout == 0 {
			return conn, nil // nothing bounds the startup, so nothing to tell
		}
		// ctx is this host's attempt, bounded by the connect timeout: pgx
		// cancels it once the attempt is over, so it ends with its deadline
		// only if the startup was still waiting for the host.
		context.AfterFunc(ctx, func() {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				log.Warn("database host failed: took the connection but did not answer within the connect timeout",
					"host", addr, "connect_timeout", cfg.ConnectTimeout.String())
			}
		})
		return conn, nil
	}
	if validate := cfg.ValidateConnect; validate != nil {
		cfg.ValidateConnect = func(ctx context.Context, conn *pgconn.PgConn) error {
			err := validate(ctx, conn)
			// Not preferred (prefer-standby on a primary) is a choice, not a failure.
			if np := (*pgconn.NotPreferredError)(nil); err != nil && !errors.As(err, &np) {
				log.Warn("database host failed: not the kind of server the URL asks for",
					"host", conn.Conn().RemoteAddr().String(), "err", err)
			}
			return err
		}
	}
}
