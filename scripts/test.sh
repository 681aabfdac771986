#!/usr/bin/env bash
# Runs every test, on a fresh Debian machine too: installs PostgreSQL, the
# JavaScript test client, matrix-nio and headless Chromium if missing, runs a throwaway PostgreSQL cluster on a
# free loopback port, then go vet and go test on SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

pgdir=$(mktemp -d /tmp/machi-pg.XXXXXX)
trap 'scripts/pg.sh stop "$pgdir"' EXIT
export MACHI_TEST_POSTGRES_DSN=$(scripts/pg.sh start "$pgdir")
export MACHI_REQUIRE_POSTGRES=1

# matrix-js-sdk for the JavaScript end-to-end test, pinned by the lockfile.
js=internal/e2e/js
if [ -f "$js/package-lock.json" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >&2
  fi
  if [ ! -d "$js/node_modules" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  export MACHI_REQUIRE_JS=1
fi

# matrix-nio for the Python end-to-end test, from Debian's packages, for
# Debian's own python3.
if ! /usr/bin/python3 -c "import nio" >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-matrix-nio >&2
fi
export MACHI_REQUIRE_NIO=1

# Headless Chromium for the sign-in page test.
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
fi
export MACHI_REQUIRE_CHROMIUM=1

# CI has the Matrix spec beside the checkout: there, every e2e answer must be
# checked against it (elsewhere the check runs when the spec is found).
[ -n "${CI:-}" ] && export MACHI_REQUIRE_SPEC=1

go vet ./...
go test -count=1 -timeout 30m ./...

# Interop with Dendrite (make interop), when it can be had here.
scripts/interop.sh
