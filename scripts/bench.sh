#!/usr/bin/env bash
# Regenerates the figures of docs/benchmarks.md: the go test benchmarks of
# the hot paths, then machi-bench against a freshly started machi on SQLite
# and on PostgreSQL (a throwaway cluster, installed from Debian's packages
# if missing). Results go to docs/bench/ as JSON and text.
#
#   scripts/bench.sh            # everything
#   BENCH_ARGS="-duration 5s" scripts/bench.sh   # extra machi-bench flags
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/bench
mkdir -p "$out" bin
go build -o bin/machi ./cmd/machi
go build -o bin/machi-bench ./cmd/machi-bench

pgdir=$(mktemp -d /tmp/machi-pg.XXXXXX)
trap 'scripts/pg.sh stop "$pgdir"' EXIT
dsn=$(scripts/pg.sh start "$pgdir")

echo "== go test -bench (hot paths)" >&2
MACHI_TEST_POSTGRES_DSN=$dsn go test -run '^$' -bench . -benchtime 2s -count 1 ./rooms ./clientapi | tee "$out/gotest.txt"

echo "== machi-bench, SQLite" >&2
bin/machi-bench -spawn bin/machi -engine sqlite -json "$out/sqlite.json" ${BENCH_ARGS:-} | tee "$out/sqlite.txt"

echo "== machi-bench, PostgreSQL" >&2
# The cluster from pg.sh runs with fsync off for tests; the bench wants
# the durable defaults, so it gets its own settings.
scripts/pg.sh stop "$pgdir"
pgdir=$(mktemp -d /tmp/machi-pg.XXXXXX)
dsn=$(PG_DURABLE=1 scripts/pg.sh start "$pgdir")
bin/machi-bench -spawn bin/machi -engine postgres -postgres-dsn "$dsn" -json "$out/postgres.json" ${BENCH_ARGS:-} | tee "$out/postgres.txt"
