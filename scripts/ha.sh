#!/usr/bin/env bash
# A highly available PostgreSQL on loopback, as the service meets one in
# production: etcd, three Patroni-managed PostgreSQL nodes replicating
# synchronously (deploy/patroni/patroni.yml) and HAProxy leading to the
# primary (deploy/haproxy/postgres.cfg).
#
#   scripts/ha.sh up        start it all and print the service's -db URL
#   scripts/ha.sh run       up, then the service and the simulator on it
#                           (scripts/dev.sh); Ctrl-C stops all and runs down
#   scripts/ha.sh ctl ARGS  patronictl on this cluster: list,
#                           switchover --force, failover --force, …
#   scripts/ha.sh url       the -db URL (through HAProxy)
#   scripts/ha.sh down      stop every process it started, by PID; remove HA_DIR
#
# Run as root on Debian, it installs what is missing (postgresql, patroni,
# etcd-server, python3-etcd, haproxy) and runs etcd and Patroni as the
# postgres OS user; otherwise they must be installed and run as this user.
#
# HA_DIR (default /tmp/callback-ha) holds data, logs and PIDs. HA_PORT_BASE
# (default 25000) places the ports: HAProxy's primary port at the base,
# its stats page +2, etcd +10 and +11, node i's postgres +20+i and its
# Patroni REST API +30+i.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

HA_DIR=${HA_DIR:-/tmp/callback-ha}
BASE=${HA_PORT_BASE:-25000}
PRIMARY_PORT=$BASE
STATS_PORT=$((BASE + 2))
ETCD_PORT=$((BASE + 10))
ETCD_PEER_PORT=$((BASE + 11))
NODES=(1 2 3)
pg_port() { echo $((BASE + 20 + $1)); }
api_port() { echo $((BASE + 30 + $1)); }
DB_URL="postgres://postgres@127.0.0.1:$PRIMARY_PORT/callback?sslmode=disable"

say() { echo "ha.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# AS_PG runs a command as the postgres OS user when we are root (initdb and
# postgres refuse root). setpriv execs the command, so a PID taken of it is
# the command's own.
AS_PG=()
[ "$(id -u)" != 0 ] || AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)

