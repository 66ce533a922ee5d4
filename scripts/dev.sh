#!/usr/bin/env bash
# Runs the whole thing on one machine without Docker: a throwaway PostgreSQL
# cluster, the object-source simulator (upstream + sender, like the customer's
# program, here as two processes) and the callback service. Ctrl-C stops all
# of it in order: the sender first, then the service, which drains its queue
# while the upstream still answers, then the upstream and PostgreSQL.
#
#   scripts/dev.sh            # or: make run
#   PGPORT=5544 scripts/dev.sh
#
# Needs Go and PostgreSQL's server binaries (Debian: apt-get install postgresql).
# The cluster lives in $DEV_DIR (default /tmp/callback-dev) and is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

PGPORT=${PGPORT:-5433}
ADMIN_ADDR=${ADMIN_ADDR:-127.0.0.1:6060}
DEV_DIR=${DEV_DIR:-/tmp/callback-dev}
PGDATA=$DEV_DIR/pgdata
export PATH="$PATH:/usr/local/go/bin"

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pgbin() {
	if command -v "$1" >/dev/null; then command -v "$1"; return; fi
	local dir
	dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$dir" ] || [ ! -x "$dir/$1" ]; then
		echo "dev.sh: $1 not found; install PostgreSQL (apt-get install postgresql)" >&2
		exit 1
	fi
	echo "$dir/$1"
}
mkdir -p "$DEV_DIR"

# A throwaway cluster in $PGDATA, unless DB_URL names a database already.
own_pg=
if [ -z "${DB_URL:-}" ]; then
	own_pg=1
	INITDB=$(pgbin initdb)
	PG_CTL=$(pgbin pg_ctl)
	CREATEDB=$(pgbin createdb)
	if [ "$(id -u)" = 0 ]; then chown postgres: "$DEV_DIR"; fi
	if [ ! -f "$PGDATA/PG_VERSION" ]; then
		echo "dev.sh: creating a PostgreSQL cluster in $PGDATA"
		as_pg "$INITDB" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
	fi
fi

# The programs run in sessions of their own (setsid), so the terminal's Ctrl-C
# reaches only this script, which then stops them one at a time, in order.
sender= service= upstream=
say() { echo "dev.sh: $*" >&2 || true; }
stop() { # stop NAME PID: SIGTERM, then wait for it to exit
	[ -n "$2" ] || return 0
	say "stopping $1"
	kill -TERM "$2" 2>/dev/null || true
	wait "$2" 2>/dev/null || true
}
cleanup() {
	trap - INT TERM EXIT
	# With `make run | tee log`, Ctrl-C ends tee too: a write to the closed pipe
	# must not end the cleanup before PostgreSQL is stopped. So no SIGPIPE, no
	# exit on a failed command, and the messages go to stderr.
	trap '' PIPE
	set +e
	stop sender "$sender"
	stop "service (it drains its queue first)" "$service"
	stop upstream "$upstream"
	if [ -n "$own_pg" ]; then
		say "stopping PostgreSQL"
		as_pg "$PG_CTL" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
	fi
}
trap cleanup INT TERM EXIT

if [ -n "$own_pg" ]; then
	as_pg "$PG_CTL" -D "$PGDATA" -l "$DEV_DIR/postgres.log" -w \
		-o "-p $PGPORT -k $DEV_DIR -c listen_addresses=127.0.0.1" start >/dev/null
	as_pg "$CREATEDB" -h 127.0.0.1 -p "$PGPORT" -U postgres callback 2>/dev/null || true
	DB_URL="postgres://postgres@127.0.0.1:$PGPORT/callback?sslmode=disable"
	echo "dev.sh: PostgreSQL on 127.0.0.1:$PGPORT (log $DEV_DIR/postgres.log)"
fi

go build -o "$DEV_DIR/callback" .
go build -o "$DEV_DIR/objectsource" ./objectsource

setsid "$DEV_DIR/objectsource" -addr 127.0.0.1:9010 -target '' &
upstream=$!
setsid "$DEV_DIR/callback" -addr 127.0.0.1:9090 -admin-addr "$ADMIN_ADDR" -src http://127.0.0.1:9010 -db "$DB_URL" -ttl 30s -wal-dir "$DEV_DIR/wal" &
service=$!
setsid "$DEV_DIR/objectsource" -addr '' -target http://127.0.0.1:9090/callback &
sender=$!
echo "dev.sh: service on 127.0.0.1:9090, upstream on 127.0.0.1:9010, sender posting; Ctrl-C stops all"
echo "dev.sh: status page (charts of the last minutes): http://$ADMIN_ADDR/"
echo "dev.sh: watch the table with: psql '$DB_URL' -c 'SELECT count(*), max(last_seen) FROM objects'"

# Stop everything, in order, as soon as any program exits by itself.
wait -n "$upstream" "$service" "$sender"
