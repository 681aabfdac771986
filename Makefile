# machi — see README.md.
.PHONY: build run test bench

build:
	go build -o bin/machi ./cmd/machi
	go build -o bin/machi-bench ./cmd/machi-bench

run:
	go run ./cmd/machi serve

# Every test, on SQLite and PostgreSQL (installs what it needs).
test:
	scripts/test.sh

bench:
	scripts/bench.sh
