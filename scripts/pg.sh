#!/usr/bin/env bash
# Throwaway PostgreSQL for tests: `scripts/pg.sh start DIR` prints a DSN,
# `scripts/pg.sh stop DIR` stops it. Installs PostgreSQL from Debian's
# packages if its server binaries are missing. Listens on 127.0.0.1 only.
set -euo pipefail

find_bin() {
  local name=$1
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  ls /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1
}

ensure_installed() {
  if [ -z "$(find_bin initdb)" ] || [ -z "$(find_bin pg_ctl)" ]; then
    echo "installing PostgreSQL from Debian's packages…" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq postgresql >&2
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# as_pg runs a command as an unprivileged user when we are root: PostgreSQL
# refuses to run as root.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    id machitest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin machitest
    runuser -u machitest -- "$@"
  else
    "$@"
  fi
}

cmd=${1:?usage: pg.sh start|stop DIR}
dir=${2:?usage: pg.sh start|stop DIR}
case "$cmd" in
start)
  ensure_installed
  initdb=$(find_bin initdb); pg_ctl=$(find_bin pg_ctl)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && { id machitest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin machitest; chown machitest "$dir"; }
  as_pg "$initdb" -A trust -U postgres -D "$dir/data" >/dev/null
  port=$(free_port)
  # Tests trade durability for speed; PG_DURABLE=1 (the bench) keeps
  # PostgreSQL's durable defaults.
  settings="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ -n "${PG_DURABLE:-}" ] && settings=""
  as_pg "$pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $settings -c max_connections=300" start >/dev/null
  echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  ;;
stop)
  pg_ctl=$(find_bin pg_ctl)
  [ -d "$dir/data" ] && as_pg "$pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: pg.sh start|stop DIR" >&2; exit 2 ;;
esac