pg_bin_dir() {
	ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install_missing() {
	local missing=()
	[ -n "$(pg_bin_dir)" ] || missing+=(postgresql)
	command -v patroni >/dev/null || missing+=(patroni)
	/usr/bin/python3 -c 'import etcd' 2>/dev/null || missing+=(python3-etcd)
	command -v etcd >/dev/null || missing+=(etcd-server)
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
	command -v curl >/dev/null || missing+=(curl)
	[ ${#missing[@]} -gt 0 ] || return 0
	[ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
	say "installing ${missing[*]}"
	apt-get update -qq
	# Debian may try to start a postgresql or etcd service; there is no
	# init system to start them in a container, and they are not ours.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# start NAME CMD...: run CMD in the background with its output in
# NAME.log, and keep its PID in NAME.pid. It runs in a session of its own
# (setsid, which execs it), so a Ctrl-C at the terminal reaches only the
# scripts: etcd would die of it at once, and the cluster lose its leader
# while the service still drains.
start() {
	local name=$1
	shift
	setsid "$@" >"$HA_DIR/$name.log" 2>&1 &
	echo $! >"$HA_DIR/$name.pid"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
	local what=$1 limit=$2
	shift 2
	for _ in $(seq $((limit * 4))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.25
	done
	die "$what not ready after ${limit}s; logs in $HA_DIR"
}

# node_env I: the environment Patroni reads over patroni.yml for node I.
node_env() {
	local i=$1
	echo PATRONI_NAME=node$i \
		PATRONI_RESTAPI_LISTEN=127.0.0.1:$(api_port "$i") \
		PATRONI_RESTAPI_CONNECT_ADDRESS=127.0.0.1:$(api_port "$i") \
		PATRONI_POSTGRESQL_LISTEN=127.0.0.1:$(pg_port "$i") \
		PATRONI_POSTGRESQL_CONNECT_ADDRESS=127.0.0.1:$(pg_port "$i") \
		PATRONI_POSTGRESQL_DATA_DIR="$HA_DIR/node$i/data" \
		PATRONI_POSTGRESQL_PGPASS="$HA_DIR/node$i/pgpass" \
		PATRONI_POSTGRESQL_BIN_DIR="$(pg_bin_dir)" \
		PATRONI_ETCD3_HOSTS=127.0.0.1:$ETCD_PORT
}

# One leader and every other node streaming, one of them synchronously.
cluster_ready() {
	local cluster
	cluster=$(curl -fsS "http://127.0.0.1:$(api_port 1)/cluster") || return 1
	/usr/bin/python3 -c '
import json, sys
members = json.load(sys.stdin)["members"]
leaders = [m for m in members if m["role"] == "leader" and m["state"] == "running"]
streaming = [m for m in members if m["role"] != "leader" and m["state"] in ("streaming", "running")]
sync = [m for m in members if m["role"] == "sync_standby"]
sys.exit(0 if len(leaders) == 1 and len(streaming) == len(members) - 1 and sync else 1)
' <<<"$cluster"
}

psql_primary() {
	"$(pg_bin_dir)/psql" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres -tA "$@"
}

up() {
	install_missing
	[ ! -e "$HA_DIR/etcd.pid" ] || die "already up in $HA_DIR (scripts/ha.sh down first)"
	mkdir -p "$HA_DIR"
	[ "$(id -u)" != 0 ] || chown postgres: "$HA_DIR"
	# Patroni runs as postgres and reads its file from here, not from a
	# clone that user may not reach.
	cp "$REPO/deploy/patroni/patroni.yml" "$HA_DIR/patroni.yml"

	say "etcd on 127.0.0.1:$ETCD_PORT"
	start etcd "${AS_PG[@]}" etcd --name ha --data-dir "$HA_DIR/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "ha=http://127.0.0.1:$ETCD_PEER_PORT"
	wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

	for i in "${NODES[@]}"; do
		say "patroni node$i: postgres on 127.0.0.1:$(pg_port "$i"), REST API on 127.0.0.1:$(api_port "$i")"
		mkdir -p "$HA_DIR/node$i"
		[ "$(id -u)" != 0 ] || chown postgres: "$HA_DIR/node$i"
		# shellcheck disable=SC2046 # node_env is a list of NAME=value words
		start "node$i" env $(node_env "$i") "${AS_PG[@]}" patroni "$HA_DIR/patroni.yml"
		# The first node bootstraps the cluster; the others clone it.
		[ "$i" != 1 ] || wait_for "node1's REST API" 60 curl -fsS "http://127.0.0.1:$(api_port 1)/primary"
	done
	wait_for "the cluster (a leader, two streaming standbys, one synchronous)" 120 cluster_ready

	say "haproxy: the primary on 127.0.0.1:$PRIMARY_PORT, stats on http://127.0.0.1:$STATS_PORT/"
	local haproxy
	haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
	start haproxy env PG_PRIMARY_LISTEN=127.0.0.1:$PRIMARY_PORT HAPROXY_STATS=127.0.0.1:$STATS_PORT \
		PG_NODE1=127.0.0.1:$(pg_port 1) PG_NODE1_API_PORT=$(api_port 1) \
		PG_NODE2=127.0.0.1:$(pg_port 2) PG_NODE2_API_PORT=$(api_port 2) \
		PG_NODE3=127.0.0.1:$(pg_port 3) PG_NODE3_API_PORT=$(api_port 3) \
		"$haproxy" -W -db -f "$REPO/deploy/haproxy/postgres.cfg"
	wait_for "the primary through haproxy" 30 psql_primary -c 'SELECT 1'
	[ "$(psql_primary -c "SELECT count(*) FROM pg_database WHERE datname = 'callback'")" = 1 ] ||
		psql_primary -c 'CREATE DATABASE callback'
	say "up; the service's -db: $DB_URL"
	echo "$DB_URL"
}

# stop_pid NAME: SIGTERM the process in NAME.pid, SIGKILL it after 20 s.
stop_pid() {
	local file=$HA_DIR/$1.pid pid
	[ -e "$file" ] || return 0
	pid=$(cat "$file")
	if kill -TERM "$pid" 2>/dev/null; then
		for _ in $(seq 80); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$file"
}

down() {
	[ -d "$HA_DIR" ] || return 0
	stop_pid haproxy
	# Patroni stops its postgres on SIGTERM; a postmaster it left behind
	# (Patroni killed) is stopped by the PID in its own postmaster.pid.
	for i in "${NODES[@]}"; do
		stop_pid "node$i"
		local pm=$HA_DIR/node$i/data/postmaster.pid
		if [ -e "$pm" ]; then
			kill -QUIT "$(head -n 1 "$pm")" 2>/dev/null || true
		fi
	done
	stop_pid etcd
	rm -rf "$HA_DIR"
	say "down"
}

ctl() {
	[ -e "$HA_DIR/patroni.yml" ] || die "not up (scripts/ha.sh up)"
	# shellcheck disable=SC2046
	env $(node_env 1) patronictl -c "$HA_DIR/patroni.yml" "$@"
}

run() {
	up >/dev/null
	trap down EXIT
	DB_URL=$DB_URL DEV_DIR="$HA_DIR/dev" "$REPO/scripts/dev.sh"
}

case "${1:-}" in
up) up ;;
down) down ;;
url) echo "$DB_URL" ;;
ctl) shift; ctl "$@" ;;
run) run ;;
*) die "usage: scripts/ha.sh up|run|ctl ARGS|url|down" ;;
esac
