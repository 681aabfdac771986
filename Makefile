# machi — see README.md.
.PHONY: build run test bench interop

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

# machi and Dendrite in one joint committee (builds Dendrite 0.15.2 from the
# module proxy in a temp folder; says so and passes when it cannot).
interop:
	scripts/interop.sh
