#!/usr/bin/env bash
# make interop: machi and Dendrite (an independent homeserver) in one
# joint committee, both ways (internal/e2e/interop_test.go). Dendrite
# v0.15.2 comes from the Go module proxy and is built in a temp folder;
# nothing of it is kept in this repository. When it cannot be had here,
# this says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/machi-interop.XXXXXX)
src=$(mktemp -d /tmp/machi-dendrite-src.XXXXXX)
trap 'rm -rf "$src"' EXIT

if ! json=$(go mod download -json github.com/element-hq/dendrite@v0.15.2 2>&1); then
  echo "interop: Dendrite v0.15.2 cannot be had from the module proxy here; the interop test is not run" >&2
  exit 0
fi
dir=$(printf '%s' "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$dir/." "$src"
chmod -R u+w "$src"
if ! (cd "$src" && export GOFLAGS=-mod=mod &&
      go build -o "$out/dendrite" ./cmd/dendrite &&
      go build -o "$out/generate-config" ./cmd/generate-config &&
      go build -o "$out/generate-keys" ./cmd/generate-keys) >&2; then
  echo "interop: Dendrite did not build here; the interop test is not run" >&2
  exit 0
fi
MACHI_DENDRITE="$out/dendrite" go test -count=1 -run '^TestDendriteInterop$' -v ./internal/e2e/
