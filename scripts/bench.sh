#!/usr/bin/env bash
# Reproduces the figures of BENCHMARKS.md on this machine, in about 7 minutes:
# the Go benchmarks (decoder, handler, coalescer, writer against CopyFrom, the
# sweep over 1M stale rows) and the load scenarios of integrationtest/bench_test.go
# (intake against the three baselines, with our load tool and wrk, 4,000 new IDs/s, a capped upstream, 50 senders
# flat out). Charts go to docs/bench/, the raw output to $OUT (default /tmp/bench).
#
#   scripts/bench.sh
#
# Needs Go and PostgreSQL's server binaries, like the tests. Run it on an idle
# machine: the load tool, the service and PostgreSQL share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
OUT=${OUT:-/tmp/bench}
mkdir -p "$OUT"

# The intake rounds run Debian's wrk beside our own load tool: a load generator no one
# here wrote. Installed when missing and we are root; skipped with a message otherwise.
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	echo "--- installing wrk"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

echo "--- go benchmarks (-benchmem, 3 runs each)"
go test -run '^$' -bench 'Decode|Handler' -benchmem -benchtime 300ms -count 3 ./pkg/callback | tee "$OUT/callback.txt"
go test -run '^$' -bench 'Coalescer' -benchmem -count 3 ./pkg/ingest | tee "$OUT/ingest.txt"
go test -run '^$' -bench 'Upsert|CopyFrom' -benchmem -benchtime 1s -count 3 ./pkg/store | tee "$OUT/store.txt"
go test -run '^$' -bench 'Sweep' -benchtime 1x -count 1 ./pkg/store | tee -a "$OUT/store.txt"

echo "--- load scenarios"
go test -tags bench -run '^TestBench' -count 1 -v -timeout 15m ./integrationtest 2>&1 | tee "$OUT/scenarios.txt" | grep -E 'BENCH|^(---|ok|FAIL)'
echo "--- raw output in $OUT, charts in docs/bench/"
